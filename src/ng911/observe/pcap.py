"""Per-hop packet captures synthesised from the trace, readable by tshark and Wireshark.

The chain runs in one process on loopback, so there is nothing for tcpdump to see that says
which element is which. Instead the observer rebuilds each hop's packets from what the
transports reported: the SIP bytes for UDP and TCP hops, and for TLS hops the TLS records
exactly as they crossed the socket (ciphertext, `WireEvent`s). The run's key log (NSS
`SSLKEYLOGFILE` format, what the TLS transport wrote) goes into the file as a pcapng
Decryption Secrets Block, so Wireshark decrypts the TLS hops with no extra step.

What the synthesis does, so a reader can trust it:

- pcapng (`ng911.observe.pcapng`), LINKTYPE_ETHERNET (1) or LINKTYPE_RAW (101, bare IPv4);
  IPv4 header checksums and UDP/TCP checksums are correct;
- each element gets its own address, 10.0.R.N with R its role's column (caller 1, VSP 2,
  ESRP 3, LoST 4, PSAPs 5, call takers 6), so a capture reads like a real network, and a
  Name Resolution Block names each address after its element;
- listening ports become the well-known ones, 5060 for UDP/TCP SIP and 5061 for SIP over TLS
  (RFC 3261 §19.1.2), so no `-d` decode hint is needed; clients' ephemeral ports are kept;
- a TCP connection starts with SYN, SYN-ACK, ACK, carries each chunk in segments of at most
  1448 bytes with consistent sequence and acknowledgement numbers, and ends with FIN/ACK,
  so tshark's TCP reassembly and the SIP/TLS dissectors work.

Real captures (dumpcap/tcpdump under --netns) are rewritten the same way by
`convert_capture`: every frame as captured, plus the names and the key log.

A TLS hop with no wire chunks (the transport did not report them) is left out rather than
written in plaintext: a capture must never show as clear text what crossed encrypted.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ng911.observe import pcapng
from ng911.observe.calls import Trace
from ng911.observe.hops import COLUMNS
from ng911.observe.records import MsgRecord, WireRecord

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
PCAP_MAGIC = 0xA1B2C3D4  # classic libpcap, microseconds (what dumpcap -P and tcpdump write)
PCAP_MAGIC_NS = 0xA1B23C4D  # classic libpcap, nanoseconds
SIP_PORT = 5060
SIPS_PORT = 5061
MSS = 1448

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_ETH_SRC = bytes.fromhex("020000000001")
_ETH_DST = bytes.fromhex("020000000002")


def _checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def _ip_bytes(ip: str) -> bytes:
    try:
        return ipaddress.IPv4Address(ip).packed
    except ValueError:
        raise ValueError(f"not an IPv4 address: {ip!r}") from None


def ipv4_packet(src: str, dst: str, proto: int, payload: bytes, ident: int = 0) -> bytes:
    """An IPv4 header (no options, DF set, TTL 64) with a correct checksum, then `payload`."""
    total = 20 + len(payload)
    if total > 0xFFFF:
        raise ValueError(f"IPv4 packet too large: {total} bytes")
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        ident & 0xFFFF,
        0x4000,
        64,
        proto,
        0,
        _ip_bytes(src),
        _ip_bytes(dst),
    )
    csum = _checksum(hdr)
    return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + payload


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    return _ip_bytes(src) + _ip_bytes(dst) + struct.pack("!BBH", 0, proto, length)


def udp_datagram(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """UDP header + payload, checksum over the IPv4 pseudo-header (RFC 768)."""
    length = 8 + len(payload)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    csum = _checksum(_pseudo(src, dst, 17, length) + hdr + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, csum) + payload


def tcp_segment(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    window: int = 65535,
) -> bytes:
    """TCP header (20 bytes, no options) + payload, checksum over the pseudo-header (RFC 793)."""
    hdr = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, window, 0, 0
    )
    csum = _checksum(_pseudo(src, dst, 6, len(hdr) + len(payload)) + hdr + payload)
    return hdr[:16] + struct.pack("!H", csum) + hdr[18:] + payload


class PcapWriter:
    """Writes a pcapng capture (`ng911.observe.pcapng`): SHB and IDB, then the NRB (address →
    element name) and the DSB (the TLS key log) when given, then one EPB per frame."""

    def __init__(
        self,
        fh: BinaryIO,
        *,
        linktype: int = LINKTYPE_ETHERNET,
        snaplen: int = 262144,
        names: Mapping[str, str] | None = None,
        keylog: bytes = b"",
        interface: str = "ng911",
    ) -> None:
        self.fh = fh
        self.linktype = linktype
        self.snaplen = snaplen
        self.packets = 0
        self._ident = 0
        fh.write(pcapng.section_header())
        fh.write(pcapng.interface_description(linktype, snaplen, interface))
        if names:
            fh.write(pcapng.name_resolution(names))
        if keylog:
            fh.write(pcapng.decryption_secrets(keylog))

    def write_frame(self, ts: float, frame: bytes) -> None:
        """One frame of the interface's link type, as it is."""
        self.fh.write(pcapng.enhanced_packet(ts, frame, self.snaplen))
        self.packets += 1

    def write_ip(self, ts: float, ip_packet: bytes) -> None:
        if self.linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
            raise ValueError(f"cannot frame an IP packet for link type {self.linktype}")
        frame = ip_packet
        if self.linktype == LINKTYPE_ETHERNET:
            frame = _ETH_DST + _ETH_SRC + b"\x08\x00" + ip_packet
        self.write_frame(ts, frame)

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def udp(self, ts: float, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        dgram = udp_datagram(src[0], dst[0], src[1], dst[1], payload)
        self.write_ip(ts, ipv4_packet(src[0], dst[0], 17, dgram, self.next_ident()))


class TcpConversation:
    """One synthetic TCP connection: handshake, data both ways, orderly close."""

    def __init__(
        self,
        writer: PcapWriter,
        client: tuple[str, int],
        server: tuple[str, int],
        *,
        isn_client: int = 1000,
        isn_server: int = 5000,
    ) -> None:
        self.w = writer
        self.client = client
        self.server = server
        self.seq = {True: isn_client, False: isn_server}  # next seq, keyed by "from client"
        self.opened = False
        self.closed = False

    def _seg(self, ts: float, from_client: bool, flags: int, payload: bytes = b"") -> None:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        seq = self.seq[from_client]
        ack = self.seq[not from_client] if flags & TCP_ACK else 0
        seg = tcp_segment(src[0], dst[0], src[1], dst[1], seq, ack, flags, payload)
        self.w.write_ip(ts, ipv4_packet(src[0], dst[0], 6, seg, self.w.next_ident()))
        self.seq[from_client] = (
            seq + len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        ) & 0xFFFFFFFF

    def open(self, ts: float) -> None:
        """SYN, SYN-ACK, ACK, a microsecond apart, ending at `ts`."""
        self._seg(ts - 3e-6, True, TCP_SYN)
        self._seg(ts - 2e-6, False, TCP_SYN | TCP_ACK)
        self._seg(ts - 1e-6, True, TCP_ACK)
        self.opened = True

    def send(self, ts: float, from_client: bool, data: bytes) -> None:
        if not self.opened:
            self.open(ts)
        for i in range(0, len(data), MSS):
            self._seg(ts, from_client, TCP_PSH | TCP_ACK, data[i : i + MSS])
        # the receiver acknowledges (keeps Wireshark's analysis free of "ACKed unseen segment")
        self._seg(ts + 1e-6, not from_client, TCP_ACK)

    def close(self, ts: float) -> None:
        if not self.opened or self.closed:
            return
        self._seg(ts, True, TCP_FIN | TCP_ACK)
        self._seg(ts + 1e-6, False, TCP_FIN | TCP_ACK)
        self._seg(ts + 2e-6, True, TCP_ACK)
        self.closed = True


# -- reading back (tests, and `ng911 testbed` self-checks) ---------------------------------


@dataclass(frozen=True, slots=True)
class Packet:
    ts: float
    src: str
    dst: str
    proto: int  # 6 TCP, 17 UDP
    sport: int
    dport: int
    payload: bytes
    seq: int = 0
    ack: int = 0
    flags: int = 0
    ip_checksum_ok: bool = True
    l4_checksum_ok: bool = True


def _ip_str(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def _classic_frames(data: bytes) -> tuple[int, list[tuple[float, bytes]]]:
    """(link type, [(timestamp, frame)]) of a classic libpcap file, either byte order."""
    for endian in "<>":
        magic = struct.unpack(endian + "I", data[:4])[0]
        if magic in (PCAP_MAGIC, PCAP_MAGIC_NS):
            break
    else:
        raise ValueError(f"neither pcap nor pcapng (magic {data[:4].hex()})")
    scale = 1e6 if magic == PCAP_MAGIC else 1e9
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    pos = 24
    frames: list[tuple[float, bytes]] = []
    while pos + 16 <= len(data):
        sec, frac, caplen, _orig = struct.unpack(endian + "IIII", data[pos : pos + 16])
        frames.append((sec + frac / scale, data[pos + 16 : pos + 16 + caplen]))
        pos += 16 + caplen
    return linktype, frames


def read_frames(path: Path) -> tuple[int, list[tuple[float, bytes]]]:
    """(link type, [(timestamp, frame)]) of a pcapng (ours) or a classic pcap (a capture
    tool's); ValueError, naming the file, on anything else."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: too short for a capture file header")
    try:
        if struct.unpack("<I", data[:4])[0] == pcapng.SHB:
            return pcapng.read_frames(data)
        return _classic_frames(data)
    except (ValueError, struct.error) as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_pcap(path: Path) -> tuple[int, list[Packet]]:
    """The IPv4 UDP/TCP packets of a capture (pcapng or classic pcap): (linktype, packets).
    Frames of other protocols (ARP, IPv6 on a real bridge) are skipped."""
    linktype, frames = read_frames(path)
    out: list[Packet] = []
    for ts, frame in frames:
        if linktype == LINKTYPE_ETHERNET:
            if frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
        else:
            ip = frame
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        proto = ip[9]
        src, dst = _ip_str(ip[12:16]), _ip_str(ip[16:20])
        ip_ok = _checksum(ip[:ihl]) == 0
        l4 = ip[ihl:total]
        l4_ok = _checksum(_pseudo(src, dst, proto, len(l4)) + l4) == 0
        if proto == 17:
            sport, dport = struct.unpack("!HH", l4[:4])
            out.append(Packet(ts, src, dst, 17, sport, dport, l4[8:], 0, 0, 0, ip_ok, l4_ok))
        elif proto == 6:
            sport, dport, seq, ack, off, flags = struct.unpack("!HHIIBB", l4[:14])
            hl = (off >> 4) * 4
            out.append(
                Packet(ts, src, dst, 6, sport, dport, l4[hl:], seq, ack, flags, ip_ok, l4_ok)
            )
    return linktype, out


def convert_capture(
    src: Path, dst: Path, *, names: Mapping[str, str], keylog: Path | None = None
) -> int:
    """Rewrite a capture tool's file (classic pcap or pcapng) as our pcapng, every frame
    byte for byte, with the NRB `names` and the key log as a DSB: what a real capture needs
    to open like the synthesised ones. Returns the frames written."""
    linktype, frames = read_frames(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("wb") as fh:
        w = PcapWriter(
            fh, linktype=linktype, names=names, keylog=_keylog_bytes(keylog), interface="bridge"
        )
        for ts, frame in frames:
            w.write_frame(ts, frame)
        return w.packets


def _keylog_bytes(keylog: Path | None) -> bytes:
    if keylog is None or not keylog.is_file():
        return b""
    return keylog.read_bytes()


def tcp_streams(packets: Iterable[Packet]) -> dict[tuple[tuple[str, int], tuple[str, int]], bytes]:
    """Reassemble each TCP direction's payload in sequence order: (src, dst) → bytes."""
    segs: dict[tuple[tuple[str, int], tuple[str, int]], list[tuple[int, bytes]]] = defaultdict(list)
    for p in packets:
        if p.proto == 6 and p.payload:
            segs[((p.src, p.sport), (p.dst, p.dport))].append((p.seq, p.payload))
    return {k: b"".join(b for _, b in sorted(v)) for k, v in segs.items()}


# -- from a trace to files -----------------------------------------------------------------


@dataclass(slots=True)
class CaptureResult:
    """What `write_captures` produced: a pcapng per hop, and the hops it had to leave out."""

    files: dict[str, Path] = field(default_factory=dict)
    packets: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # hop → why


class AddressPlan:
    """Maps each element to a synthetic IPv4 address, listening ports to well-known ones."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.ips: dict[str, str] = {}
        counts: dict[int, int] = defaultdict(int)
        elements = sorted(
            {m.element for m in trace.messages}
            | {str(w.element) for w in trace.wires}
            | {h.element for h in trace.handshakes},
            key=lambda e: (self._column(e), e),
        )
        for e in elements:
            col = self._column(e)
            counts[col] += 1
            self.ips[e] = f"10.0.{col}.{counts[col]}"
        # Stream listeners: the server side of every TLS handshake, the remote of every
        # message an element sent on a connection it opened. UDP: every element's socket.
        self.stream_servers: set[tuple[str, int]] = {
            h.local for h in trace.handshakes if h.role == "server"
        }

    def _column(self, element: str) -> int:
        role = self.trace.role(element)
        return COLUMNS.index(role) + 1 if role in COLUMNS else 9

    def ip(self, element: str | None) -> str:
        if element is None:
            return "10.0.9.254"
        if element not in self.ips:
            col = self._column(element)
            self.ips[element] = f"10.0.{col}.{200 + len(self.ips) % 50}"
        return self.ips[element]

    def port(self, transport: str, addr: tuple[str, int], listener: bool) -> int:
        if not listener:
            return addr[1]
        return SIPS_PORT if transport == "tls" else SIP_PORT


def _stream_chunks(trace: Trace, hop: str | None, transport: str) -> list[MsgRecord | WireRecord]:
    """Chunks written on the hop's connections: wire records if any, else the messages."""

    def out_on_hop(records: Iterable[MsgRecord | WireRecord]) -> list[MsgRecord | WireRecord]:
        return [
            r
            for r in records
            if r.direction == "out"
            and r.transport == transport
            and (hop is None or (r.hop or "other") == hop)
        ]

    chunks = out_on_hop(trace.wires)
    return chunks if chunks or transport == "tls" else out_on_hop(trace.messages)


def write_capture(
    trace: Trace,
    path: Path,
    *,
    hop: str | None = None,
    linktype: int = LINKTYPE_ETHERNET,
    keylog: Path | None = None,
) -> tuple[int, list[str]]:
    """Write one pcapng with the packets of `hop` (every hop when None), the elements' names
    (NRB) and, when `keylog` is given, the run's TLS key log (DSB).

    Returns (packets written, notes on what was left out).
    """
    trace.finalize()
    plan = AddressPlan(trace)
    secrets = _keylog_bytes(keylog)

    def writer(fh: BinaryIO) -> PcapWriter:
        names = {ip: element for element, ip in plan.ips.items()}
        return PcapWriter(fh, linktype=linktype, names=names, keylog=secrets)

    notes: list[str] = []
    # A common time base: wall clock of the first event plus the monotonic offset, so packets
    # keep the in-process order exactly (time.time() may step).
    all_mono = [m.mono for m in trace.messages] + [w.mono for w in trace.wires]
    if not all_mono:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            writer(fh)
        return 0, ["no events"]
    first = min(trace.messages, key=lambda m: m.mono) if trace.messages else None
    base = first if first is not None else trace.wires[0]

    def when(mono: float) -> float:
        return base.ts + (mono - base.mono)

    items: list[tuple[float, int, Any]] = []  # (mono, order, action)
    for m in trace.messages:
        if m.direction != "out" or m.transport != "udp":
            continue
        if hop is not None and (m.hop or "other") != hop:
            continue
        items.append((m.mono, len(items), ("udp", m)))
    for transport in ("tcp", "tls"):
        chunks = _stream_chunks(trace, hop, transport)
        for c in chunks:
            items.append((c.mono, len(items), ("stream", c)))
        if transport == "tls" and not chunks:
            tls_msgs = [
                m
                for m in trace.messages
                if m.transport == "tls" and (hop is None or (m.hop or "other") == hop)
            ]
            if tls_msgs:
                notes.append(
                    f"{len(tls_msgs)} TLS message events but no wire chunks: TLS left out "
                    "(the transport must report WireEvent for ciphertext captures)"
                )
    items.sort(key=lambda x: (x[0], x[1]))

    convs: dict[tuple[tuple[str, int], tuple[str, int]], tuple[TcpConversation, tuple[str, int]]]
    convs = {}
    last_mono: float = items[-1][0] if items else base.mono
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        w = writer(fh)
        for mono, _, (kind, obj) in items:
            if kind == "udp":
                m = obj
                peer = m.peer
                src = (plan.ip(m.element), plan.port("udp", m.local, True))
                dst = (plan.ip(peer), plan.port("udp", m.remote, True))
                w.udp(when(mono), src, dst, m.data)
                continue
            ch: MsgRecord | WireRecord = obj
            key = (min(ch.local, ch.remote), max(ch.local, ch.remote))
            if key not in convs:
                # the client is the side that is not a known server; unknown: first sender
                if ch.remote in plan.stream_servers or ch.local not in plan.stream_servers:
                    client_addr, server_addr = ch.local, ch.remote
                else:
                    client_addr, server_addr = ch.remote, ch.local
                client_el = trace.owner(ch.transport, client_addr)
                server_el = trace.owner(ch.transport, server_addr)
                conv = TcpConversation(
                    w,
                    (plan.ip(client_el), plan.port(ch.transport, client_addr, False)),
                    (plan.ip(server_el), plan.port(ch.transport, server_addr, True)),
                    isn_client=zlib.crc32(repr(key).encode()) & 0x0FFFFFFF,
                    isn_server=zlib.crc32(repr(key[::-1]).encode()) & 0x0FFFFFFF,
                )
                convs[key] = (conv, client_addr)
            conv, client_addr = convs[key]
            conv.send(when(mono), ch.local == client_addr, ch.data)
        for conv, _ in convs.values():
            conv.close(when(last_mono) + 0.001)
        return w.packets, notes


def write_captures(
    trace: Trace,
    out_dir: Path,
    *,
    hops: Iterable[str] = ("hop1", "hop2", "hop3", "hop4"),
    linktype: int = LINKTYPE_ETHERNET,
    keylog: Path | None = None,
) -> CaptureResult:
    """`hopN.pcapng` for each hop that carried messages, and `all.pcapng` with every hop;
    each holds the elements' names and, with `keylog`, the TLS key log (see `write_capture`)."""
    trace.finalize()
    result = CaptureResult()
    used = {m.hop for m in trace.messages if m.hop is not None}
    for hop in hops:
        if hop not in used:
            continue
        path = out_dir / f"{hop}.pcapng"
        n, notes = write_capture(trace, path, hop=hop, linktype=linktype, keylog=keylog)
        result.files[hop] = path
        result.packets[hop] = n
        if notes:
            result.skipped[hop] = "; ".join(notes)
    path = out_dir / "all.pcapng"
    n, _ = write_capture(trace, path, hop=None, linktype=linktype, keylog=keylog)
    result.files["all"] = path
    result.packets["all"] = n
    return result
