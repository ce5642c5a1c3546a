"""Issue 11 item 3: a flood past capacity must not stop emergency calls.

The VSP proxy runs as its own `ng911 run vsp` process; a second process floods it with
ordinary INVITEs (to a black hole, so each admitted one holds a client transaction, as an
attack would) at several times what it can proxy, while this test places emergency calls
beside the flood and counts how many are answered. Before overload control, the emergency
INVITEs waited in the kernel's queue behind the flood (or were dropped with it) and none was
answered in time; now the flood is shed with 503 and emergency calls are admitted first.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

import pytest

FLOOD = r"""
import socket, sys, time
host, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
nsrc = int(sys.argv[5])
socks = []
for i in range(nsrc):  # one source address, or many (a distributed or spoofed flood)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1" if nsrc == 1 else "127.1.%d.%d" % (i // 250, 1 + i % 250), 0))
    s.setblocking(False)
    socks.append(s)
pad = "x" * 600
tmpl = (
    "INVITE sip:bob@127.0.0.1:9 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKflood%d\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:mallory@attacker.example>;tag=f%d\r\n"
    "To: <sip:bob@127.0.0.1>\r\nCall-ID: flood-%d@attacker\r\nCSeq: 1 INVITE\r\n"
    "Contact: <sip:mallory@127.0.0.1:%d>\r\nX-Pad: %s\r\nContent-Length: 0\r\n\r\n"
)
sent = got503 = 0
t0 = time.monotonic()
while True:
    now = time.monotonic() - t0
    if now >= seconds:
        break
    due = int(now * rate)
    while sent < due:
        s = socks[sent % nsrc]
        lport = s.getsockname()[1]
        try:
            s.sendto((tmpl % (lport, sent, sent, sent, lport, pad)).encode(), (host, port))
        except BlockingIOError:
            break
        sent += 1
    for s in socks:
        try:
            while True:
                if s.recv(65535).startswith(b"SIP/2.0 503"):
                    got503 += 1
        except BlockingIOError:
            pass
    time.sleep(0.0005)
print(sent, got503, flush=True)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _emergency_invite(n: int, lport: int) -> bytes:
    return (
        "INVITE urn:service:sos SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bKsos{n}x{time.time_ns()}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+12125550100@vsp.example>;tag=sos{n}\r\n"
        "To: <urn:service:sos>\r\n"
        f"Call-ID: sos-{n}-{time.time_ns()}@probe\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:+12125550100@127.0.0.1:{lport}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class _Esrp(asyncio.DatagramProtocol):
    """Stands in for the ESRP: answers every INVITE 200 at once."""

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
        if not data.startswith(b"INVITE"):
            return
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        keep = [
            h
            for h in head[1:]
            if h.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq", "to")
        ]
        keep = [h + ";tag=esrp" if h.lower().startswith("to:") else h for h in keep]
        resp = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"
        self.transport.sendto(resp.encode(), addr)


class _Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answered: dict[str, float] = {}

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
        if data.startswith(b"SIP/2.0 200"):
            for line in data.decode("latin-1").split("\r\n"):
                if line.lower().startswith("call-id:"):
                    self.answered.setdefault(line.split(":", 1)[1].strip(), time.monotonic())


@pytest.mark.slow
@pytest.mark.parametrize("sources", [1, 64], ids=["one-source", "64-sources"])
async def test_emergency_calls_get_through_a_flood_of_ordinary_invites(tmp_path, sources):
    """One source is cut down by the per-source limit (dropped, pike-style); 64 sources
    each under that limit are shed by overload control (503 + Retry-After)."""
    loop = asyncio.get_running_loop()
    esrp_t, _ = await loop.create_datagram_endpoint(_Esrp, local_addr=("127.0.0.1", 0))
    esrp_port = esrp_t.get_extra_info("sockname")[1]
    vsp_port = _free_port()
    log = tmp_path / "vsp.log"
    cfg = tmp_path / "vsp.toml"
    cfg.write_text(
        f"""
[vsp]
name = "vsp"
fqdn = "vsp.example"
esrp = "sip:127.0.0.1:{esrp_port}"
workers = 1
log_file = "{log}"
listeners = [{{transport = "udp", host = "127.0.0.1", port = {vsp_port}}}]
"""
    )
    vsp = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ng911", "run", "vsp", "--config", str(cfg), "--ready"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    flood = None
    try:
        assert vsp.stdout is not None
        line = await asyncio.wait_for(vsp.stdout.readline(), 30)
        assert "ready" in json.loads(line)
        probe_t, probe = await loop.create_datagram_endpoint(_Probe, local_addr=("127.0.0.1", 0))
        lport = probe_t.get_extra_info("sockname")[1]
        # the flood: several times what one proxy process carries (the compiled build
        # ~6k of these INVITEs/s with little queueing, the pure one ~2k)
        flood = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", FLOOD, "127.0.0.1", str(vsp_port), "20000", "8", str(sources)),
            stdout=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(1.5)  # let the backlog build
        sent: dict[str, float] = {}

        async def call(n: int) -> None:
            # an emergency caller: INVITE, retransmitted as RFC 3261 §17.1.1.2 says
            data = _emergency_invite(n, lport)
            call_id = data.split(b"Call-ID: ")[1].split(b"\r\n")[0].decode()
            sent[call_id] = time.monotonic()
            for wait in (0.5, 1.0, 2.0):
                probe_t.sendto(data, ("127.0.0.1", vsp_port))
                await asyncio.sleep(wait)
                if call_id in probe.answered:
                    return

        calls = []
        for n in range(12):  # 2 emergency calls/s beside the flood
            calls.append(asyncio.ensure_future(call(n)))
            await asyncio.sleep(0.5)
        await asyncio.gather(*calls)
        out, _ = await asyncio.wait_for(flood.communicate(), 30)
        flood_sent, flood_503 = (int(x) for x in out.split())
        await asyncio.sleep(2.0)
        answered = [cid for cid in sent if cid in probe.answered]
        delays = sorted(probe.answered[c] - sent[c] for c in answered)
        probe_t.close()
        assert flood_sent > 30_000
        assert len(answered) >= 11, (len(answered), delays)
        assert delays[len(delays) // 2] < 2.0, delays  # ~0.5 s on an idle 2-core VM
        records = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        shed = [r for r in records if r["what"] == "shedding"]
        if sources == 1:
            assert sum(r["source_limited"] for r in shed) > 15_000
        else:
            # the flood was told to go away (503), not silently queued. How much of it the
            # proxy sheds rather than carries depends on how fast it is that minute (2.5k to
            # 6k of 48k here, 1.6k once in CI), so the bound is on shedding having happened
            # and on its refusals reaching the flood, not on a count tuned to one machine.
            refused = sum(r["refused"] for r in shed)
            assert refused > 500, refused
            assert flood_503 >= refused // 2, (flood_503, refused)
            assert any(r["what"] == "overload" for r in records)
        assert not any(r.get("refused_priority") for r in records)
        assert vsp.returncode is None  # still running
    finally:
        esrp_t.close()
        for p in (flood, vsp):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()
