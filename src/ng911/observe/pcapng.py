"""pcapng blocks: what a capture needs so Wireshark opens it with no extra steps.

The PCAP Next Generation format (draft-ietf-opsawg-pcapng; the pcapng/pcapng repository)
is a sequence of blocks, each `type, total length, body (padded to 32 bits), total length`.
A capture written here has, in this order:

- a Section Header Block (0x0A0D0D0A, byte-order magic 0x1A2B3C4D, version 1.0, §4.1);
- one Interface Description Block (1) with its link type and `if_tsresol` = 6 (µs, §4.2);
- a Name Resolution Block (4) mapping each element's address to its name (`nrb_record_ipv4`
  = 1, §4.5), so Wireshark shows `vsp`, `esrp` instead of 10.0.R.N;
- a Decryption Secrets Block (0x0000000A, §4.7) holding the run's TLS key log (secrets type
  0x544C534B, "TLSK", the NSS SSLKEYLOGFILE text), so TLS hops decrypt without
  `-o tls.keylog_file:`; both come before the first packet, so one pass reads them in time;
- Enhanced Packet Blocks (6), one per frame (§4.3).

Why written here and not with a library (decided in docs/architecture.md, "Captures"):
python-pcapng has had no release since 2022 and writes no DSB; scapy is maintained but its
pcapng writer emits SHB/IDB/EPB only (it reads DSB, writes neither DSB nor NRB) and is
GPL-2.0-only, which an Apache-2.0 project cannot take as a dependency. The blocks are a few
`struct.pack`s, tested against tshark.

The capture carries the session keys: whoever has the file can read the TLS hops. That is the
point in a test lab and must never be done with production traffic.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator, Mapping

SHB = 0x0A0D0D0A
IDB = 0x00000001
NRB = 0x00000004
EPB = 0x00000006
DSB = 0x0000000A
BYTE_ORDER_MAGIC = 0x1A2B3C4D
NRB_END, NRB_IPV4, NRB_IPV6 = 0, 1, 2
SECRETS_TLS_KEYLOG = 0x544C534B  # "TLSK"
OPT_END, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_TSRESOL = 2, 9


def _pad(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def block(btype: int, body: bytes) -> bytes:
    """One block: type, total length, the body padded to 32 bits, total length again."""
    body = _pad(body)
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def options(*opts: tuple[int, bytes]) -> bytes:
    """An option list (code, length, value padded to 32 bits), ended by opt_endofopt."""
    if not opts:
        return b""
    out = b"".join(struct.pack("<HH", code, len(v)) + _pad(v) for code, v in opts)
    return out + struct.pack("<HH", OPT_END, 0)


def section_header(application: str = "ng911") -> bytes:
    """SHB, version 1.0, section length unknown (-1)."""
    body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
    return block(SHB, body + options((SHB_USERAPPL, application.encode())))


def interface_description(linktype: int, snaplen: int, name: str) -> bytes:
    """IDB: the link type of every packet that follows; timestamps in microseconds."""
    body = struct.pack("<HHI", linktype, 0, snaplen)
    return block(IDB, body + options((IF_NAME, name.encode()), (IF_TSRESOL, bytes([6]))))


def enhanced_packet(ts: float, frame: bytes, snaplen: int, interface: int = 0) -> bytes:
    """EPB: a frame (cut at `snaplen`) and its timestamp in microseconds since the epoch."""
    usec = round(ts * 1_000_000)
    caplen = min(len(frame), snaplen)
    hdr = struct.pack("<IIIII", interface, usec >> 32, usec & 0xFFFFFFFF, caplen, len(frame))
    return block(EPB, hdr + _pad(frame[:caplen]))


def name_resolution(names: Mapping[str, str]) -> bytes:
    """NRB: one record per address → name (IPv4 record 1, IPv6 record 2), then nrb_record_end.

    Raises ValueError on what is not an IP address (a caller's bug, not input)."""
    records = b""
    for addr, name in sorted(names.items()):
        ip = ipaddress.ip_address(addr)
        rtype = NRB_IPV4 if ip.version == 4 else NRB_IPV6
        value = ip.packed + name.encode() + b"\x00"
        records += struct.pack("<HH", rtype, len(value)) + _pad(value)
    return block(NRB, records + struct.pack("<HH", NRB_END, 0))


def decryption_secrets(keylog: bytes) -> bytes:
    """DSB with a TLS key log (NSS format) as its secrets."""
    return block(DSB, struct.pack("<II", SECRETS_TLS_KEYLOG, len(keylog)) + _pad(keylog))


# -- reading back (tests, conversion of real captures) -----------------------------------


def blocks(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each block of a little-endian pcapng; ValueError on a torn file."""
    if len(data) < 12 or struct.unpack("<I", data[:4])[0] != SHB:
        raise ValueError("not a pcapng file (no Section Header Block)")
    if struct.unpack("<I", data[8:12])[0] != BYTE_ORDER_MAGIC:
        raise ValueError("big-endian pcapng is not supported")
    pos = 0
    while pos + 12 <= len(data):
        btype, total = struct.unpack("<II", data[pos : pos + 8])
        if total < 12 or total % 4 or pos + total > len(data):
            raise ValueError(f"pcapng block at offset {pos}: bad length {total}")
        yield btype, data[pos + 8 : pos + total - 4]
        pos += total


def read_frames(data: bytes) -> tuple[int, list[tuple[float, bytes]]]:
    """(link type of the first interface, [(timestamp, frame)]) of a pcapng we wrote."""
    linktype = 0
    frames: list[tuple[float, bytes]] = []
    for btype, body in blocks(data):
        if btype == IDB and not linktype:
            linktype = struct.unpack("<H", body[:2])[0]
        elif btype == EPB:
            _, hi, lo, caplen, _orig = struct.unpack("<IIIII", body[:20])
            frames.append((((hi << 32) | lo) / 1e6, body[20 : 20 + caplen]))
    return linktype, frames


def read_names(data: bytes) -> dict[str, str]:
    """Every NRB record of a pcapng: address → name."""
    names: dict[str, str] = {}
    for btype, body in blocks(data):
        if btype != NRB:
            continue
        pos = 0
        while pos + 4 <= len(body):
            rtype, length = struct.unpack("<HH", body[pos : pos + 4])
            value = body[pos + 4 : pos + 4 + length]
            pos += 4 + length + (-length % 4)
            if rtype == NRB_END:
                break
            size = 4 if rtype == NRB_IPV4 else 16
            addr = str(ipaddress.ip_address(value[:size]))
            names[addr] = value[size:].split(b"\x00")[0].decode()
    return names


def read_secrets(data: bytes) -> list[tuple[int, bytes]]:
    """(secrets type, secrets) of every DSB of a pcapng."""
    out: list[tuple[int, bytes]] = []
    for btype, body in blocks(data):
        if btype == DSB:
            stype, length = struct.unpack("<II", body[:8])
            out.append((stype, body[8 : 8 + length]))
    return out
