"""Fuzz: a seeded storm of mutated SIP and LoST inputs against running ng911 elements.

The elements run as an operator runs them, each an `ng911 run` process with its own log
file (`bench/rig.py`): the VSP proxy, the ESRP with its LoST server, and psapd, wired as a
chain (VSP → ESRP → LoST → psapd), every SIP element listening on UDP, TCP and TLS.

Inputs are real messages (`ng911.sip.samples`: the 911 INVITE with its multipart SDP +
PIDF-LO body, and REGISTER, OPTIONS, ACK, BYE, CANCEL, a plain INVITE, a dialled 911, a 180
and a 200) given fresh Call-IDs, branches and tags, then mutated one to three times:

- byte level: bit flips, random bytes (NUL, 0xFF, CR, LF) inserted, bytes deleted, truncation;
- structure aware: a header duplicated, deleted, emptied or made huge (to 60 KB); bad
  Content-Length (negative, huge, non-numeric, off by some, twice); non-UTF-8 and overlong
  UTF-8 in headers, URIs and the multipart boundary; boundary games (non-latin-1, empty,
  quoted, missing, absent from the body, no closing delimiter, nested); CRLF injected into
  values, bare LF or CR line ends, obsolete line folding; compact header forms and random
  case; request-line games (methods, URI schemes, versions); 100 Vias, Vias without branch
  (RFC 2543); CSeq and Max-Forwards extremes; PIDF-LO XML broken, deep, with entities and a
  DOCTYPE; a head of one message spliced onto the body of another.

They go out as UDP datagrams (most), and as TCP and TLS streams: several mutants pipelined
on one connection, written in pieces split at random points, some connections cut in the
middle of a message (FIN or RST). The LoST server gets mutated HTTP findService requests on
TCP. The generator never waits for answers (it drains what comes back, unread).

Every input comes from its own `random.Random(seed, index)`, so a run is reproducible and
one input can be printed again (`--dump INDEX`); the SHA-256 of everything sent is in the
result. At the end: Python tracebacks (or "handler failed" lines) in every element's log and
stderr, processes that died, and whether each element still answers (OPTIONS over UDP, a
findService over HTTP). The run happens in a network namespace of its own when it can make
one (root): hostile inputs name arbitrary next hops, and nothing may leave the machine; where
it cannot, every IPv4 literal that is not loopback is rewritten to 127.0.0.1.

    .venv/bin/python bench/fuzz.py                # 1,000,000 inputs (a few minutes)
    .venv/bin/python bench/fuzz.py --quick        # 20,000 inputs
    .venv/bin/python bench/fuzz.py --dump 12345   # print input 12345 of the seed

Writes bench/results/fuzz.json (or --out). Exit status 1 when a traceback, a crash or a
silent element was found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import socket
import ssl
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rig import (
    BOROUGHS,
    BOUNDARIES,
    FIND_SERVICE,
    LOCAL,
    RESULTS,
    Element,
    free_port,
    in_private_netns,
    lost_probe,
    options_probe,
    reexec_in_netns,
    tracebacks,
    udp_drops,
)

UDP_MAX = 65507

# --------------------------------------------------------------------------- the corpus

_SDP = (
    "v=0\r\no=ua 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _fix_length(msg: str) -> str:
    """Content-Length of the (edited) body again: the sample's addresses were replaced."""
    head, _, body = msg.partition("\r\n\r\n")
    head = re.sub(r"Content-Length: \d+", f"Content-Length: {len(body.encode())}", head)
    return head + "\r\n\r\n" + body


def _templates() -> dict[str, str]:
    """Real messages with placeholders: {me} our sent-by, {dst} the element, {br} branch,
    {cid} Call-ID, {tag} From tag, {tt} To tag, {n} the input's index."""
    from ng911.sip.samples import emergency_invite, ok_with_sdp, ringing

    inv = emergency_invite().decode()
    inv = (
        inv.replace("192.0.2.10:5060", "{me}")
        .replace("192.0.2.10", "127.0.0.1")
        .replace("z9hG4bK776asdhds", "z9hG4bK{br}")
        .replace("a84b4c76e66710@127.0.0.1", "{cid}")
        .replace("tag=1928301774", "tag={tag}")
    )
    inv = _fix_length(inv)

    def resp(raw: bytes) -> str:
        t = raw.decode()
        t = re.sub(r"Via: SIP/2\.0/UDP vsp\.example\.net:5060;[^\r]*\r\n", "", t)
        t = t.replace("192.0.2.10:5060", "{me}").replace("192.0.2.10", "127.0.0.1")
        t = t.replace("z9hG4bK776asdhds", "z9hG4bK{br}").replace(
            "a84b4c76e66710@192.0.2.10", "{cid}"
        )
        t = t.replace("tag=1928301774", "tag={tag}").replace("tag=psap-a6c85cf", "tag={tt}")
        return _fix_length(t)

    common = (
        "Via: SIP/2.0/UDP {me};branch=z9hG4bK{br};rport\r\nMax-Forwards: 70\r\n"
        "From: <sip:alice@vsp.example>;tag={tag}\r\nCall-ID: {cid}\r\n"
    )
    sdp_len = len(_SDP.encode())
    return {
        "invite-911-pidf": inv,
        "invite-dialled-911": (
            "INVITE sip:911@vsp.example SIP/2.0\r\n" + common + "To: <sip:911@vsp.example>\r\n"
            "CSeq: 1 INVITE\r\nContact: <sip:alice@{me}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {sdp_len}\r\n\r\n{_SDP}"
        ),
        "invite-plain": (
            "INVITE sip:bob@vsp.example SIP/2.0\r\n" + common + "To: <sip:bob@vsp.example>\r\n"
            "CSeq: 1 INVITE\r\nContact: <sip:alice@{me}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {sdp_len}\r\n\r\n{_SDP}"
        ),
        "register": (
            "REGISTER sip:vsp.example SIP/2.0\r\n" + common + "To: <sip:alice@vsp.example>\r\n"
            "CSeq: 1 REGISTER\r\nContact: <sip:alice@{me}>;expires=60\r\nExpires: 60\r\n"
            "Content-Length: 0\r\n\r\n"
        ),
        "options": (
            "OPTIONS sip:{dst} SIP/2.0\r\n" + common + "To: <sip:{dst}>\r\nCSeq: 1 OPTIONS\r\n"
            "Accept: application/sdp\r\nContent-Length: 0\r\n\r\n"
        ),
        "ack": (
            "ACK sip:bob@{dst} SIP/2.0\r\n" + common + "To: <sip:bob@vsp.example>;tag={tt}\r\n"
            "Route: <sip:{dst};lr>\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        ),
        "ack-sos": (
            "ACK urn:service:sos SIP/2.0\r\n" + common + "To: <urn:service:sos>;tag={tt}\r\n"
            "CSeq: 314159 ACK\r\nContent-Length: 0\r\n\r\n"
        ),
        "bye": (
            "BYE sip:bob@{dst} SIP/2.0\r\n" + common + "To: <sip:bob@vsp.example>;tag={tt}\r\n"
            "Route: <sip:{dst};lr>\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        ),
        "cancel": (
            "CANCEL urn:service:sos SIP/2.0\r\n" + common + "To: <urn:service:sos>\r\n"
            "CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
        ),
        "180": resp(ringing()),
        "200": resp(ok_with_sdp()),
    }


TEMPLATES = _templates()
KINDS = sorted(TEMPLATES)
COMPACT = {
    b"via": b"v", b"from": b"f", b"to": b"t", b"call-id": b"i", b"contact": b"m",
    b"content-length": b"l", b"content-type": b"c", b"supported": b"k", b"subject": b"s",
    b"content-encoding": b"e", b"event": b"o", b"refer-to": b"r",
}  # fmt: skip
NASTY = [
    b"\x00", b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x98\x83", b"\r", b"\n",
    b"\r\n", b"\r\n\r\n", b"%00", b"%", b";", b",", b"<", b">", b'"', b"\\", b":", b"@", b" ",
    b"\t", b"=", b"\xf0\x9f\x9a\x91", b"\x80", b"sip:", b"urn:service:sos", b"--",
]  # fmt: skip
HUGE_NUMBERS = [
    b"-1", b"0", b"4294967296", b"99999999999999999999999999", b"-9223372036854775809",
    b"1e9", b"0x10", b"NaN", b"", b" 1", b"1 2", b"\xd9\xa3",
]  # fmt: skip


def _split(msg: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = msg.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body if sep else b""


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _header_idx(r: random.Random, lines: list[bytes]) -> int | None:
    return r.randrange(1, len(lines)) if len(lines) > 1 else None


# Each mutator: (random, message) -> message.


def m_bitflip(r: random.Random, m: bytes) -> bytes:
    b = bytearray(m)
    for _ in range(r.randint(1, 8)):
        if b:
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
    return bytes(b)


def m_insert(r: random.Random, m: bytes) -> bytes:
    for _ in range(r.randint(1, 4)):
        at = r.randrange(len(m) + 1)
        m = m[:at] + r.choice(NASTY) * r.choice((1, 1, 2, 7, 100)) + m[at:]
    return m


def m_delete(r: random.Random, m: bytes) -> bytes:
    if not m:
        return m
    at = r.randrange(len(m))
    return m[:at] + m[at + r.randint(1, 40) :]


def m_truncate(r: random.Random, m: bytes) -> bytes:
    return m[: r.randrange(len(m) + 1)]


def m_dup_header(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    i = _header_idx(r, lines)
    if i is not None:
        for _ in range(r.choice((1, 1, 2, 50))):
            lines.insert(r.randrange(1, len(lines) + 1), lines[i])
    return _join(lines, body)


def m_del_header(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    i = _header_idx(r, lines)
    if i is not None:
        del lines[i]
    return _join(lines, body)


def m_empty_value(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    i = _header_idx(r, lines)
    if i is not None:
        name = lines[i].split(b":", 1)[0]
        lines[i] = name + r.choice((b":", b": ", b":\t", b"", b" :", b"::"))
    return _join(lines, body)


def m_huge_value(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    i = _header_idx(r, lines)
    if i is not None:
        size = r.choice((300, 1024, 8192, 40000, 60000))
        unit = r.choice(
            (b"a", b"x;p=", b"<sip:a@b>,", b"\xff", b"%41", b" ", lines[i][-20:] or b"z")
        )
        lines[i] = lines[i] + (unit * (size // max(1, len(unit)) + 1))[:size]
    return _join(lines, body)


def m_content_length(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    lines = [ln for ln in lines if not ln.lower().startswith((b"content-length", b"l:"))]
    for _ in range(r.choice((1, 1, 1, 2))):
        value = r.choice(
            [
                *HUGE_NUMBERS,
                str(len(body) + r.randint(-50, 50)).encode(),
                str(len(body) * 2).encode(),
            ]
        )
        lines.append(r.choice((b"Content-Length: ", b"l: ", b"content-length:")) + value)
    return _join(lines, body)


def m_non_utf8(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    i = r.randrange(len(lines)) if lines else 0
    if lines:
        ln = lines[i]
        at = r.randrange(len(ln) + 1)
        lines[i] = (
            ln[:at]
            + r.choice(
                (
                    b"\xff\xfe",
                    b"\xc0\xaf",
                    b"\xe9",
                    b"\xed\xa0\x80",
                    b"\x80\x80",
                    b"\xf8\x88\x80\x80\x80",
                )
            )
            + ln[at:]
        )
    return _join(lines, body)


def m_boundary(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    new = r.choice(
        (b"b\xc3\xb6\xe2\x98\x83", b"\xff\xfe", b"", b'"quoted boundary"', b"a" * 80, b"--",
         b"x;boundary=y", b"boundary-ng911-1f2e3d", b"\xe2\x80\xae", b"\x00", b"b" * 5000)
    )  # fmt: skip
    how = r.randrange(6)
    for i, ln in enumerate(lines):
        if ln.lower().startswith((b"content-type", b"c:")):
            if how == 0:
                lines[i] = b"Content-Type: multipart/mixed;boundary=" + new
            elif how == 1:
                lines[i] = b"Content-Type: multipart/mixed"
            elif how == 2:
                lines[i] = b"Content-Type: multipart/mixed;boundary=" + new + b";boundary=other"
            elif how == 3:
                lines[i] = b"Content-Type: multipart/related;boundary=" + new
            elif how == 4:
                lines[i] = b'Content-Type: multipart/mixed;boundary="' + new + b'"'
            else:
                lines[i] = b"Content-Type: multipart/mixed;boundary=" + new
                body = body.replace(b"boundary-ng911-1f2e3d", new)
    if r.random() < 0.3:
        body = body.replace(b"--\r\n", b"\r\n")  # no closing delimiter
    if r.random() < 0.2:  # nested multipart
        body = body.replace(
            b"Content-Type: application/sdp",
            b"Content-Type: multipart/mixed;boundary=inner\r\n\r\n--inner\r\n"
            b"Content-Type: text/plain\r\n\r\nx\r\n--inner",
            1,
        )
    return _join(lines, body)


def m_crlf(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    i = _header_idx(r, lines)
    if i is not None:
        inj = r.choice(
            (
                b"\r\nVia: SIP/2.0/UDP 127.0.0.1:9",
                b"\r\n\r\n",
                b"\r\nX",
                b"\n",
                b"\r",
                b"\r\n ",
                b"\r\n:",
            )
        )
        at = r.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:at] + inj + lines[i][at:]
    return _join(lines, body)


def m_line_ends(r: random.Random, m: bytes) -> bytes:
    head, sep, body = m.partition(b"\r\n\r\n")
    end = r.choice((b"\n", b"\r", b"\n\r", b"\r\r\n"))
    return head.replace(b"\r\n", end) + (end + end if r.random() < 0.7 else sep) + body


def m_fold(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    i = _header_idx(r, lines)
    if i is not None and b" " in lines[i]:
        at = lines[i].index(b" ")
        lines[i] = (
            lines[i][:at] + r.choice((b"\r\n ", b"\r\n\t", b"\r\n  \r\n ")) + lines[i][at + 1 :]
        )
    return _join(lines, body)


def m_compact(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    for i in range(1, len(lines)):
        name, colon, rest = lines[i].partition(b":")
        c = COMPACT.get(name.strip().lower())
        if c and colon and r.random() < 0.6:
            lines[i] = (c.upper() if r.random() < 0.3 else c) + colon + rest
        elif colon and r.random() < 0.2:
            lines[i] = (
                bytes(
                    ch ^ 0x20 if 65 <= ch <= 122 and r.random() < 0.5 and chr(ch).isalpha() else ch
                    for ch in name
                )
                + colon
                + rest
            )
    return _join(lines, body)


def m_request_line(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    parts = lines[0].split(b" ")
    which = r.randrange(3)
    if which == 0:
        parts[0] = r.choice(
            (
                b"INVITE",
                b"invite",
                b"FOO",
                b"",
                b"SIP/2.0",
                b"I\xffNVITE",
                b"A" * 300,
                b"PRACK",
                b"UPDATE",
                b"INFO",
                b"MESSAGE",
                b"SUBSCRIBE",
                b"NOTIFY",
                b"REFER",
                b"PUBLISH",
            )
        )
    elif which == 1 and len(parts) > 1:
        parts[1] = r.choice(
            (
                b"urn:service:sos.fire",
                b"urn:service:sos.",
                b"urn:service:",
                b"urn:",
                b"tel:911",
                b"sips:911@vsp.example",
                b"sip:",
                b"sip:@",
                b"sip:a@b:99999",
                b"sip:a@[::1",
                b"sip:a@127.0.0.1;maddr=127.0.0.1;transport=sctp",
                b"http://x",
                b"*",
                b"<sip:a@b>",
                b"sip:a@b;lr;lr;lr",
                b"urn:service:sos" + b";x=" * 500,
                b"sip:%zz@vsp.example",
                b"sip:\xff@vsp.example",
            )
        )
    elif len(parts) > 2:
        parts[-1] = r.choice(
            (b"SIP/2.1", b"SIP/1.0", b"sip/2.0", b"SIP/2.0 extra", b"HTTP/1.1", b"", b"SIP/")
        )
    lines[0] = b" ".join(parts)
    return _join(lines, body)


def m_vias(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    vias = [i for i, ln in enumerate(lines) if ln.lower().startswith((b"via", b"v:"))]
    how = r.randrange(5)
    if how == 0 and vias:  # RFC 2543: no branch, or no magic cookie
        lines[vias[0]] = re.sub(
            rb";branch=[^;\r\n]*",
            r.choice((b"", b";branch=1", b";branch=", b";branch=z9hG4bK")),
            lines[vias[0]],
        )
    elif how == 1:  # a hundred Vias
        for k in range(100):
            lines.insert(1, b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%d" % (9000 + k, k))
    elif how == 2 and vias:
        lines[vias[0]] = r.choice(
            (
                b"Via: SIP/2.0/UDP",
                b"Via: SIP/2.0/XYZ 127.0.0.1:1",
                b"Via: SIP/2.0/TLS 127.0.0.1:0;rport=0",
                b"Via: SIP/2.0/UDP 127.0.0.1:70000;received=;rport=abc",
                b"Via: garbage",
                b"Via: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKx",
                b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKa, "
                b"SIP/2.0/UDP 127.0.0.1:10;branch=z9hG4bKb,",
            )
        )
    elif how == 3:
        lines = [ln for i, ln in enumerate(lines) if i not in vias]
    else:
        for i in vias:
            lines[i] += b';maddr=127.0.0.1;ttl=300;received=127.0.0.1;x="y"'
    return _join(lines, body)


def m_numbers(r: random.Random, m: bytes) -> bytes:
    lines, body = _split(m)
    for i, ln in enumerate(lines):
        low = ln.lower()
        if low.startswith(b"cseq") and r.random() < 0.6:
            lines[i] = (
                b"CSeq: "
                + r.choice(HUGE_NUMBERS)
                + b" "
                + r.choice((b"INVITE", b"ACK", b"BYE", b"", b"FOO", b"OPTIONS"))
            )
        elif low.startswith(b"max-forwards") and r.random() < 0.6:
            lines[i] = b"Max-Forwards: " + r.choice(HUGE_NUMBERS)
        elif low.startswith(b"expires") and r.random() < 0.6:
            lines[i] = b"Expires: " + r.choice(HUGE_NUMBERS)
    if lines[0].startswith(b"SIP/2.0") and r.random() < 0.5:
        lines[0] = (
            b"SIP/2.0 " + r.choice((b"999", b"099", b"1", b"abc", b"-200", b"200", b"")) + b" X"
        )
    return _join(lines, body)


def m_xml(r: random.Random, m: bytes) -> bytes:
    if b"<presence" not in m:
        return m_insert(r, m)
    how = r.randrange(6)
    if how == 0:
        m = m.replace(
            b"40.7580 -73.9855",
            r.choice(
                (
                    b"999 999",
                    b"NaN inf",
                    b"1e308 -1e308",
                    b"",
                    b"40.7580",
                    b"a b c",
                    b"40.7580 -73.9855 10 20",
                )
            ),
        )
    elif how == 1:
        m = m.replace(
            b'<?xml version="1.0" encoding="UTF-8"?>',
            b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
            b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
            b'<!ENTITY d SYSTEM "file:///etc/passwd">]>',
        )
        m = m.replace(b"<gp:method>GPS</gp:method>", b"<gp:method>&c;&d;</gp:method>")
    elif how == 2:
        m = m.replace(b"</presence>", b"")
    elif how == 3:
        m = m.replace(b"<gp:location-info>", b"<gp:location-info>" + b"<x>" * 2000, 1)
    elif how == 4:
        m = m.replace(b"urn:ietf:params:xml:ns:pidf", b"urn:wrong")
    else:
        m = m.replace(
            b"gml:Point",
            r.choice((b"gml:Polygon", b"gml:Circle", b"gml:LineString", b"gs:Ellipsoid")),
        )
    return m


def m_splice(r: random.Random, m: bytes) -> bytes:
    other = TEMPLATES[r.choice(KINDS)].encode()
    cut1, cut2 = r.randrange(len(m) + 1), r.randrange(len(other) + 1)
    return m[:cut1] + other[cut2:]


MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [
    m_bitflip, m_insert, m_delete, m_truncate, m_dup_header, m_del_header, m_empty_value,
    m_huge_value, m_content_length, m_non_utf8, m_boundary, m_crlf, m_line_ends, m_fold,
    m_compact, m_request_line, m_vias, m_numbers, m_xml, m_splice,
]  # fmt: skip

_IPV4 = re.compile(rb"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d])")


def loopback_only(data: bytes) -> bytes:
    """Without a namespace of our own: every IPv4 literal that is not 127/8 becomes
    127.0.0.1, and IPv6 literals lose their brackets (no element may be told to send
    anywhere but here)."""
    data = _IPV4.sub(lambda mo: mo.group(0) if mo.group(1) == b"127" else b"127.0.0.1", data)
    return data.replace(b"[", b"(")


# --------------------------------------------------------------------------- one input


@dataclass(frozen=True, slots=True)
class Input:
    index: int
    channel: str  # udp | tcp | tls | http
    element: str  # vsp | esrp | psap | lost
    kind: str  # the template (or "findService")
    mutators: tuple[str, ...]
    data: bytes
    session_len: int  # streams: messages on the connection this input opens
    cut: str  # streams: "" | "fin" | "rst" (cut the connection mid-message)


def make_input(seed: int, index: int, me: str, dst: dict[str, str], safe: bool) -> Input:
    r = random.Random(seed * 1_000_003 + index)
    x = r.random()
    channel = "udp" if x < 0.88 else "tcp" if x < 0.95 else "tls" if x < 0.98 else "http"
    if channel == "http":
        element, kind = "lost", "findService"
        base = _http_request(r)
    else:
        element = r.choice(("vsp", "vsp", "esrp", "psap"))
        kind = r.choice(KINDS)
        tmpl = TEMPLATES[kind]
        if channel != "udp":
            tmpl = tmpl.replace("SIP/2.0/UDP", "SIP/2.0/TCP" if channel == "tcp" else "SIP/2.0/TLS")
        base = tmpl.format(
            me=me,
            dst=dst[element],
            br=f"{r.getrandbits(48):x}",
            cid=f"fz{index}-{r.getrandbits(40):x}",
            tag=f"{r.getrandbits(32):x}",
            tt=f"{r.getrandbits(32):x}",
            n=index,
        ).encode()
    names: list[str] = []
    data = base
    if r.random() < 0.95:  # 5 % go out intact: the real paths run under the storm too
        for _ in range(r.choice((1, 1, 1, 2, 2, 3))):
            mut = r.choice(MUTATORS)
            names.append(mut.__name__[2:])
            data = mut(r, data)
    if not safe:
        data = loopback_only(data)
    session = r.choice((1, 2, 5, 10, 30)) if channel != "udp" else 0
    cut = "" if channel == "udp" or r.random() > 0.1 else r.choice(("fin", "rst"))
    return Input(index, channel, element, kind, tuple(names), data, session, cut)


def _http_request(r: random.Random) -> bytes:
    body = FIND_SERVICE.encode()
    if r.random() < 0.5:
        body = m_xml(r, body) if r.random() < 0.3 else r.choice(MUTATORS)(r, body)
    head = [b"POST /lost HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/lost+xml"]
    how = r.randrange(6)
    if how == 0:
        head.append(b"Content-Length: " + r.choice(HUGE_NUMBERS))
    elif how == 1:
        head.append(b"Transfer-Encoding: chunked")
        body = b"%x\r\n" % len(body) + body + b"\r\n" + r.choice((b"0\r\n\r\n", b"zz\r\n", b""))
    elif how == 2:
        head.append(b"X-Big: " + b"a" * r.choice((1000, 9000, 70000)))
        head.append(b"Content-Length: %d" % len(body))
    else:
        head.append(b"Content-Length: %d" % len(body))
    req = b"\r\n".join(head) + b"\r\n\r\n" + body
    if r.random() < 0.4:
        req = r.choice(MUTATORS)(r, req)
    return req


# --------------------------------------------------------------------------- the streams


class StreamSender:
    """Open connections to one element's TCP or TLS listener, pipelined inputs written in
    pieces split at random points; counts what could not be sent."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.sock: socket.socket | ssl.SSLSocket | None = None
        self.left = 0
        self.errors: Counter[str] = Counter()
        self.connections = 0

    def _open(self) -> None:
        s = socket.create_connection((self.host, self.port), timeout=3.0)
        if self.tls is not None:
            s = self.tls.wrap_socket(s, server_hostname=None)
        self.sock = s
        self.connections += 1

    def send(self, item: Input, r: random.Random) -> None:
        try:
            if self.sock is None:
                self._open()
                self.left = item.session_len
            assert self.sock is not None
            data = item.data
            cut_at = r.randrange(len(data) + 1) if item.cut else len(data)
            pos = 0
            while pos < cut_at:
                step = r.choice((1, 7, 64, 500, cut_at))
                self.sock.sendall(data[pos : min(cut_at, pos + step)])
                pos += step
            self._drain()
            self.left -= 1
            if item.cut or self.left <= 0:
                self.close(rst=item.cut == "rst")
        except (OSError, ssl.SSLError) as exc:
            self.errors[type(exc).__name__] += 1
            self.close(rst=True)

    def _drain(self) -> None:
        assert self.sock is not None
        self.sock.setblocking(False)
        try:
            while self.sock.recv(65536):
                pass
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLError, OSError):
            pass
        finally:
            self.sock.settimeout(3.0)

    def close(self, rst: bool = False) -> None:
        s, self.sock = self.sock, None
        if s is None:
            return
        try:
            if rst:
                s.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            s.close()
        except OSError:
            pass


# --------------------------------------------------------------------------- the run


def start_chain(workdir: Path) -> dict[str, Any]:
    """LoST, psapd, ESRP, VSP as `ng911 run` processes; UDP, TCP and TLS for the SIP ones."""
    from ng911.pki.testpki import build_test_pki

    pki = build_test_pki(workdir / "pki")
    ports = {n: {t: free_port() for t in ("udp", "tcp", "tls")} for n in ("vsp", "esrp", "psap")}

    def listeners(n: str) -> list[dict[str, Any]]:
        return [{"transport": t, "host": LOCAL, "port": p} for t, p in ports[n].items()]

    def tls(cert: str) -> dict[str, Any]:
        c = pki.cert(cert)
        return {
            "cert": str(c.chain_path),
            "key": str(c.key_path),
            "ca": [str(p) for p in pki.ca_files()],
        }

    lport = free_port()
    psap_uri = f"sip:{LOCAL}:{ports['psap']['udp']}"
    els: dict[str, Element] = {}
    els["lost"] = Element(
        "lost", "lost",
        {"host": LOCAL, "port": lport, "boundaries": str(BOUNDARIES),
         "uris": {b: [psap_uri] for b in BOROUGHS}},
        workdir,
    )  # fmt: skip
    els["lost"].start()
    lost_url = els["lost"].ready["url"]
    els["psap"] = Element(
        "psap", "psap", {"listeners": listeners("psap"), "tls": tls("psap"), "t1": 0.5}, workdir
    )
    els["esrp"] = Element(
        "esrp", "esrp",
        {"listeners": listeners("esrp"), "tls": tls("esrp"), "lost_url": lost_url,
         "default_route": psap_uri},
        workdir,
    )  # fmt: skip
    els["vsp"] = Element(
        "vsp", "vsp",
        {
            "listeners": listeners("vsp"),
            "tls": tls("vsp-proxy"),
            "esrp": f"sip:{LOCAL}:{ports['esrp']['udp']}",
        },
        workdir,
    )  # fmt: skip
    for n in ("psap", "esrp", "vsp"):
        els[n].start()
    client = pki.client_context("ua")
    client.check_hostname = False
    return {"elements": els, "ports": ports, "lost_url": lost_url, "tls_client": client}


def run(args: argparse.Namespace) -> dict[str, Any]:
    safe = in_private_netns()
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ng911-fuzz-") as tmp:
        workdir = Path(tmp)
        chain = start_chain(workdir)
        els: dict[str, Element] = chain["elements"]
        ports: dict[str, dict[str, int]] = chain["ports"]
        try:
            result = _storm(args, chain, safe)
            # settle: every element must answer again (a flood may leave a backlog)
            answered: dict[str, Any] = {}
            deadline = time.monotonic() + args.settle
            for n in ("vsp", "esrp", "psap"):
                code = None
                while code is None and time.monotonic() < deadline and els[n].alive():
                    code = options_probe(ports[n]["udp"], timeout=2.0)
                answered[n] = code
            code = None
            while code is None and time.monotonic() < deadline and els["lost"].alive():
                code = lost_probe(chain["lost_url"])
                if code is None:
                    time.sleep(0.5)
            answered["lost"] = code
            result["answered_after"] = answered
            result["rss_mb_after"] = {n: e.rss_mb() for n, e in els.items()}
            result["cpu_s"] = {n: round(e.cpu_seconds(), 1) for n, e in els.items()}
            result["udp_drops"] = {n: udp_drops(ports[n]["udp"]) for n in ports}
            alive = {n: e.alive() for n, e in els.items()}
        finally:
            exits = {n: e.stop() for n, e in els.items()}
        files = [p for e in els.values() for p in (e.stderr_path, e.log_path)]
        count, kinds, samples = tracebacks(files)
        result["log_bytes"] = {p.name: p.stat().st_size for p in files if p.exists()}
        if args.keep_logs:
            keep = Path(args.keep_logs)
            keep.mkdir(parents=True, exist_ok=True)
            for p in files:
                if p.exists():  # logs of a long run are large: their last 4 MB
                    with p.open("rb") as fh:
                        fh.seek(max(0, p.stat().st_size - (4 << 20)))
                        (keep / p.name).write_bytes(fh.read())
    crashed = [n for n, ok in alive.items() if not ok]
    result.update(
        {
            "tracebacks": count,
            "traceback_kinds": kinds,
            "traceback_samples": samples,
            "crashed": crashed,
            "exit_codes": exits,
            "silent_after": [n for n, c in result["answered_after"].items() if c is None],
            "private_netns": safe,
            "elapsed_s": round(time.monotonic() - t_start, 1),
        }
    )
    result["ok"] = not count and not crashed and not result["silent_after"]
    return result


def _storm(args: argparse.Namespace, chain: dict[str, Any], safe: bool) -> dict[str, Any]:
    ports: dict[str, dict[str, int]] = chain["ports"]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((LOCAL, 0))
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    udp.setblocking(False)
    me = f"{LOCAL}:{udp.getsockname()[1]}"
    dst = {n: f"{LOCAL}:{p['udp']}" for n, p in ports.items()}
    dst["lost"] = chain["lost_url"]
    lhost, _, lport = chain["lost_url"].split("://", 1)[1].partition("/")[0].rpartition(":")
    senders: dict[tuple[str, str], StreamSender] = {}
    for n, p in ports.items():
        senders[("tcp", n)] = StreamSender(LOCAL, p["tcp"], None)
        senders[("tls", n)] = StreamSender(LOCAL, p["tls"], chain["tls_client"])
    senders[("http", "lost")] = StreamSender(lhost, int(lport), None)
    digest = hashlib.sha256()
    per_channel: Counter[str] = Counter()
    per_element: Counter[str] = Counter()
    per_kind: Counter[str] = Counter()
    per_mutator: Counter[str] = Counter()
    send_errors: Counter[str] = Counter()
    sent_bytes = 0
    t0 = time.monotonic()
    next_report = t0 + 10
    t_next, cur_rate, last_drops = t0, args.rate, 0
    for i in range(args.count):
        item = make_input(args.seed, i, me, dst, safe)
        digest.update(item.data)
        per_channel[item.channel] += 1
        per_element[item.element] += 1
        per_kind[item.kind] += 1
        per_mutator.update(item.mutators)
        sent_bytes += len(item.data)
        if item.channel == "udp":
            try:
                udp.sendto(item.data[:UDP_MAX], (LOCAL, ports[item.element]["udp"]))
            except BlockingIOError:
                time.sleep(0.001)
                send_errors["udp-wouldblock"] += 1
            except OSError as exc:
                send_errors[f"udp-{type(exc).__name__}"] += 1
        else:
            senders[(item.channel, item.element)].send(item, random.Random(i))
        if i % 256 == 255:
            try:
                while udp.recv(65536):
                    pass
            except OSError:
                pass
            # pace: the elements' kernel drops steer the rate (a datagram dropped before
            # any parser saw it tests nothing), between --min-rate and --rate
            drops = sum(udp_drops(p["udp"]) for p in ports.values())
            if drops > last_drops:
                cur_rate = max(args.min_rate, cur_rate * 0.8)
            else:
                cur_rate = min(args.rate, cur_rate * 1.05)
            last_drops = drops
            t_next += 256 / cur_rate
            now = time.monotonic()
            if t_next > now:
                time.sleep(t_next - now)
            else:
                t_next = now
            if now >= next_report and not args.silent:
                print(
                    f"  {i + 1:>9} inputs, {(i + 1) / (now - t0):,.0f}/s, "
                    f"pace {cur_rate:,.0f}/s, UDP drops {drops:,}",
                    flush=True,
                )
                next_report = now + 10
    for s in senders.values():
        s.close()
        send_errors.update({f"{(s.tls and 'tls') or 'stream'}-{k}": v for k, v in s.errors.items()})
    elapsed = time.monotonic() - t0
    udp.close()
    return {
        "bench": "fuzz",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seed": args.seed,
        "inputs": args.count,
        "sha256_of_inputs": digest.hexdigest(),
        "bytes_sent": sent_bytes,
        "storm_s": round(elapsed, 1),
        "inputs_per_s": round(args.count / max(elapsed, 1e-9)),
        "pace_at_end_per_s": round(cur_rate),
        "per_channel": dict(per_channel),
        "per_element": dict(per_element),
        "per_kind": dict(sorted(per_kind.items())),
        "per_mutator": dict(sorted(per_mutator.items())),
        "connections": {f"{c}:{n}": s.connections for (c, n), s in senders.items()},
        "send_errors": dict(send_errors),
        "elements": ["vsp", "esrp", "psap", "lost"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--count", type=int, help="inputs to send (default 1,000,000; quick 20,000)")
    ap.add_argument("--seed", type=int, default=911)
    ap.add_argument("--quick", action="store_true", help="20,000 inputs")
    ap.add_argument("--rate", type=float, default=8000.0, help="inputs per second at most")
    ap.add_argument(
        "--min-rate", type=float, default=1500.0, help="slowest pace when the elements drop"
    )
    ap.add_argument("--settle", type=float, default=60.0, help="s to wait for answers after")
    ap.add_argument("--out", type=Path, help="JSON result (default bench/results/fuzz.json)")
    ap.add_argument("--keep-logs", help="copy the elements' logs and stderr to this folder")
    ap.add_argument("--dump", type=int, help="print input INDEX of the seed and exit")
    ap.add_argument("--silent", action="store_true", help="no progress lines")
    ap.add_argument("--no-netns", action="store_true", help="do not make a network namespace")
    args = ap.parse_args(argv)
    if args.count is None:
        args.count = 20_000 if args.quick else 1_000_000
    if args.dump is not None:
        item = make_input(
            args.seed,
            args.dump,
            "127.0.0.1:5999",
            {n: "127.0.0.1:5060" for n in ("vsp", "esrp", "psap", "lost")},
            True,
        )
        print(
            f"# input {item.index}: {item.channel} → {item.element}, {item.kind}, {item.mutators}"
        )
        sys.stdout.buffer.write(item.data)
        return 0
    if not args.no_netns and not in_private_netns():
        rc = reexec_in_netns(
            [
                str(Path(__file__).resolve()),
                *(argv if argv is not None else sys.argv[1:]),
                "--no-netns",
            ]
        )
        if rc is not None:
            return rc
        print(
            "fuzz: no network namespace here (not root?): non-loopback addresses rewritten",
            file=sys.stderr,
        )
    if not args.silent:
        print(f"fuzz: {args.count:,} inputs, seed {args.seed}, up to {args.rate:,.0f}/s")
    result = run(args)
    out = args.out or RESULTS / "fuzz.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result)
    print(f"\nwrote {out}")
    return 0 if result["ok"] else 1


def print_summary(r: dict[str, Any]) -> None:
    print()
    print(
        f"inputs {r['inputs']:,} (seed {r['seed']}, sha256 {r['sha256_of_inputs'][:16]}…) "
        f"in {r['storm_s']} s = {r['inputs_per_s']:,}/s"
    )
    print("  by channel: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["per_channel"].items())))
    print("  by element: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["per_element"].items())))
    print(f"  kernel UDP drops at the elements: {r['udp_drops']}")
    print(f"  send errors: {r['send_errors'] or 'none'}")
    print(f"  RSS after (MB): {r['rss_mb_after']}; CPU (s): {r['cpu_s']}")
    print(
        f"tracebacks {r['tracebacks']}, crashed {r['crashed'] or 'none'}, "
        f"answering after: {r['answered_after']}"
    )
    for k, v in r["traceback_kinds"].items():
        print(f"  {v:>6} × {k}")
    for s in r["traceback_samples"]:
        print("---\n" + s)
    print("OK" if r["ok"] else "FOUND PROBLEMS")


if __name__ == "__main__":
    sys.exit(main())
