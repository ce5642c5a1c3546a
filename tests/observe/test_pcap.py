"""Synthesised captures: correct packets read back by our reader, and by tshark."""

import shutil
import subprocess

import pytest
from synthcalls import ROLES, Chain

from ng911.observe.calls import Trace
from ng911.observe.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    TCP_ACK,
    TCP_FIN,
    TCP_SYN,
    PcapWriter,
    read_pcap,
    tcp_streams,
    write_capture,
    write_captures,
)

TSHARK = shutil.which("tshark")


def _trace(transports, calls=1):
    chain = Chain(transports)
    for _ in range(calls):
        chain.call()
    tr = Trace(ROLES)
    tr.extend(chain.events)
    return tr.finalize()


def _tshark(*args: str) -> list[str]:
    if TSHARK is None:
        pytest.skip("tshark not installed (scripts/install-peers.sh installs it)")
    out = subprocess.run(
        [TSHARK, "-n", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return [ln for ln in out.stdout.splitlines() if ln.strip()]


def test_udp_hop_packets_read_back(tmp_path):
    tr = _trace(("udp",) * 4)
    res = write_captures(tr, tmp_path)
    assert set(res.files) == {"hop1", "hop2", "hop3", "hop4", "all"}
    assert res.skipped == {}
    linktype, pkts = read_pcap(res.files["hop1"])
    assert linktype == LINKTYPE_ETHERNET
    assert len(pkts) == 7  # INVITE 100 180 200 ACK BYE 200
    assert all(p.proto == 17 and p.ip_checksum_ok and p.l4_checksum_ok for p in pkts)
    assert {p.sport for p in pkts} == {5060} and {p.dport for p in pkts} == {5060}
    assert pkts[0].src == "10.0.1.1" and pkts[0].dst == "10.0.2.1"  # caller → VSP
    assert pkts[0].payload.startswith(b"INVITE urn:service:sos SIP/2.0\r\n")
    sent = [m.data for m in tr.messages if m.direction == "out" and m.hop == "hop1"]
    assert [p.payload for p in pkts] == sent
    assert [p.ts for p in pkts] == sorted(p.ts for p in pkts)
    _, everything = read_pcap(res.files["all"])
    assert len(everything) == 27


def test_tcp_hop_has_handshake_and_reassembles(tmp_path):
    tr = _trace(("tcp",) * 4, calls=2)
    path = tmp_path / "hop2.pcapng"
    n, notes = write_capture(tr, path, hop="hop2", linktype=LINKTYPE_RAW)
    assert notes == []
    linktype, pkts = read_pcap(path)
    assert linktype == LINKTYPE_RAW and len(pkts) == n
    assert all(p.proto == 6 and p.ip_checksum_ok and p.l4_checksum_ok for p in pkts)
    assert pkts[0].flags == TCP_SYN and pkts[1].flags == TCP_SYN | TCP_ACK
    assert pkts[2].flags == TCP_ACK and pkts[0].dport == 5060
    assert pkts[1].ack == pkts[0].seq + 1
    assert sum(1 for p in pkts if p.flags & TCP_FIN) == 2  # one connection, closed once
    streams = tcp_streams(pkts)
    client = (pkts[0].src, pkts[0].sport)
    server = (pkts[0].dst, pkts[0].dport)
    up = b"".join(
        m.data
        for m in sorted(tr.messages, key=lambda m: m.mono)
        if m.hop == "hop2" and m.direction == "out" and m.element == "vsp"
    )
    assert streams[(client, server)] == up


def test_tls_hop_without_wire_chunks_is_left_out_not_written_in_clear(tmp_path):
    tr = _trace(("udp", "tls", "udp", "udp"))
    res = write_captures(tr, tmp_path)
    assert "WireEvent" in res.skipped["hop2"]
    _, pkts = read_pcap(res.files["hop2"])
    assert pkts == []
    _, allp = read_pcap(res.files["all"])
    assert not any(b"INVITE" in p.payload and p.proto == 6 for p in allp)


def test_empty_trace_writes_an_empty_valid_capture(tmp_path):
    n, notes = write_capture(Trace({}), tmp_path / "x.pcapng")
    assert n == 0 and notes == ["no events"]
    assert read_pcap(tmp_path / "x.pcapng") == (LINKTYPE_ETHERNET, [])


def test_reader_refuses_what_is_not_a_capture(tmp_path):
    p = tmp_path / "x.pcapng"
    p.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\x00" * 40)  # a pcapng SHB with no magic
    with pytest.raises(ValueError, match=r"x\.pcapng: big-endian"):
        read_pcap(p)
    p.write_bytes(b"GIF89a" + b"\x00" * 40)
    with pytest.raises(ValueError, match="neither pcap nor pcapng"):
        read_pcap(p)
    p.write_bytes(b"abc")
    with pytest.raises(ValueError, match="too short"):
        read_pcap(p)


def test_writer_refuses_bad_input(tmp_path):
    with (tmp_path / "x").open("wb") as fh:
        with pytest.raises(ValueError, match="link type"):
            PcapWriter(fh, linktype=42).write_ip(0.0, b"")
        w = PcapWriter(fh)
        with pytest.raises(ValueError, match="IPv4"):
            w.udp(0.0, ("::1", 5060), ("10.0.0.1", 5060), b"x")


def test_tshark_dissects_udp_sip(tmp_path):
    tr = _trace(("udp",) * 4)
    res = write_captures(tr, tmp_path)
    rows = _tshark(
        "-r",
        str(res.files["hop3"]),
        "-T",
        "fields",
        "-e",
        "sip.Method",
        "-e",
        "sip.Status-Code",
        "-e",
        "udp.checksum.status",
    )
    methods = [r.split("\t")[0] for r in rows if r.split("\t")[0]]
    assert methods == ["INVITE", "ACK", "BYE"]
    statuses = [r.split("\t")[1] for r in rows if r.split("\t")[1]]
    assert statuses == ["100", "180", "200", "200"]


def test_tshark_reassembles_tcp_sip(tmp_path):
    tr = _trace(("tcp",) * 4, calls=2)
    res = write_captures(tr, tmp_path)
    rows = _tshark(
        "-r",
        str(res.files["hop1"]),
        "-Y",
        "sip.Method",
        "-T",
        "fields",
        "-e",
        "sip.Method",
        "-e",
        "tcp.dstport",
    )
    assert [r.split("\t") for r in rows] == [
        ["INVITE", "5060"],
        ["ACK", "5060"],
        ["BYE", "5060"],
    ] * 2
    warnings = _tshark("-r", str(res.files["hop1"]), "-Y", "tcp.analysis.flags")
    assert warnings == []
