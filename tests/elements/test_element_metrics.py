"""Element metrics: `ng911 run --metrics` serves Prometheus text format at /metrics, parsed
here with prometheus_client's own parser, and `ng911 stats` prints them (ng911.node.metrics,
ng911.node.stats)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ng911.cli import main
from ng911.location.geodetic import Point
from ng911.node.metrics import Histogram, call_outcome
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
workers = 1
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


async def test_a_tls_chain_reports_handshakes_connections_lost_latency_and_queues(capsys):
    """A call through the in-process chain, every hop TLS and LoST over mutual HTTPS, with
    /metrics on for every element (`metrics=True`: the plan gives each its address:9100 and
    the launcher serves them); then `ng911 stats` over the VSP, the ESRP and the PSAP."""
    chain = await open_chain("tls-all", hangup_after=0.01, metrics=True)
    try:
        lat, lon = chain.topology.point("Bronx")
        assert set(chain.metrics) == set(chain.elements)
        assert all(m.url.endswith(":9100/metrics") for m in chain.metrics.values())
        servers = [chain.metrics[n] for n in ("vsp", "esrp", "psap-bronx")]
        rec = await asyncio.wait_for(chain.place_call(lat, lon), 15)
        assert rec.status == 200
        await asyncio.sleep(0.2)  # the BYE's transactions end
        vsp, esrp, pp = [await _scrape(s.url) for s in servers]
        for fams in (vsp, esrp, pp):
            assert _v(fams, "ng911_calls_total", outcome="answered") == 1
            assert _v(fams, "ng911_sip_requests_total", dir="in", method="BYE") == 1
            assert _v(fams, "ng911_tls_handshakes_total", kind="full") >= 1
            assert _v(fams, "ng911_tls_handshakes_total", kind="resumed") == 0
        # the VSP's handshakes: one as server (the caller's), one as client (to the ESRP)
        assert _v(vsp, "ng911_tls_handshakes_total", role="server") >= 1
        assert _v(vsp, "ng911_tls_handshakes_total", role="client") >= 1
        # connections per peer, named by the identity its certificate proved
        peers = {lab["peer"] for lab, n in esrp["ng911_connections"] if n}
        assert {"vsp.example", "psap-bronx.esinet.example"} & peers, peers
        # the ESRP's LoST query, timed
        assert _v(esrp, "ng911_lost_query_seconds_count") == 1
        assert _v(esrp, "ng911_lost_query_seconds_sum") > 0
        assert _v(esrp, "ng911_esrp_routed_total", how="lost") == 1
        assert _v(pp, "ng911_queue_length", queue="acd") == 0
        assert "ng911_lost_query_seconds_count" not in vsp  # the VSP asks no LoST here

        urls = [s.url for s in servers]
        rc = await asyncio.to_thread(main, ["stats", *urls])
        out = capsys.readouterr().out
        assert rc == 0
        assert [ln.split()[0] for ln in out.splitlines() if not ln.startswith(" ")] == [
            "vsp",
            "esrp",
            "psap-bronx",
        ]
        assert "lost          1 queries  p50 " in out and " p95 " in out
        assert "queues        acd 0" in out
        assert "tls           full " in out and "connections " in out
        # answers an ECRF repeats byte for byte are parsed once: three more queries for the
        # same spot, in well under a second (at most one `expires` rollover), reuse one
        client = chain.elements["esrp"].lost  # type: ignore[attr-defined]
        before = _v(esrp, "ng911_lost_answers_reused_total")
        for _ in range(3):
            await client.find_service(Point(lat, lon), use_cache=False)
        again = await _scrape(servers[1].url)
        assert _v(again, "ng911_lost_answers_reused_total") >= before + 1
    finally:
        await chain.close()


async def test_workers_each_serve_their_own_metrics(tmp_path):
    loop = asyncio.get_running_loop()
    ctr, _ = await loop.create_datagram_endpoint(Callee, local_addr=(LOCAL, 0))
    cfg = _vsp_config(tmp_path, ctr.get_extra_info("sockname")[1], f'metrics = "{LOCAL}:0"')
    proc, ready = await _start_vsp(cfg, "--workers", "2")
    shared = int(ready["addresses"][0].rsplit(":", 1)[1])
    try:
        urls = ready["metrics"]
        assert len(urls) == 2 and len(set(urls)) == 2
        workers = [(await _scrape(u))["ng911_element_info"][0][0]["worker"] for u in urls]
        assert sorted(workers) == ["0", "1"]
        # calls from one socket: steered by Call-ID, each worker hands the other's over
        tr, ans = await loop.create_datagram_endpoint(Answers, local_addr=(LOCAL, 0))
        try:
            port = tr.get_extra_info("sockname")[1]
            for n in range(16):
                tr.sendto(_request("INVITE", port, n), (LOCAL, shared))
            finals = 0
            while finals < 16:
                resp = parse_message(await asyncio.wait_for(ans.got.get(), 5.0))
                assert not isinstance(resp, Request)
                finals += resp.status >= 200
        finally:
            tr.close()
        fams = [await _scrape(u) for u in urls]
        steered = {
            what: sum(_v(f, "ng911_udp_steering_total", what=what) for f in fams)
            for what in ("handed_over", "taken_over", "dropped", "bad")
        }
        assert steered["handed_over"] == steered["taken_over"] > 0, steered
        assert steered["dropped"] == steered["bad"] == 0, steered
        rc, out, err = await _cli("stats", *urls)
        assert rc == 0, err
        assert "vsp-metrics/w0  (vsp)" in out and "vsp-metrics/w1  (vsp)" in out
        assert out.count("udp steering  handed_over ") == 2 and "dropped 0" in out
    finally:
        err = await _stop(proc)
        ctr.close()
    assert proc.returncode == 0, err.decode()[-2000:]


def test_bad_metrics_values_are_one_line_and_exit_2(tmp_path, capsys):
    cfg = _vsp_config(tmp_path, 9)
    for bad in ("nope", "127.0.0.1:http", "127.0.0.1:70000", "127.0.0.1"):
        assert main(["run", "vsp", "--config", str(cfg), "--metrics", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "metrics: want HOST:PORT" in err, err
    cfg = _vsp_config(tmp_path, 9, 'metrics = "9100"')
    assert main(["run", "vsp", "--config", str(cfg)]) == 2
    assert "metrics: want HOST:PORT" in capsys.readouterr().err
    # ng911 stats: nothing to scrape, an unreadable target, a directory of no bundles
    assert main(["stats"]) == 2
    assert "give metrics URLs" in capsys.readouterr().err
    assert main(["stats", "no-port"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["stats", str(tmp_path / "missing")]) == 2  # not a dir: read as HOST:PORT
    assert main(["stats", str(tmp_path)]) == 2
    assert "no bundle.toml" in capsys.readouterr().err


def test_stats_finds_every_worker_of_bundles_and_config_tables(tmp_path):
    b = tmp_path / "run" / "bundles" / "vsp"
    b.mkdir(parents=True)
    (b / "bundle.toml").write_text(
        '[bundle]\nhost = "vsp"\nrole = "vsp"\n[vsp]\nworkers = 3\nmetrics = "0.0.0.0:9100"\n'
    )
    p = tmp_path / "run" / "bundles" / "psap"
    p.mkdir()
    (p / "bundle.toml").write_text('[bundle]\nhost = "psap"\nrole = "psap"\n[psap]\n')
    assert targets_of([str(tmp_path / "run")]) == [
        ("vsp/w0", "http://127.0.0.1:9100/metrics"),
        ("vsp/w1", "http://127.0.0.1:9101/metrics"),
        ("vsp/w2", "http://127.0.0.1:9102/metrics"),
    ]
    cfg = tmp_path / "chain.toml"
    cfg.write_text('[esrp]\nmetrics = "[::1]:9200"\n[psap.bronx]\nmetrics = "10.0.0.5:9300"\n')
    assert targets_of(["http://x:1/metrics"], str(cfg)) == [
        ("http://x:1/metrics", "http://x:1/metrics"),
        ("esrp", "http://[::1]:9200/metrics"),
        ("psap.bronx", "http://10.0.0.5:9300/metrics"),
    ]


def test_histograms_quantiles_and_outcomes():
    h = Histogram((0.001, 0.01, 0.1))
    for v in (0.0005, 0.002, 0.003, 0.05, 3.0):
        h.observe(v)
    fam = h.family("x_seconds", "x")
    buckets = [(s.labels["le"], s.value) for s in fam.samples if s.name == "x_seconds_bucket"]
    assert buckets == [("0.001", 1), ("0.01", 3), ("0.1", 4), ("+Inf", 5)]
    s = Scrape("x", "u", {"x_bucket": [({"le": le}, v) for le, v in buckets]})
    b = s.buckets("x")
    assert quantile(b, 0.2) == 0.001
    assert 0.001 < quantile(b, 0.5) < 0.01  # interpolated within its bucket
    assert quantile(b, 0.99) == 0.1  # in +Inf: the highest finite bound
    assert quantile([], 0.5) is None
    assert [call_outcome(c) for c in (200, 487, 0, 408, 486, 302, 404, 503)] == [
        "answered",
        "cancelled",
        "timeout",
        "timeout",
        "busy",
        "redirected",
        "failed",
        "failed",
    ]


def test_a_plan_with_metrics_gives_every_sip_element_an_address_stats_finds(tmp_path):
    from ng911.testbed.bundle import export_topology
    from ng911.testbed.plan import ChainOptions
    from ng911.testbed.topology import load_topology

    topo = load_topology()
    written = export_topology(topo, tmp_path / "b", opts=ChainOptions(metrics=True))
    found = dict(targets_of([str(tmp_path / "b")]))
    sip_hosts = {h.name for h in topo.hosts if h.role not in ("lost", "logger")}
    assert set(written) >= sip_hosts
    assert set(found) == sip_hosts  # one worker each (the proxies' default)
    assert all(
        u.startswith("http://10.91.0.") and re.search(r":91\d\d/metrics$", u)
        for u in found.values()
    )
    assert len(set(found.values())) == len(found)  # each its own address


async def test_metrics_endpoint_on_http1_answers_scrapes_and_refuses_the_rest():
    """/metrics runs on `ng911.net.http1` (its limits): a scrape is 200 in Prometheus text
    format, another path 404, another method 405, a head that never ends is cut off."""
    from ng911.node.metrics import start_metrics

    server = await start_metrics(f"{LOCAL}:0")
    host, port = server.running.host, server.running.port

    async def ask(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(data)
            return await asyncio.wait_for(reader.read(1 << 20), 10.0)
        finally:
            writer.close()

    try:
        ok = await ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200") and b"ng911_event_loop_lag_seconds" in ok
        assert b"Content-Type: text/plain; version=" in ok
        assert (await ask(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 404")
        post = await ask(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405") and b"Allow: GET" in post
        huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 40_000
        assert (await ask(huge)).startswith(b"HTTP/1.1 431")
    finally:
        await server.close()
