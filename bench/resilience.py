"""Resilience: the flood ladder. Do emergency calls get through a proxy flooded at 2x and 4x
the rate it holds?

For each proxy — ng911's VSP proxy, ng911's ESRP (with its LoST server, its own process),
and Kamailio 5.6 with `pike` + `ratelimit` (the same run, the same flood) — every element an
`ng911 run` process (`bench/rig.py`) or a `kamailio` process tree:

1. ramp: SIPp plain calls (INVITE, 180, 200, ACK, BYE) at rising rates, 0 failures and no
   lag allowed: the highest rate the proxy holds (`--held vsp=750,...` skips it);
2. at 2x and 4x that rate, a non-emergency flood, while emergency calls run beside it at a
   steady 2 cps.

The flood is SIPp placing ordinary calls (INVITE with SDP to `sip:svc@` a SIPp callee that
answers them, then ACK, BYE) from its own address (127.0.0.2): a call storm from one peer,
the most expensive request a stateful proxy takes (a transaction each, forwarded, record-
routed, a dialog to carry), where an OPTIONS or REGISTER flood is answered without state.
Each 503 it gets back is ACKed and counted (SIPp `-trace_counts`).

The emergency calls come from this process (127.0.0.3): the ~1.5 KB 911 INVITE with
multipart SDP + PIDF-LO (`ng911.sip.samples`), to `urn:service:sos`, to a callee of its own
(another process) that rings and answers; ACK and BYE follow the Record-Route set. Each call
is timed with `time.perf_counter()` here (SIPp's timers tick in 4 ms steps, ANCHORS.md):
setup delay = INVITE → 180 (RFC 6076 Session Request Delay; → 200 when no 180 came). A call
completes when its INVITE and its BYE got 200; it has 10 s.

Per rung: emergency calls completed (goal >= 99 % at 4x), 503s the flood got, p95 setup
delay, the proxy's peak and after-flood RSS (all its processes, sampled every 0.2 s), time to
recover after the flood stops (until a probe emergency call completes in under 1 s; until
RSS is back within 20 % of its pre-flood value).

Kamailio's configuration: emergency requests (`urn:service:sos*`, or `Resource-Priority:
esnet.*`) and in-dialog requests skip both limits; every other initial request meets `pike`
(per source address: more than `2 x held` requests in 2 s blocks the source) and then
`ratelimit` (TAILDROP pipe at Kamailio's held rate): over either, `503` + `Retry-After: 5`.
Kamailio has no LoST here: its row is the VSP/ESRP's proxy role, routing sos to the callee.

    .venv/bin/python bench/resilience.py            # ~8-10 min
    .venv/bin/python bench/resilience.py --quick    # ~2-3 min

Prints a table, writes bench/results/resilience.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadgen import HOLD, Callee, in_dialog
from ng911.interop.kamailio import Kamailio, flood_limited_cfg, missing_reason
from ng911.interop.procs import stop
from ng911.interop.sipp import SIPP, SippUas, read_stat, sipp_args, stat_count
from rig import LOCAL, Element, free_port, opt, percentile, rss_mb, start_proxy, write_result

FLOOD_SRC = "127.0.0.2"  # the flooding peer
SOS_SRC = "127.0.0.3"  # the emergency caller (this process)
NG911_LADDER = [200, 300, 400, 500, 600, 750, 900, 1000, 1250, 1500, 1750, 2000, 2500]
SOS_RATE = 2.0  # emergency calls per second, beside the flood
CALL_TIMEOUT = 10.0  # s an emergency call may take to complete


# --------------------------------------------------------------------------- SIPp


def sipp_flood(
    proxy_port: int, uas_port: int, rate: int, calls: int, workdir: Path, tag: str
) -> subprocess.Popen[bytes]:
    cmd = sipp_args(
        "uac_flood.xml", remote=f"{LOCAL}:{proxy_port}", local=FLOOD_SRC, port=free_port(),
        calls=calls, keys={"uas": f"{LOCAL}:{uas_port}"},
        extra=["-r", str(rate), "-l", str(max(200, rate * 4)), "-timeout", "120s",
               "-max_socket", "4096", "-trace_counts", "-fd", "1",
               "-trace_stat", "-stf", str(workdir / f"{tag}-stat.csv")],
    )  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)


def read_counts(workdir: Path) -> dict[str, int]:
    """SIPp's `-trace_counts` CSV (last row): INVITE 503s and 200s, calls ok/failed."""
    out = {"503": 0, "200": 0}
    for path in workdir.glob("uac_flood_*_counts.csv"):  # SCENARIO_PID_counts.csv
        rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
        if len(rows) < 2:
            continue
        last = dict(zip(rows[0], rows[-1], strict=False))
        for k, v in last.items():
            parts = k.split("_")
            if (
                len(parts) == 3
                and parts[2] == "Recv"
                and parts[1] in out
                and parts[0] in ("3", "4", "5")
            ):
                try:
                    out[parts[1]] += int(v or 0)
                except ValueError:
                    pass
        path.unlink()
    return out


def sipp_stat(path: Path) -> dict[str, int]:
    rows = read_stat(path)
    if not rows:
        return {}
    last = rows[-1]
    target = stat_count(last, "OutgoingCall(C)")
    # s until SIPp had created every call (rows every second, -fd 1)
    created = next(
        (i for i, row in enumerate(rows, 1) if stat_count(row, "OutgoingCall(C)") >= target), 0
    )
    return {
        "created": target,
        "created_in_s": created,
        "ok": stat_count(last, "SuccessfulCall(C)"),
        "failed": stat_count(last, "FailedCall(C)"),
        "retrans": stat_count(last, "Retransmissions(C)"),
    }


# --------------------------------------------------------------------------- emergency calls


def _sos_invite(port: int, cid: str, tag: str, branch: str) -> bytes:
    from ng911.sip.samples import emergency_invite

    t = emergency_invite().decode()
    t = t.replace("192.0.2.10:5060", f"{SOS_SRC}:{port}").replace("192.0.2.10", SOS_SRC)
    t = t.replace("z9hG4bK776asdhds", branch).replace("a84b4c76e66710@" + SOS_SRC, cid)
    t = t.replace("tag=1928301774", f"tag={tag}")
    head, _, body = t.partition("\r\n\r\n")  # the body's addresses changed: its length too
    head = re.sub(r"Content-Length: \d+", f"Content-Length: {len(body.encode())}", head)
    return (head + "\r\n\r\n" + body).encode()


class EmergencyUac(asyncio.DatagramProtocol):
    """Places 911 calls over UDP to one proxy and times them (perf_counter)."""

    def __init__(self, proxy: tuple[str, int]) -> None:
        self.proxy = proxy
        self.calls: dict[str, dict[str, Any]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.n = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    async def call(self) -> dict[str, Any]:
        """One call: INVITE (retransmitted per RFC 3261 §17.1.1.2), ACK, hold, BYE."""
        from ng911.sip.message import Response

        self.n += 1
        cid = f"sos{self.n}-{os.getpid()}-{os.urandom(4).hex()}"
        st: dict[str, Any] = {
            "t0": time.perf_counter(),
            "fut": asyncio.get_running_loop().create_future(),
            "status": None,
        }
        self.calls[cid] = st
        inv = _sos_invite(self.port, cid, f"t{self.n}", f"z9hG4bK{os.urandom(6).hex()}")
        assert self.transport is not None
        try:
            resp = await self._transact(st, inv, "INVITE")
            if not isinstance(resp, Response) or resp.status >= 300:
                return {
                    "ok": False,
                    "status": getattr(resp, "status", None),
                    "setup": st.get("setup"),
                }
            self.transport.sendto(self._in_dialog("ACK", 314159, resp), self.proxy)
            await asyncio.sleep(HOLD)
            st["fut"] = asyncio.get_running_loop().create_future()
            st["bye"] = True
            r2 = await self._transact(st, self._in_dialog("BYE", 314160, resp), "BYE")
            ok = isinstance(r2, Response) and 200 <= r2.status < 300
            return {"ok": ok, "status": getattr(r2, "status", None), "setup": st.get("setup"),
                    "total": time.perf_counter() - st["t0"]}  # fmt: skip
        finally:
            self.calls.pop(cid, None)

    async def _transact(self, st: dict[str, Any], data: bytes, method: str) -> Any:
        assert self.transport is not None
        deadline = st["t0"] + CALL_TIMEOUT
        interval = 0.5
        while True:
            self.transport.sendto(data, self.proxy)
            wait = min(interval, deadline - time.perf_counter())
            if wait <= 0:
                return None
            try:
                return await asyncio.wait_for(asyncio.shield(st["fut"]), wait)
            except TimeoutError:
                if st.get("provisional") and method == "INVITE":
                    interval = deadline  # a provisional stops INVITE retransmissions
                else:
                    interval = min(interval * 2, 4.0)

    def _in_dialog(self, method: str, seq: int, resp: Any) -> bytes:
        return in_dialog(method, seq, resp, f"UDP {SOS_SRC}:{self.port}", "urn:service:sos")

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        from ng911.sip.message import Response
        from ng911.sip.parse import parse_message

        try:
            msg = parse_message(data)
        except Exception:
            return
        if not isinstance(msg, Response):
            return
        st = self.calls.get(msg.call_id)
        if st is None:
            return
        is_bye = msg.cseq.method == "BYE"
        if is_bye != bool(st.get("bye")):
            return
        now = time.perf_counter()
        if not is_bye and msg.status in (180, 183) and "setup" not in st:
            st["setup"] = now - st["t0"]
        if msg.status < 200:
            st["provisional"] = True
            return
        if not is_bye and "setup" not in st and msg.status < 300:
            st["setup"] = now - st["t0"]
        if not st["fut"].done():
            st["fut"].set_result(msg)


async def emergency_calls(
    proxy_port: int, seconds: float, rate: float = SOS_RATE
) -> list[dict[str, Any]]:
    """`rate` calls per second for `seconds`; every call's outcome."""
    loop = asyncio.get_running_loop()
    tr, uac = await loop.create_datagram_endpoint(
        lambda: EmergencyUac((LOCAL, proxy_port)), local_addr=(SOS_SRC, 0)
    )
    try:
        tasks = []
        t0 = time.perf_counter()
        for i in range(max(1, int(seconds * rate))):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            tasks.append(asyncio.ensure_future(uac.call()))
        return list(await asyncio.gather(*tasks))
    finally:
        tr.close()


async def probe_until_recovered(proxy_port: int, limit: float) -> float | None:
    """Seconds until an emergency call completes with setup under 1 s (None: not in `limit`)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        res = await emergency_calls(proxy_port, 0.5, 2.0)
        if res and res[0]["ok"] and (res[0]["setup"] or 9) < 1.0:
            return round(time.perf_counter() - t0, 2)
        await asyncio.sleep(0.25)
    return None


# --------------------------------------------------------------------------- the proxies


class Proxy:
    name = "proxy"
    port = 0

    def start(self, sos_port: int, workdir: Path) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def rss_mb(self) -> float:
        return round(sum(r for p in self.pids() if (r := rss_mb(p)) is not None), 1)

    def stop(self) -> None:
        raise NotImplementedError

    def set_limit(self, held: int) -> None:
        """Kamailio only: its limits follow the rate it holds."""


class Ng911Proxy(Proxy):
    """The VSP, or the ESRP with its LoST server (`rig.start_proxy`). The per-source limit
    is off: the flood is one SIPp source, which it would cut before overload control had
    anything to do; the ladder measures overload control alone, the hard case
    (tests/resilience/test_flood.py has both)."""

    def __init__(self, kind: str) -> None:
        self.name = f"ng911-{kind}"
        self.kind = kind
        self.els: list[Element] = []

    def start(self, sos_port: int, workdir: Path) -> None:
        self.port = free_port()
        listeners = [{"transport": "udp", "host": LOCAL, "port": self.port}]
        self.els = start_proxy(self.kind, workdir, f"sip:{LOCAL}:{sos_port}", listeners)

    def pids(self) -> list[int]:
        return self.els[-1].pids() if self.els else []  # the proxy (not its LoST server)

    def stop(self) -> None:
        for el in reversed(self.els):
            el.stop()
        self.els = []


class KamailioProxy(Proxy):
    name = "kamailio+pike+rl"

    def __init__(self) -> None:
        self.k: Kamailio | None = None
        self.limit = 100000  # no limit while the ramp measures what it holds
        self.sos_port = 0
        self.workdir = Path(".")

    def set_limit(self, held: int) -> None:
        self.limit = held
        self.stop()
        self.start(self.sos_port, self.workdir)

    def start(self, sos_port: int, workdir: Path) -> None:
        self.sos_port, self.workdir = sos_port, workdir
        why = missing_reason("pike", "ratelimit")
        if why:
            raise RuntimeError(f"{why}: `make peers`")
        self.port = free_port()
        # requests per call from one source: INVITE only (ACK/BYE are in-dialog), so the
        # pike density is in calls: twice the held rate over its 2 s unit
        cfg = flood_limited_cfg(
            port=self.port, sos=f"sip:{LOCAL}:{sos_port}", limit=self.limit, pike=self.limit * 4
        )
        self.k = Kamailio(cfg, self.port, "udp", workdir=workdir).start()

    def pids(self) -> list[int]:
        return self.k.pids() if self.k is not None else []

    def stop(self) -> None:
        if self.k is not None:
            self.k.stop()
            self.k = None


# --------------------------------------------------------------------------- rungs


@dataclass
class Rung:
    proxy: str
    factor: float
    held_cps: int
    flood_cps: int
    flood_calls: int = 0
    flood_ok: int = 0
    flood_failed: int = 0
    flood_achieved_cps: float = 0.0  # calls SIPp created / the seconds it took (its own limit)
    flood_503: int = 0
    sos_calls: int = 0
    sos_ok: int = 0
    sos_completed_pct: float = 0.0
    sos_statuses: dict[str, int] = field(default_factory=dict)
    setup_p50_ms: float | None = None
    setup_p95_ms: float | None = None
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    recover_call_s: float | None = None
    recover_rss_s: float | None = None


class RssSampler(threading.Thread):
    def __init__(self, proxy: Proxy) -> None:
        super().__init__(daemon=True)
        self.proxy, self.peak, self.stopped = proxy, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, self.proxy.rss_mb())
            self.stopped.wait(0.2)


def ramp(proxy: Proxy, uas: SippUas, rates: Sequence[int], seconds: float, workdir: Path) -> int:
    """The highest rate of `rates` at which every flood-style call succeeds in time."""
    held = 0
    for rate in rates:
        calls = max(1, int(rate * seconds))
        t0 = time.monotonic()
        proc = sipp_flood(proxy.port, uas.port, rate, calls, workdir, f"ramp-{proxy.name}-{rate}")
        try:
            proc.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            stop(proc, signal.SIGKILL)
        wall = time.monotonic() - t0
        st = sipp_stat(workdir / f"ramp-{proxy.name}-{rate}-stat.csv")
        counts = read_counts(workdir)
        ok = proc.returncode == 0 and st.get("ok", 0) >= calls and not counts["503"]
        ok = ok and wall <= seconds + HOLD + 0.6  # no backlog: the calls end with the step
        print(f"  ramp {proxy.name:<17} {rate:>5} cps: {st.get('ok', 0)}/{calls} ok, "
              f"{counts['503']} x 503, {wall:.1f} s  {'ok' if ok else 'FAIL'}",
              flush=True)  # fmt: skip
        if not ok:
            break
        held = rate
        time.sleep(1.0)
    return held


def rung(
    proxy: Proxy,
    uas: SippUas,
    held: int,
    factor: float,
    seconds: float,
    recover: float,
    workdir: Path,
    rss_base: float,
) -> Rung:
    rate = int(held * factor)
    r = Rung(proxy.name, factor, held, rate)
    r.rss_before_mb = rss_base  # before the first flood (after the ramp): what "back" means
    sampler = RssSampler(proxy)
    sampler.start()
    r.flood_calls = max(1, int(rate * seconds))
    tag = f"flood-{proxy.name}-{factor}"
    flood = sipp_flood(proxy.port, uas.port, rate, r.flood_calls, workdir, tag)
    time.sleep(0.5)  # the flood is on
    sos = asyncio.run(emergency_calls(proxy.port, seconds - 0.5))
    # the flood's calls end by themselves; what is still hanging after 5 s more is cut
    try:
        flood.wait(6)
    except subprocess.TimeoutExpired:
        stop(flood, signal.SIGUSR1)  # SIPp: stop placing calls, dump, exit
    t_end = time.perf_counter()
    r.recover_call_s = asyncio.run(probe_until_recovered(proxy.port, recover))
    limit = r.rss_before_mb * 1.2
    while time.perf_counter() - t_end < recover:
        if proxy.rss_mb() <= limit:
            r.recover_rss_s = round(time.perf_counter() - t_end, 2)
            break
        time.sleep(0.2)
    sampler.stopped.set()
    sampler.join()
    r.rss_peak_mb = sampler.peak
    r.rss_after_mb = proxy.rss_mb()
    st = sipp_stat(workdir / f"{tag}-stat.csv")
    r.flood_ok, r.flood_failed = st.get("ok", 0), st.get("failed", 0)
    if st.get("created_in_s"):
        r.flood_achieved_cps = round(st["created"] / max(seconds, st["created_in_s"]))
    r.flood_503 = read_counts(workdir)["503"]
    r.sos_calls = len(sos)
    r.sos_ok = sum(1 for c in sos if c["ok"])
    r.sos_completed_pct = round(100 * r.sos_ok / max(1, r.sos_calls), 1)
    for c in sos:
        if not c["ok"]:
            k = str(c["status"] or "timeout")
            r.sos_statuses[k] = r.sos_statuses.get(k, 0) + 1
    setups = [c["setup"] for c in sos if c["setup"] is not None]
    p50, p95 = percentile(setups, 50), percentile(setups, 95)
    r.setup_p50_ms = None if p50 is None else round(p50 * 1000, 2)
    r.setup_p95_ms = None if p95 is None else round(p95 * 1000, 2)
    print("  " + fmt_rung(r), flush=True)
    return r


def fmt_rung(r: Rung) -> str:
    f = opt
    return (
        f"{r.proxy:<17} {r.factor:>3.0f}x {r.flood_cps:>6} {r.flood_achieved_cps:>6.0f} "
        f"{r.sos_ok:>4}/{r.sos_calls:<4} "
        f"{r.sos_completed_pct:>6.1f} {r.flood_503:>7} {f(r.setup_p50_ms, '.1f'):>8} "
        f"{f(r.setup_p95_ms, '.1f'):>8} {r.rss_before_mb:>7.0f} {r.rss_peak_mb:>7.0f} "
        f"{r.rss_after_mb:>7.0f} {f(r.recover_call_s, '.1f'):>8} {f(r.recover_rss_s, '.1f'):>8}"
    )


HEADER = (
    f"{'proxy':<17} {'x':>4} {'flood':>6} {'sent':>6} {'sos ok':>9} {'sos %':>6} {'503s':>7} "
    f"{'p50 ms':>8} {'p95 ms':>8} {'RSS0':>7} {'peak':>7} {'after':>7} {'rec call':>8} "
    f"{'rec RSS':>8}"
)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="short ramp and floods (~2-3 min)")
    ap.add_argument(
        "--proxies", default="vsp,esrp,kamailio", help="comma list of vsp,esrp,kamailio"
    )
    ap.add_argument("--held", default="", help="skip the ramp: e.g. vsp=750,esrp=500,kamailio=2000")
    ap.add_argument("--factors", default="2,4", help="flood rates as multiples of the held rate")
    ap.add_argument(
        "--flood-seconds", type=float, help="length of each flood (default 15; quick 6)"
    )
    ap.add_argument("--out", type=Path, help="default bench/results/resilience.json")
    args = ap.parse_args(argv)
    if SIPP is None:
        print(
            "resilience: sipp not installed (Debian package sip-tester); `make peers`",
            file=sys.stderr,
        )
        return 2
    for addr in (FLOOD_SRC, SOS_SRC):  # both are loopback (127/8), but check the kernel agrees
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((addr, 0))
    seconds = args.flood_seconds or (6.0 if args.quick else 15.0)
    recover = 10.0 if args.quick else 30.0
    ramp_s = 2.0 if args.quick else 3.0
    held_flags = dict(kv.split("=") for kv in args.held.split(",") if "=" in kv)
    factors = [float(x) for x in args.factors.split(",") if x]
    ladders = {
        "vsp": [400, 800, 1200, 1600, 2000, 2400] if args.quick else NG911_LADDER,
        "esrp": [400, 800, 1200, 1600, 2000, 2400] if args.quick else NG911_LADDER,
        "kamailio": [2000, 3000, 4000]
        if args.quick
        else [1000, 2000, 2500, 3000, 3500, 4000, 5000],
    }
    t_start = time.monotonic()
    rungs: list[Rung] = []
    held_rates: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="ng911-resilience-") as tmp:
        workdir = Path(tmp)
        uas = SippUas(workdir, scenario="uas_flood.xml")
        sos = Callee(free_port())
        try:
            for key in [p for p in args.proxies.split(",") if p]:
                proxy: Proxy = KamailioProxy() if key == "kamailio" else Ng911Proxy(key)
                pdir = workdir / key
                pdir.mkdir()
                try:
                    proxy.start(sos.port, pdir)
                    if key in held_flags:
                        held = int(held_flags[key])
                    else:
                        held = ramp(proxy, uas, ladders[key], ramp_s, pdir)
                    held = max(held, 100)
                    held_rates[key] = held
                    proxy.set_limit(held)
                    time.sleep(1.0)
                    rss_base = proxy.rss_mb()
                    for fac in factors:
                        rungs.append(rung(proxy, uas, held, fac, seconds, recover, pdir, rss_base))
                finally:
                    proxy.stop()
        finally:
            sos.stop()
            uas.stop()
    elapsed = time.monotonic() - t_start
    print()
    print(HEADER)
    for r in rungs:
        print(fmt_rung(r))
    result = {
        "bench": "resilience",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": args.quick,
        "flood_seconds": seconds,
        "sos_rate_cps": SOS_RATE,
        "held_cps": held_rates,
        "flood": "SIPp plain calls (INVITE+SDP, ACK, BYE; 503s ACKed) from 127.0.0.2 to a SIPp "
        "callee through the proxy, at factor x held_cps",
        "emergency": "911 INVITE with multipart SDP + PIDF-LO from 127.0.0.3 at 2 cps, "
        "setup = INVITE->180 (perf_counter), completed = 200 to INVITE and to BYE within 10 s",
        "kamailio": "sos and in-dialog requests bypass pike (4 x held per 2 s per source) and "
        "ratelimit (TAILDROP at held cps); over either: 503 + Retry-After: 5",
        "goal": {"sos_completed_pct_at_4x": 99},
        "rungs": [asdict(r) for r in rungs],
        "elapsed_s": round(elapsed, 1),
    }
    write_result("resilience", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
