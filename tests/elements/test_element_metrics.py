"""Element metrics: `ng911 run --metrics` serves Prometheus text format at /metrics, parsed
here with prometheus_client's own parser, and `ng911 stats` prints them (ng911.node.metrics,
ng911.node.stats)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ng911.cli import main
from ng911.node.metrics import Histogram, call_outcome, start_metrics
from ng911.node.stats import Scrape, quantile, targets_of
from ng911.sip.message import Request, make_response
from ng911.sip.parse import parse_message
from ng911.testbed.launcher import open_chain

LOCAL = "127.0.0.1"

Families = dict[str, list[tuple[dict[str, str], float]]]


async def _scrape(url: str) -> Families:
    """GET /metrics and parse it the way a Prometheus server does: samples by name."""
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = await r.text()
    out: Families = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(f"family:{fam.name}", []).append(({"type": fam.type}, 0))
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _v(fams: Families, name: str, **labels: str) -> float:
    rows = fams.get(name, [])
    return sum(v for lab, v in rows if all(lab.get(k) == x for k, x in labels.items()))


class Callee(asyncio.DatagramProtocol):
    """The VSP's next hop: answers every request 200 (to its source)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        if isinstance(msg, Request) and msg.method != "ACK":
            self.transport.sendto(make_response(msg, 200, to_tag="callee").to_bytes(), addr)


class Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


def _request(method: str, port: int, n: int) -> bytes:
    return (
        f"{method} sip:911@vsp.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOCAL}:{port};branch=z9hG4bKm{n}x{port};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@vsp.example>;tag=a{n}\r\n"
        "To: <sip:911@vsp.example>\r\n"
        f"Call-ID: metrics-{n}@test\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:alice@{LOCAL}:{port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def _call(vsp_port: int, method: str = "INVITE", n: int = 1) -> int:
    """One request to the VSP from a fresh socket; its final status."""
    loop = asyncio.get_running_loop()
    tr, ans = await loop.create_datagram_endpoint(Answers, local_addr=(LOCAL, 0))
    try:
        tr.sendto(_request(method, tr.get_extra_info("sockname")[1], n), (LOCAL, vsp_port))
        while True:
            resp = parse_message(await asyncio.wait_for(ans.got.get(), 5.0))
            assert not isinstance(resp, Request)
            if resp.status >= 200:
                return resp.status
    finally:
        tr.close()


async def _start_vsp(cfg: Path, *extra: str) -> tuple[asyncio.subprocess.Process, dict]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ng911", "run", "vsp", "--config", str(cfg)),
        *("--ready", "--quiet", *extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    if not line:
        raise AssertionError((await proc.stderr.read()).decode()[-2000:])
    return proc, json.loads(line)


async def _stop(proc: asyncio.subprocess.Process) -> bytes:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    return err


def _vsp_config(tmp_path: Path, callee_port: int, extra: str = "") -> Path:
    cfg = tmp_path / "vsp.toml"
    cfg.write_text(
        f"""
[vsp]
name = "vsp-metrics"
fqdn = "vsp.example"
esrp = "sip:{LOCAL}:{callee_port}"
listeners = [{{transport = "udp", host = "{LOCAL}", port = 0}}]
{extra}
"""
    )
    return cfg


async def _cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ng911", *argv),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_running_vsp_serves_metrics_whose_counts_move_with_a_call(tmp_path):
    loop = asyncio.get_running_loop()
    ctr, _ = await loop.create_datagram_endpoint(Callee, local_addr=(LOCAL, 0))
    cfg = _vsp_config(tmp_path, ctr.get_extra_info("sockname")[1])
    proc, ready = await _start_vsp(cfg, "--metrics", f"{LOCAL}:0")
    try:
        url = ready["metrics"]
        assert url.startswith(f"http://{LOCAL}:") and url.endswith("/metrics")
        before = await _scrape(url)
        for fam, kind in (
            ("ng911_element_info", "gauge"),  # an info family, as text format 0.0.4 writes it
            ("ng911_event_loop_lag_seconds", "histogram"),
            ("ng911_transactions", "gauge"),
            ("ng911_overload_shedding", "gauge"),
            ("ng911_transport_messages_in", "counter"),
            ("process_cpu_seconds", "counter"),
        ):
            assert before[f"family:{fam}"] == [({"type": kind}, 0)], fam
        info = before["ng911_element_info"][0][0]
        assert info["name"] == "vsp-metrics" and info["role"] == "vsp"
        assert _v(before, "ng911_sip_requests_total") == 0
        assert _v(before, "ng911_overload_enabled") == 1
        assert _v(before, "ng911_event_loop_lag_seconds_count") >= 0

        (address,) = ready["addresses"]
        vsp_port = int(address.rsplit(":", 1)[1])
        assert await _call(vsp_port) == 200  # INVITE 911 → the callee's 200, proxied back
        foo = await _call(vsp_port, "FOO", 2)  # any token a peer sends is counted as "other"
        after = await _scrape(url)
        assert _v(after, "ng911_sip_requests_total", dir="in", method="INVITE") == 1
        assert _v(after, "ng911_sip_requests_total", dir="in", method="other") == 1
        assert _v(after, "ng911_sip_responses_total", dir="out", method="other", code=str(foo)) == 1
        assert _v(after, "ng911_sip_requests_total", dir="out", method="INVITE") == 1
        assert _v(after, "ng911_sip_responses_total", dir="in", method="INVITE", code="200") == 1
        assert _v(after, "ng911_sip_responses_total", dir="out", method="INVITE", code="100") == 1
        assert _v(after, "ng911_calls_total", outcome="answered", code="200") == 1
        assert _v(after, "ng911_vsp_emergency_calls_total") == 1
        assert _v(after, "ng911_transactions_started_total", side="server") >= 2
        assert _v(after, "ng911_cpu_seconds_total") > 0

        # `ng911 stats` prints them; an unreachable target is one line and exit 2
        rc, out, err = await _cli("stats", url)
        assert rc == 0, err
        assert out.splitlines()[0].startswith(f"vsp-metrics  (vsp)  {url}")
        assert "answered 1" in out and "INVITE 1" in out and "loop lag" in out
        assert "overload      ok  shed 0%" in out
        rc, out, err = await _cli("stats", url, "127.0.0.1:1")
        assert rc == 2 and "vsp-metrics" in out
        assert err.count("\n") == 1 and "127.0.0.1:1/metrics: unreachable" in err
    finally:
        err = await _stop(proc)
        ctr.close()
    assert proc.returncode == 0, err.decode()[-2000:]

