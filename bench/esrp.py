"""CPU per emergency call of ng911's ESRP (LoST asked per call), without SIPp: the micro-bench.

Why: `bench/load.py`'s "ESRP (LoST per call)" row says how many calls a second the ESRP
holds next to Kamailio, but its figures move with SIPp's CPU, the LoST server's and the
kernel's scheduling. This one isolates the ESRP, as `bench/proxy.py` does the VSP. A call
is `uac_emergency.xml`'s: a 1.5 KB 911 INVITE (`urn:service:sos`, Geolocation by `cid:`, a
multipart body with SDP and a PIDF-LO point in Manhattan), then 180/200/ACK/BYE/200, one call
at a time in lock-step, pre-built INVITEs, logging off, `gc.freeze()` after start-up as
`ng911 run` does, on the loop `ng911 run` picks (uvloop when installed). The ESRP is built
as `bench/rig.py` `start_proxy` configures it: `lost_cache = false` (every call asks LoST),
its LoST server `ng911 run lost` (embedded store, the NYC boroughs, every borough mapped to
the "PSAP") in a CHILD process on loopback HTTP, so the server's CPU is never counted here.
PSAP pings and i3 state subscriptions are off: nobody answers OPTIONS or SUBSCRIBE here.

Mode `inproc` (the one mode): the ESRP in this process, fed through its UDP endpoint's
`datagram_received`, sending into a list instead of a socket. The figure is this thread's
CPU time (`time.thread_time`) from each of the 6 datagrams the peers send until the ESRP has
sent what that datagram asks for (the INVITE onward, the 180 back...), the event loop
included: on uvloop the endpoint handles a wake-up's datagrams in a callback just after, and
the INVITE waits for LoST. That covers intake, the PIDF-LO read, the LoST request built,
sent and its answer read over a keep-alive HTTP/1.1 connection (the kernel's share of that
TCP exchange is in it, shown apart as `sys`; waiting for the server costs no CPU), policy,
forwarding, and the SIP work of all 7 messages (UDP sends are not syscalls here). The peers'
share (building answers, finding datagrams) is outside.

Instruction counts (repeatable on a busy machine): `--callgrind 40,120` runs this bench
twice under `valgrind --tool=callgrind` (the LoST child runs natively, untraced) with 40 and
120 calls and reports (I(120) - I(40)) / 80 instructions per call: start-up cancels out; the
peers' share (a few %) is included, the same on both sides of an A/B.

Run: .venv/bin/python bench/esrp.py [--calls N] [--rounds R] [--profile] [--loop auto|asyncio]
     .venv/bin/python bench/esrp.py --callgrind 40,120
Env: NG911_BENCH_GC as in bench/proxy.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from ng911 import compiled
from ng911.sip import samples
from proxy import (
    IN_DIALOG,
    InProcPeers,
    answer,
    call_number,
    record_route,
    settle_gc,
    summary,
)
from rig import (
    BOROUGHS,
    BOUNDARIES,
    LOCAL,
    Element,
    callgrind_per_call,
    free_port,
    write_result,
)

HERE = Path(__file__).resolve().parent

# uac_emergency.xml's INVITE (the body is ng911.sip.samples', as the scenario's)
BODY = samples.emergency_body().decode()
INVITE = (
    "INVITE urn:service:sos SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {uac};branch=z9hG4bK-{n}-1;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Caller" <sip:+12125550123@vsp.example>;tag=uac{n}\r\n'
    "To: <urn:service:sos>\r\n"
    "Call-ID: bench-{n}@{uac}\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:+12125550123@{uac};transport=udp>\r\n"
    f"Geolocation: <cid:{samples.LOCATION_CID}>\r\n"
    "Geolocation-Routing: yes\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n"
    "Supported: geolocation\r\n"
    "User-Agent: sipp-ng911-interop\r\n"
    f"Content-Type: multipart/mixed;boundary={samples.BOUNDARY}\r\n"
    f"Content-Length: {len(BODY.encode())}\r\n\r\n{BODY}"
)


def start_lost(workdir: Path, psap: str) -> Element:
    """`ng911 run lost` as `rig.start_proxy` starts it: every borough → `psap`."""
    uris = {b: [psap] for b in BOROUGHS}
    cfg = {"host": LOCAL, "port": free_port(), "boundaries": str(BOUNDARIES), "uris": uris}
    return Element("lost", "lost", cfg, workdir).start()


def make_esrp(lost_url: str, psap: str) -> Any:
    from ng911.elements.config import EsrpConfig, ListenerConfig, OverloadConfig, StateConfig
    from ng911.node.build import build_element

    cfg = EsrpConfig(
        name="esrp",
        listeners=(ListenerConfig("udp", LOCAL, 0),),
        overload=OverloadConfig(source_rate=0),
        lost_url=lost_url,
        lost_cache=False,
        default_route=psap,
        ping_interval=0.0,
        ping_interval_down=0.0,
        state=StateConfig(subscribe=False),
    )
    return build_element("esrp", cfg, log_keep=0)


class _Capture:
    """Stands in for the ESRP's datagram transport: keeps what it sends, wakes a waiter."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.waiter: asyncio.Future[None] | None = None

    def is_closing(self) -> bool:
        return False

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Peers(InProcPeers):
    """Caller and callee around the in-process ESRP (lock-step, one call at a time): the
    VSP bench's, with a capture that wakes whoever awaits the ESRP's next datagram."""

    def __init__(self, endpoint: Any, uas_port: int) -> None:
        super().__init__(endpoint, uas_port)
        self.capture: _Capture = _Capture()  # type: ignore[assignment]
        endpoint.transport = self.capture
        self.cpu = 0.0  # seconds of this thread inside the ESRP

    def find(self, who: str, want: bytes, n: int) -> bytes | None:
        addr, sent = self.addrs[who], self.capture.sent
        for i, (data, to) in enumerate(sent):
            if to == addr and data.startswith(want) and call_number(data) == n:
                del sent[i]
                return data
        return None

    async def step(self, who: str, data: bytes, to: str, want: str, n: int) -> bytes:
        """`who` sends `data`; the ESRP's CPU until it sends `want` of call `n` to `to`.

        Awaited, not called: on uvloop the endpoint gathers the datagrams of a wake-up and
        handles them in a callback just after (`UdpEndpoint._flush`), and an INVITE waits for
        LoST. The loop's own work in between is the ESRP's (as it is in `ng911 run`)."""
        loop = asyncio.get_running_loop()
        prefix = want.encode()
        t0 = time.thread_time()
        self.ep.datagram_received(data, self.addrs[who])
        deadline = loop.time() + 5.0
        while (out := self.find(to, prefix, n)) is None:
            if loop.time() > deadline:
                raise RuntimeError(f"call {n}: the ESRP sent no {want} to the {to} in 5 s")
            # a timer wakes the waiter at the deadline (the loop above then raises): not
            # `asyncio.wait_for`, whose task machinery is counted here as the peers' share
            waiter = self.capture.waiter = loop.create_future()
            timer = loop.call_at(deadline, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self.capture.waiter = None
        self.cpu += time.thread_time() - t0
        return out

    def take(self, who: str, want: str, n: int) -> bytes:
        data = self.find(who, want.encode(), n)
        if data is None:
            raise RuntimeError(f"the ESRP sent no {want} of call {n} to the {who}")
        return data

    async def call(self, invite: bytes, n: int) -> None:
        inv = await self.step("uac", invite, "uas", "INVITE", n)
        self.take("uac", "SIP/2.0 100", n)
        ringing = answer(inv, "180 Ringing", tag=f"uas{n}")
        await self.step("uas", ringing, "uac", "SIP/2.0 180", n)
        contact = f"sip:bench@{self.uas_hp}"
        ok = answer(inv, "200 OK", tag=f"uas{n}", contact=contact)
        route = record_route(await self.step("uas", ok, "uac", "SIP/2.0 200", n))
        fs = {"uas": self.uas_hp, "uac": self.uac_hp, "n": n, "route": route}
        ack = IN_DIALOG.format(**fs, method="ACK", b="ack", cseq=1).encode()
        await self.step("uac", ack, "uas", "ACK", n)
        bye = IN_DIALOG.format(**fs, method="BYE", b="bye", cseq=2).encode()
        bye_out = await self.step("uac", bye, "uas", "BYE", n)
        await self.step("uas", answer(bye_out, "200 OK", tag=f"uas{n}"), "uac", "SIP/2.0 200", n)

    def invites(self, ns: range) -> list[bytes]:
        return [INVITE.format(uac=self.uac_hp, n=n).encode() for n in ns]


def run_inproc(
    calls: int, rounds: int, warmup: int, profile: str | None, loop: str
) -> list[dict[str, float]]:
    """The ESRP in this process, its LoST server in a child; CPU of the ESRP per call."""
    import cProfile
    import gc

    from ng911.node.loop import run

    uas_port = 40002
    psap = f"sip:{LOCAL}:{uas_port}"

    async def main(lost_url: str) -> list[dict[str, float]]:
        esrp = make_esrp(lost_url, psap)
        await esrp.start()
        await asyncio.sleep(0.05)  # uvloop calls the endpoint's connection_made soon after
        peers = Peers(esrp.transport._listeners[0].udp, uas_port)
        try:
            for i, inv in enumerate(peers.invites(range(10_000_000, 10_000_000 + warmup))):
                await peers.call(inv, 10_000_000 + i)
            settle_gc()
            out: list[dict[str, float]] = []
            # CPU time, not wall: a wall-clock profile charges the LoST round trip (and being
            # descheduled when the write wakes the server) to whoever awaits it
            prof = cProfile.Profile(time.thread_time) if profile else None
            n = 0
            for _ in range(rounds):
                invs = peers.invites(range(n, n + calls))
                peers.cpu = 0.0
                if prof is not None:
                    prof.enable()
                r0 = resource.getrusage(resource.RUSAGE_THREAD)
                t0, w0 = time.thread_time(), time.perf_counter()
                for inv in invs:
                    await peers.call(inv, n)
                    n += 1
                t1, w1 = time.thread_time(), time.perf_counter()
                r1 = resource.getrusage(resource.RUSAGE_THREAD)
                if prof is not None:
                    prof.disable()
                out.append(
                    {
                        "cpu_us_per_call": peers.cpu * 1e6 / calls,
                        "with_peers_us_per_call": (t1 - t0) * 1e6 / calls,
                        "wall_us_per_call": (w1 - w0) * 1e6 / calls,
                        # the kernel's share (this thread, peers included): the LoST
                        # request's TCP write and read over loopback, mostly
                        "sys_us_per_call": (r1.ru_stime - r0.ru_stime) * 1e6 / calls,
                    }
                )
            if prof is not None and profile:
                prof.dump_stats(profile)
            routed = dict(esrp.routed)
            if routed["lost"] < warmup + calls * rounds:
                raise RuntimeError(f"not every call was routed by LoST: {routed}")
        finally:
            gc.enable()
            peers.ep.transport = peers.real
            await esrp.close()
        return out

    with tempfile.TemporaryDirectory(prefix="ng911-esrp-bench-") as tmp:
        lost = start_lost(Path(tmp), psap)
        try:
            return run(main(lost.ready["url"]), loop)
        finally:
            lost.stop()


def callgrind(counts: tuple[int, int], loop: str) -> dict[str, float]:
    """Instructions per call: this bench under callgrind with two call counts, differenced."""
    per_call = callgrind_per_call(
        [__file__, "--rounds", "1", "--warmup", "20", "--loop", loop, "--no-write"], counts
    )
    print(f"callgrind: {per_call:,.0f} instructions per call (ESRP + peers, start-up cancelled)")
    return {"instructions_per_call": round(per_call), "calls": list(counts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--calls", type=int, default=1000, help="calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=200, help="calls before the rounds")
    ap.add_argument("--loop", default="auto", help="auto (uvloop when installed) or asyncio")
    ap.add_argument("--profile", action="store_true", help="cProfile the rounds")
    ap.add_argument("--callgrind", help="N1,N2: instructions per call under callgrind")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON result")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/esrp.json)")
    args = ap.parse_args()
    res: dict[str, Any] = {
        "bench": "esrp",
        "build": compiled.build(),
        "loop": args.loop,
        "messages_per_call": 7,
        "lost": "ng911 run lost (child process, embedded store), lost_cache = false",
        "gc": os.environ.get("NG911_BENCH_GC", "on (frozen after start-up)"),
    }
    if args.callgrind:
        a, b = (int(x) for x in args.callgrind.split(","))
        res["callgrind"] = callgrind((a, b), args.loop)
        if not args.no_write:
            write_result("esrp-callgrind", res, Path(args.out) if args.out else None)
        return
    res["calls_per_round"] = args.calls
    prof = str(HERE / "results" / "esrp.prof") if args.profile else None
    rounds = run_inproc(args.calls, args.rounds, args.warmup, prof, args.loop)
    print(
        f"{'round':>5} {'ESRP CPU µs/call':>17} {'with peers':>11} {'of it sys':>10}"
        f" {'wall µs/call':>13}"
    )
    for i, r in enumerate(rounds):
        print(
            f"{i:>5} {r['cpu_us_per_call']:>17.1f} {r['with_peers_us_per_call']:>11.1f} "
            f"{r['sys_us_per_call']:>10.1f} {r['wall_us_per_call']:>13.1f}"
        )
    res["inproc"] = {"rounds": rounds, **summary(rounds)}
    print(
        f"Esrp, 7 messages/call, LoST asked per call: best {res['inproc']['best_cpu_us_per_call']}"
        f" µs, median {res['inproc']['median_cpu_us_per_call']} µs of CPU per call"
    )
    if prof is not None:
        import pstats

        st = pstats.Stats(prof)
        st.sort_stats("tottime").print_stats(35)
        st.sort_stats("cumulative").print_stats(45)
    elif not args.no_write:
        write_result("esrp", res, Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
