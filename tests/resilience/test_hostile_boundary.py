"""Issue 11 item 7: hostile multipart boundaries and a mutation storm at the ESRP.

Before the fix a non-latin-1 boundary (`boundary=€`) reached `boundary.encode("latin-1")`
in `routing._insert_part` through `add_default_location`: a UnicodeEncodeError, a traceback
in the ESRP, and the call ended by the fallback path. Now a boundary RFC 2046 §5.1.1 does not
allow is treated as a garbled body: the ESRP wraps it, whole, after its own default
location, and routes the call by the default route.

The storm: a seeded, bounded loop mutates a real emergency INVITE (`ng911.sip.samples`):
headers, boundary, Content-Type parameters, PIDF-LO bytes, Geolocation, and feeds each
mutant to the ESRP's pure routing functions (only typed `Ng911Error`s may escape) and, a
share of them, to a running ESRP over UDP (no traceback logged, OPTIONS still answered).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
from dialog_helpers import RawUa, options, response_to

from ng911.elements.config import EsrpConfig, HostEntry, ListenerConfig
from ng911.elements.emergency import fix_resource_priority
from ng911.elements.identifiers import add_missing_ids
from ng911.elements.routing import (
    CallLocation,
    LocationProblem,
    add_default_location,
    extract_location,
)
from ng911.errors import Ng911Error
from ng911.node.build import build_element
from ng911.sip.message import Request
from ng911.sip.parse import parse_message
from ng911.sip.samples import BOUNDARY, LOCATION_CID, PIDF, SDP

FQDN = "esrp.esinet.example"
LAT, LON = 40.7128, -74.0060

HOSTILE_BOUNDARIES = [
    "€uro-boundary",  # not latin-1: the traceback of the issue
    "граница",
    "😀" * 5,
    "bøundary",  # latin-1 but not ASCII
    "a" * 71,  # longer than RFC 2046 allows
    "x" * 500,
    "with space ",
    "semi;colon",
    "tab\there",
    '"half-quoted',
    "=",
    "--",
    "\x01ctl",
    "\u200bzero-width",
    "\ud7ff\ue000",
]


def build(
    *,
    boundary: str = BOUNDARY,
    body_boundary: str | None = None,
    ctype: str | None = None,
    pidf: bytes | None = None,
    geo: str | None = f"<cid:{LOCATION_CID}>",
    extra: list[tuple[str, str]] | None = None,
    drop: frozenset[str] = frozenset(),
    body: bytes | None = None,
) -> bytes:
    """An emergency INVITE as the VSP forwards it to the ESRP, with the given parts."""
    bb = body_boundary if body_boundary is not None else boundary
    pidf_bytes = pidf if pidf is not None else PIDF.encode()
    if body is None:
        body = (
            (
                f"--{bb}\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n"
                f"--{bb}\r\nContent-Type: application/pidf+xml\r\nContent-ID: <{LOCATION_CID}>\r\n"
                "\r\n"
            ).encode()
            + pidf_bytes
            + f"\r\n--{bb}--\r\n".encode()
        )
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKvspstorm;rport"),
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"),
        ("Max-Forwards", "69"),
        ("Record-Route", "<sip:proxy.vsp.example:5070;lr>"),
        ("From", '"Caller" <sip:+12125550123@vsp.example.net>;tag=1928301774'),
        ("To", "<urn:service:sos>"),
        ("Call-ID", "storm@192.0.2.10"),
        ("CSeq", "314159 INVITE"),
        ("Contact", "<sip:+12125550123@192.0.2.10:5060>"),
        ("Geolocation", geo),
        ("Geolocation-Routing", "yes"),
        ("Resource-Priority", "esnet.1"),
        ("Content-Type", ctype if ctype is not None else f"multipart/mixed;boundary={boundary}"),
    ]
    headers = [(n, v) for n, v in headers if v is not None and n not in drop]
    headers.extend(extra or [])
    head = "INVITE urn:service:sos SIP/2.0\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in headers)
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def route_pure(req: Request) -> str:
    """What the ESRP does to a call before LoST, on a copy; returns the location outcome.

    Raises only `Ng911Error`s (the property the storm checks)."""
    work = req.copy()
    where = extract_location(work)
    add_missing_ids(work, FQDN)
    rp, note = fix_resource_priority(work.headers.get_all("Resource-Priority"))
    if note is not None:
        work.headers.set("Resource-Priority", rp)
    if isinstance(where, LocationProblem):
        cid = add_default_location(work, LAT, LON, FQDN)
        # the call must now carry a usable location: ours, found first
        again = extract_location(work)
        assert isinstance(again, CallLocation), (again, cid)
        assert again.source == cid
        outcome = "default"
    else:
        outcome = "location"
    # the forwarded request serialises and parses back
    back = parse_message(work.to_bytes())
    assert isinstance(back, Request)
    return outcome


@pytest.mark.parametrize("boundary", HOSTILE_BOUNDARIES)
def test_hostile_boundary_gets_the_default_location(boundary: str) -> None:
    try:
        req = parse_message(build(boundary=boundary))
    except Ng911Error:
        return  # refused by the parser (400): nothing for the ESRP to route
    assert isinstance(req, Request)
    # the location by value is unreadable through such a boundary, or read as sent: both fine
    route_pure(req)
    # the same with no Geolocation: the default location must be added, never a traceback
    req2 = parse_message(build(boundary=boundary, geo=None))
    assert isinstance(req2, Request)
    assert route_pure(req2) == "default"


def test_non_latin1_boundary_keeps_the_original_body() -> None:
    req = parse_message(build(boundary="€uro", geo=None))
    assert isinstance(req, Request)
    original = req.body
    add_default_location(req, LAT, LON, FQDN)
    ctype = req.headers.get("Content-Type") or ""
    assert ctype.startswith("multipart/mixed;boundary=ng911-")
    assert original in req.body  # kept byte for byte, as a part after ours
    assert req.body.index(b"application/pidf+xml") < req.body.index(original)


# ------------------------------------------------------------------------------ the storm

JUNK = [
    "",
    " ",
    "<",
    ">",
    '"',
    ";",
    ",",
    "=",
    "\\",
    "€",
    "Ω",
    "😀",
    "\x00",
    "\x7f",
    "%00",
    "<cid:",
    "cid:",
    "<>",
    "<<>>",
    "sip:",
    "urn:",
    "a" * 300,
]


def _junk(rng: random.Random, n: int = 3) -> str:
    return "".join(rng.choice(JUNK) for _ in range(rng.randint(1, n)))


def _flip(rng: random.Random, data: bytes, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        op = rng.randrange(4)
        if not b:
            b.extend(rng.randbytes(4))
            continue
        i = rng.randrange(len(b))
        if op == 0:
            b[i] = rng.randrange(256)
        elif op == 1:
            del b[i : i + rng.randint(1, 40)]
        elif op == 2:
            b[i:i] = rng.randbytes(rng.randint(1, 20))
        else:
            b[i:i] = rng.choice([b"<", b"&", b"]]>", b"\xff\xfe", b"&lt;", b"<!--", b"\r\n--"])
    return bytes(b)


PIDF_VARIANTS = [
    lambda p: p.replace(b"40.7580 -73.9855", b"NaN inf"),
    lambda p: p.replace(b"40.7580 -73.9855", b"1e999 -1e999"),
    lambda p: p.replace(b"40.7580 -73.9855", b"95.0 -200.0"),
    lambda p: p.replace(b"40.7580 -73.9855", b"40.7580"),
    lambda p: p.replace(b"40.7580 -73.9855", b"4" * 5000),
    lambda p: p.replace(b"EPSG::4326", b"EPSG::9999"),
    lambda p: p.replace(b"gml:Point", b"gml:Polygon"),
    lambda p: b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
    lambda p: b"<a>" * 2000 + b"</a>" * 2000,
    lambda p: p[: len(p) // 2],
    lambda p: b"",
    lambda p: p.decode().encode("utf-16"),
]


def mutant(rng: random.Random) -> bytes:
    """One mutated emergency INVITE (1 to 3 mutations of different kinds)."""
    kw: dict[str, object] = {}
    extra: list[tuple[str, str]] = []
    drop: set[str] = set()
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(9)
        if kind == 0:  # boundary
            b = rng.choice([*HOSTILE_BOUNDARIES, BOUNDARY + _junk(rng), _junk(rng)])
            kw["boundary"] = b
            if rng.random() < 0.3:
                kw["body_boundary"] = rng.choice([BOUNDARY, _junk(rng)])
        elif kind == 1:  # Content-Type and its parameters
            b = kw.get("boundary", BOUNDARY)
            kw["ctype"] = rng.choice(
                [
                    f'multipart/mixed; boundary="{b}"; boundary=other',
                    f"multipart/mixed;boundary={b};charset={_junk(rng)}",
                    f"multipart/related;boundary={b}",
                    f"multipart/alternative;boundary={b}",
                    "multipart/mixed",
                    "multipart/mixed;boundary=",
                    f"multipart/mixed;{_junk(rng)}",
                    f"MULTIPART/MIXED;BOUNDARY={b}",
                    "application/pidf+xml",
                    "application/sdp",
                    _junk(rng),
                    f"multipart/mixed;boundary={b};{_junk(rng)}={_junk(rng)}",
                ]
            )
        elif kind == 2:  # PIDF-LO bytes
            p = PIDF.encode()
            p = rng.choice(PIDF_VARIANTS)(p) if rng.random() < 0.4 else _flip(rng, p, 6)
            kw["pidf"] = p
        elif kind == 3:  # Geolocation
            kw["geo"] = rng.choice(
                [
                    None,
                    "",
                    f"cid:{LOCATION_CID}",
                    f"<cid:{LOCATION_CID}",
                    f"<cid:{LOCATION_CID}>, <cid:{LOCATION_CID}>",
                    "<cid:nowhere@x>",
                    "<http://example.com/loc>",
                    f"<cid:{_junk(rng)}>",
                    _junk(rng),
                    ", ".join(f"<cid:{i}@x>" for i in range(50)),
                    f'<cid:{LOCATION_CID}>;inserted-by="{_junk(rng)}"',
                ]
            )
        elif kind == 4:  # a header dropped
            drop.add(rng.choice(["Content-Type", "Geolocation", "Resource-Priority", "Contact"]))
        elif kind == 5:  # headers the ESRP reads, with hostile values
            name = rng.choice(["Call-Info", "Resource-Priority", "Geolocation", "Content-ID"])
            value = rng.choice(
                [
                    _junk(rng),
                    f"<urn:emergency:uid:callid:{_junk(rng)}:x>;purpose=emergency-CallId",
                    f"esnet.{_junk(rng)}",
                    f"<{_junk(rng)}>;purpose={_junk(rng)}",
                ]
            )
            extra.append((name, value))
        elif kind == 6:  # the whole body flipped
            kw["body"] = _flip(rng, build().split(b"\r\n\r\n", 1)[1], rng.randint(1, 12))
        elif kind == 7:  # nested multipart
            depth = rng.randint(1, 12)
            inner = build().split(b"\r\n\r\n", 1)[1]
            ctype = f"multipart/mixed;boundary={BOUNDARY}"
            for d in range(depth):
                bd = f"n{d}"
                inner = (
                    f"--{bd}\r\nContent-Type: {ctype}\r\n\r\n".encode()
                    + inner
                    + f"\r\n--{bd}--\r\n".encode()
                )
                ctype = f"multipart/mixed;boundary={bd}"
            kw["body"], kw["ctype"] = inner, ctype
        else:  # part headers: Content-ID / Content-Type of the PIDF part mangled
            body = build().split(b"\r\n\r\n", 1)[1]
            body = body.replace(
                f"Content-ID: <{LOCATION_CID}>".encode(),
                rng.choice([b"Content-ID: <>", b"Content-ID", b"Content-ID: \xff\xfe", b"X: y"]),
            )
            kw["body"] = body
    return build(extra=extra, drop=frozenset(drop), **kw)  # type: ignore[arg-type]


STORM = 2_000
SEED = 11_0007


def test_mutation_storm_pure_functions() -> None:
    rng = random.Random(SEED)
    t0 = time.perf_counter()
    counts = {"refused": 0, "default": 0, "location": 0}
    for i in range(STORM):
        raw = mutant(rng)
        try:
            req = parse_message(raw)
        except Ng911Error:
            counts["refused"] += 1
            continue
        assert isinstance(req, Request)
        try:
            counts[route_pure(req)] += 1
        except Ng911Error:
            counts["refused"] += 1
        except Exception as exc:  # pragma: no cover - the failure message
            raise AssertionError(f"mutant {i} (seed {SEED}): {exc!r}\n{raw[:2000]!r}") from exc
    assert counts["default"] > 100 and counts["location"] > 50, counts
    assert time.perf_counter() - t0 < 60  # bounded (typically a few seconds)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.bad.append(record)


async def test_mutation_storm_running_esrp() -> None:
    """Mutants over UDP into a running ESRP (LoST and the default PSAP down, so every call
    ends by itself): no traceback logged, and OPTIONS still answered."""
    sink = await RawUa().open()  # the "PSAP": reads and never answers
    capture = _Capture()
    logger = logging.getLogger("ng911")
    logger.addHandler(capture)
    esrp = build_element(
        "esrp",
        EsrpConfig(
            name="esrp",
            fqdn=FQDN,
            listeners=(ListenerConfig("udp", "127.0.0.1", 0),),
            hosts=(HostEntry(FQDN, "127.0.0.1"),),
            t1=0.5,
            lost_url="http://127.0.0.1:9/lost",  # discard port: nothing listens
            lost_timeout=0.5,
            default_route=f"sip:default.psap.example@127.0.0.1:{sink.port}",
            failover_timeout=0.5,
        ),
        log_keep=100,
    )
    await esrp.start()
    ua = await RawUa().open()
    try:
        addr = esrp.local("udp")
        dest = (addr.host, addr.port)
        rng = random.Random(SEED + 1)
        for i in range(400):
            raw = mutant(rng)
            # a Call-ID and Via of its own per mutant, so each is a new transaction
            raw = raw.replace(b"storm@192.0.2.10", f"storm-{i}@192.0.2.10".encode())
            raw = raw.replace(b"z9hG4bKvspstorm", f"z9hG4bKvspstorm{i}".encode())
            raw = raw.replace(b"127.0.0.1:5070", f"127.0.0.1:{ua.port}".encode())
            ua.send(raw, dest)
            if i % 20 == 19:
                await asyncio.sleep(0.05)  # paced: a storm, not a flood
        await asyncio.sleep(1.0)
        ua.send(options(ua.port, f"sip:{FQDN}:{addr.port}"), dest)
        ok = await ua.expect(response_to("OPTIONS"), 10)
        assert ok.status == 200
        assert esrp.errors == 0
        assert not capture.bad, [r.getMessage()[:300] for r in capture.bad[:3]]
        routed = esrp.routed["default"] + esrp.routed["lost"]
        assert routed > 50, esrp.routed
    finally:
        logger.removeHandler(capture)
        ua.close()
        sink.close()
        await esrp.close()
