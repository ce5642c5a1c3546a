"""Real TLS between two ng911.net transport layers: the layers report the ciphertext they write
(`WireEvent`), the capture holds it, and tshark decrypts it with the key log to find the
INVITE's PIDF-LO."""

import asyncio
import shutil
import struct
import subprocess

import pytest

from ng911.net import SipTransportLayer, Source
from ng911.net.events import WireEvent
from ng911.observe import pcapng
from ng911.observe.calls import Trace
from ng911.observe.pcap import (
    convert_capture,
    read_frames,
    read_pcap,
    tcp_streams,
    write_captures,
)
from ng911.pki.testpki import build_test_pki
from ng911.sip.message import Request, Response, make_response
from ng911.sip.parse import parse_message
from ng911.sip.samples import emergency_invite

TSHARK = shutil.which("tshark")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return build_test_pki(tmp_path_factory.mktemp("wirepki"))


async def _tls_call(pki, tmp_path, trace: Trace):
    keylog = tmp_path / "keys.log"
    got: asyncio.Queue = asyncio.Queue()
    esrp = SipTransportLayer(element="esrp")
    vsp = SipTransportLayer(
        element="vsp",
        client_tls=pki.client_context("vsp-proxy", keylog=keylog),
        verify_identity=False,
    )

    def answer(msg: Request | Response, src: Source) -> None:
        if isinstance(msg, Request):
            resp = make_response(msg, 200, "OK")
            asyncio.get_running_loop().create_task(
                esrp.send(resp, src.address, connection_id=src.connection_id)
            )

    esrp.on_message = answer
    vsp.on_message = lambda m, s: got.put_nowait(m)
    for layer in (esrp, vsp):
        layer.observers.append(trace)
    try:
        addr = await esrp.listen(
            "tls", "127.0.0.1", 0, tls=pki.server_context("esrp", keylog=keylog)
        )
        invite = parse_message(emergency_invite())
        await vsp.send(invite, addr)
        resp = await asyncio.wait_for(got.get(), 5)
        assert isinstance(resp, Response) and resp.status == 200
    finally:
        await vsp.close()
        await esrp.close()
    return keylog


async def test_layers_report_the_tls_records_they_write(pki, tmp_path):
    trace = Trace({"vsp": "vsp", "esrp": "esrp"})
    await _tls_call(pki, tmp_path, trace)
    trace.finalize()
    wires = [w for w in trace.events if isinstance(w, WireEvent)]
    assert {w.element for w in wires} == {"vsp", "esrp"}
    assert wires[0].element == "vsp" and wires[0].data[:1] == b"\x16"  # ClientHello record
    assert all(b"INVITE" not in w.data for w in wires)  # ciphertext only
    # every message's TLS records were reported: sums agree with wire_bytes
    out = [m for m in trace.messages if m.direction == "out"]
    assert {m.hop for m in out} == {"hop2"}
    total = sum(len(w.data) for w in wires)
    assert total > sum(m.wire_bytes for m in out) > sum(m.sip_bytes for m in out)


async def test_tshark_decrypts_the_tls_hop_with_the_key_log(pki, tmp_path):
    if TSHARK is None:
        pytest.skip("tshark not installed (scripts/install-peers.sh installs it)")
    trace = Trace({"vsp": "vsp", "esrp": "esrp"})
    keylog = await _tls_call(pki, tmp_path, trace)
    res = write_captures(trace, tmp_path)
    assert res.skipped == {}
    _, pkts = read_pcap(res.files["hop2"])
    assert all(p.ip_checksum_ok and p.l4_checksum_ok for p in pkts)
    assert 5061 in {p.dport for p in pkts}
    assert all(b"INVITE" not in s for s in tcp_streams(pkts).values())
    assert keylog.read_text().count("CLIENT_TRAFFIC_SECRET_0") >= 1

    def tshark(*args: str) -> str:
        return subprocess.run(
            [TSHARK, "-n", "-r", str(res.files["hop2"]), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    assert _tshark_fields(res.files["hop2"], "-Y", "sip") == []  # no keys: nothing readable
    keys = ("-o", f"tls.keylog_file:{keylog}")
    assert _tshark_fields(res.files["hop2"], *keys, "-Y", "sip") == [["INVITE", ""], ["", "200"]]
    detail = tshark("-o", f"tls.keylog_file:{keylog}", "-Y", 'sip.Method == "INVITE"', "-V")
    assert "application/pidf+xml" in detail
    assert "Geolocation: <cid:" in detail
    assert "40.7580 -73.9855" in detail  # the PIDF-LO point, decrypted


def _tshark_fields(path, *args: str) -> list[list[str]]:
    """tshark with its defaults: no key log option, so only what the file holds decrypts."""
    fields = ("-T", "fields", "-e", "sip.Method", "-e", "sip.Status-Code")
    out = subprocess.run(
        [TSHARK, "-r", str(path), *args, *fields],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [r.split("\t") for r in out.splitlines()]


async def test_the_capture_carries_its_keys_and_names_wireshark_needs_no_option(pki, tmp_path):
    """Issue 14: a pcapng with a Decryption Secrets Block and a Name Resolution Block opens
    decrypted, with element names, without `-o tls.keylog_file`."""
    if TSHARK is None:
        pytest.skip("tshark not installed (scripts/install-peers.sh installs it)")
    trace = Trace({"vsp": "vsp", "esrp": "esrp"})
    keylog = await _tls_call(pki, tmp_path, trace)
    res = write_captures(trace, tmp_path / "keys-inside", keylog=keylog)
    path = res.files["hop2"]
    assert path.suffix == ".pcapng"
    data = path.read_bytes()
    assert pcapng.read_secrets(data) == [(pcapng.SECRETS_TLS_KEYLOG, keylog.read_bytes())]
    assert set(pcapng.read_names(data).values()) == {"vsp", "esrp"}
    assert _tshark_fields(path, "-Y", "sip") == [["INVITE", ""], ["", "200"]]
    hosts = subprocess.run(
        [TSHARK, "-N", "n", "-r", str(path), "-Y", "sip", "-T", "fields", "-e", "ip.src_host"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert hosts == ["vsp", "esrp"]


def _classic_pcap(path, linktype: int, frames) -> None:
    """What tcpdump (or dumpcap -P) writes: a classic libpcap file, microseconds."""
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for ts, frame in frames:
            sec = int(ts)
            fh.write(struct.pack("<IIII", sec, round((ts - sec) * 1e6), len(frame), len(frame)))
            fh.write(frame)


async def test_a_real_tools_capture_is_rewritten_with_keys_and_names(pki, tmp_path):
    """--netns captures come from dumpcap/tcpdump as classic pcap: `convert_capture` keeps
    every frame byte for byte and adds the names and the key log."""
    if TSHARK is None:
        pytest.skip("tshark not installed (scripts/install-peers.sh installs it)")
    trace = Trace({"vsp": "vsp", "esrp": "esrp"})
    keylog = await _tls_call(pki, tmp_path, trace)
    plain = write_captures(trace, tmp_path / "bare").files["hop2"]  # no keys inside
    assert _tshark_fields(plain, "-Y", "sip") == []
    linktype, frames = read_frames(plain)
    raw = tmp_path / "captured-hop2.pcap"
    _classic_pcap(raw, linktype, frames)
    names = {ip: name for name, ip in (("vsp", "10.0.2.1"), ("esrp", "10.0.3.1"))}
    out = tmp_path / "captured-hop2.pcapng"
    assert convert_capture(raw, out, names=names, keylog=keylog) == len(frames)
    assert [f for _, f in read_frames(out)[1]] == [f for _, f in frames]
    assert _tshark_fields(out, "-Y", "sip") == [["INVITE", ""], ["", "200"]]
    assert pcapng.read_names(out.read_bytes()) == names


async def test_no_wire_events_without_observers_and_none_for_udp(pki, tmp_path):
    # the bytes are copied only for an observer; UDP has no stream to reassemble
    trace = Trace({"vsp": "vsp", "esrp": "esrp"})
    esrp, vsp = SipTransportLayer(element="esrp"), SipTransportLayer(element="vsp")
    got: asyncio.Queue = asyncio.Queue()
    esrp.on_message = lambda m, s: got.put_nowait(m)
    vsp.observers.append(trace)
    try:
        addr = await esrp.listen("udp", "127.0.0.1", 0)
        await vsp.send(parse_message(emergency_invite()), addr)
        await asyncio.wait_for(got.get(), 5)
    finally:
        await vsp.close()
        await esrp.close()
    trace.finalize()
    assert trace.wires == [] and len(trace.messages) == 1
