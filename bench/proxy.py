"""CPU per proxied call of ng911's VSP proxy, without SIPp: the repeatable micro-benchmark.

Why: `bench/load.py` says how many calls per second the proxy holds next to Kamailio, but
its figures move with SIPp's own CPU and the kernel's scheduling. This one isolates the
proxy. A call is the 7 messages INVITE/100/180/200/ACK/BYE/200 through `VspProxy`
(INVITE in → 100 back and INVITE out; 180 and 200 in and out; ACK in and out; BYE in and
out; its 200 in and out), one call at a time in lock-step, with pre-built datagrams, logging
off and `gc.freeze()` after start-up as `ng911 run` does. Three modes:

- `inproc`: the proxy in this process, fed through its UDP endpoint's `datagram_received`
  and sending into a list instead of a socket: parse → transport (§18.2.1 Via stamping) →
  transactions → `Proxy` → serialise, everything but the kernel. The figure is this
  thread's CPU time inside `datagram_received` per call (the peers' share left out).
- `udp`: the proxy alone in a child process on loopback UDP, this process playing caller
  and callee with non-blocking sockets; the child's CPU (`/proc/PID/task/*/schedstat`, which
  sees short bursts) per call: adds the kernel's send/receive and one event-loop wake-up
  per datagram, which a lightly loaded proxy pays;
- `udp-burst`: the same with `--burst` calls (20) moving step by step together (20 INVITEs,
  then their 180s, ...): what a loaded proxy sees, several datagrams per wake-up.

Kamailio spends ~250 µs of CPU per call in total (ANCHORS.md). The machine may be shared
with other work: compare best/median rounds of runs made minutes apart.

Run: .venv/bin/python bench/proxy.py [--calls N] [--rounds R] [--mode inproc,udp,udp-burst]
     [--burst N] [--profile]
Env: NG911_BENCH_GC=off disables the cyclic collector (to tell its share apart),
     NG911_BENCH_GC=threshold=A,B,C sets its thresholds; NG911_BENCH_SRC=DIR runs the proxy
     from another source tree (a before/after comparison; with PYTHONPATH=DIR for inproc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ng911 import compiled
from rig import LOCAL, callgrind_per_call, cpu_seconds

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- the proxy


def make_proxy(uas_port: int) -> Any:
    from ng911.elements.config import ListenerConfig, OverloadConfig, VspConfig
    from ng911.elements.vsp import VspProxy

    cfg = VspConfig(
        name="vsp",
        fqdn="proxy.vsp.example",
        listeners=(ListenerConfig("udp", LOCAL, 0),),
        esrp=f"sip:{LOCAL}:{uas_port}",
        # the caller and callee are known peers (as an ESRP's VSPs are): thousands of calls
        # a second from one address would otherwise meet the per-source limit
        overload=OverloadConfig(trusted=(f"{LOCAL}/32",)),
    )
    return VspProxy(cfg, log_keep=0)


def settle_gc() -> None:
    import gc

    gc.collect()
    gc.freeze()
    mode = os.environ.get("NG911_BENCH_GC", "")
    if mode == "off":  # experiment: no cyclic collector
        gc.disable()
    elif mode.startswith("threshold="):  # experiment: e.g. threshold=10000,10,10
        gc.set_threshold(*(int(x) for x in mode.split("=", 1)[1].split(",")))


def serve(uas_port: int) -> None:
    """Child (`--serve`): the proxy under test, printing its port, until stdin closes."""
    import asyncio

    async def main() -> None:
        vsp = make_proxy(uas_port)
        addrs = await vsp.start()
        settle_gc()
        done = asyncio.Event()
        asyncio.get_running_loop().add_reader(sys.stdin.fileno(), done.set)
        print("READY", addrs[0].port, flush=True)
        await done.wait()
        await vsp.close()

    if os.environ.get("NG911_BENCH_LOOP") == "uvloop":  # experiment: uvloop's event loop
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# --------------------------------------------------------------------------- the peers

INVITE = (
    "INVITE sip:bench@{uas} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {uac};branch=z9hG4bK-{n}-1;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "bench" <sip:bench@{uac}>;tag=uac{n}\r\n'
    "To: <sip:bench@{uas}>\r\n"
    "Call-ID: bench-{n}@{uac}\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:bench@{uac};transport=udp>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {blen}\r\n\r\n{body}"
)
SDP = (
    "v=0\r\no=bench 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
IN_DIALOG = (
    "{method} sip:bench@{uas} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {uac};branch=z9hG4bK-{n}-{b};rport\r\n"
    "Route: {route}\r\n"
    "Max-Forwards: 70\r\n"
    'From: "bench" <sip:bench@{uac}>;tag=uac{n}\r\n'
    "To: <sip:bench@{uas}>;tag=uas{n}\r\n"
    "Call-ID: bench-{n}@{uac}\r\n"
    "CSeq: {cseq} {method}\r\n"
    "Content-Length: 0\r\n\r\n"
)
_COPY = re.compile(r"^(via|v|from|f|to|t|call-id|i|cseq|record-route):", re.I)


def answer(request: bytes, status: str, *, tag: str, contact: str | None = None) -> bytes:
    """The callee's response: Via/From/To/Call-ID/CSeq/Record-Route copied (§8.2.6)."""
    head = request.split(b"\r\n\r\n", 1)[0].decode()
    lines = [f"SIP/2.0 {status}"]
    for line in head.split("\r\n")[1:]:
        if _COPY.match(line):
            if line[:3].lower() == "to:" and ";tag=" not in line:
                line += f";tag={tag}"
            lines.append(line)
    if contact:
        lines.append(f"Contact: <{contact}>")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def record_route(response: bytes) -> str:
    for line in response.split(b"\r\n"):
        if line.lower().startswith(b"record-route:"):
            return line.split(b":", 1)[1].strip().decode()
    raise RuntimeError("no Record-Route in the 200")


_CALL = re.compile(rb"\r\nCall-ID: bench-(\d+)@", re.I)


def call_number(data: bytes) -> int:
    m = _CALL.search(data)
    if m is None:
        raise RuntimeError("a message without our Call-ID")
    return int(m.group(1))


class Peers:
    """Caller and callee; `send(who, data)` / `recv(who, want, n)` say how datagrams move."""

    uac_hp: str
    uas_hp: str

    def send(self, who: str, data: bytes) -> None:
        raise NotImplementedError

    def recv(self, who: str, want: str, n: int) -> tuple[bytes, tuple[str, int]]:
        raise NotImplementedError

    def calls(self, ns: list[int]) -> None:
        """The calls `ns`, step by step: every call's INVITE, then every call's answer...
        (one call: lock-step; several: a burst per step, as a loaded proxy sees them)."""
        fs = {n: {"uas": self.uas_hp, "uac": self.uac_hp, "n": n} for n in ns}
        for n in ns:
            self.send("uac", INVITE.format(**fs[n], blen=len(SDP), body=SDP).encode())
        inv = {n: self.recv("uas", "INVITE", n)[0] for n in ns}
        for n in ns:
            self.recv("uac", "SIP/2.0 100", n)
        for n in ns:
            self.send("uas", answer(inv[n], "180 Ringing", tag=f"uas{n}"))
        for n in ns:
            self.recv("uac", "SIP/2.0 180", n)
        contact = f"sip:bench@{self.uas_hp}"
        for n in ns:
            self.send("uas", answer(inv[n], "200 OK", tag=f"uas{n}", contact=contact))
        route = {n: record_route(self.recv("uac", "SIP/2.0 200", n)[0]) for n in ns}
        for n in ns:
            ack = IN_DIALOG.format(**fs[n], method="ACK", b="ack", cseq=1, route=route[n])
            self.send("uac", ack.encode())
        for n in ns:
            self.recv("uas", "ACK", n)
        for n in ns:
            bye = IN_DIALOG.format(**fs[n], method="BYE", b="bye", cseq=2, route=route[n])
            self.send("uac", bye.encode())
        byes = {n: self.recv("uas", "BYE", n)[0] for n in ns}
        for n in ns:
            self.send("uas", answer(byes[n], "200 OK", tag=f"uas{n}"))
        for n in ns:
            self.recv("uac", "SIP/2.0 200", n)


class UdpPeers(Peers):
    """Two non-blocking loopback sockets; the proxy in another process."""

    def __init__(self) -> None:
        self.socks: dict[str, socket.socket] = {}
        self.stash: dict[str, list[tuple[bytes, tuple[str, int]]]] = {"uac": [], "uas": []}
        for who in ("uac", "uas"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((LOCAL, 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.setblocking(False)
            self.socks[who] = s
        self.uac_hp = f"{LOCAL}:{self.socks['uac'].getsockname()[1]}"
        self.uas_hp = f"{LOCAL}:{self.socks['uas'].getsockname()[1]}"
        self.proxy: tuple[str, int] = (LOCAL, 0)
        self.hop: tuple[str, int] = (LOCAL, 0)

    def send(self, who: str, data: bytes) -> None:
        # the callee answers to where the request came from (the proxy's socket)
        self.socks[who].sendto(data, self.proxy if who == "uac" else self.hop)

    def recv(self, who: str, want: str, n: int) -> tuple[bytes, tuple[str, int]]:
        # Busy-wait (non-blocking): a peer asleep in recvfrom makes every sendto of the
        # proxy pay for waking it (an inter-processor interrupt, ~50-100 µs on a VM), which
        # would dwarf what the proxy itself does; SIPp under load is awake too.
        prefix = want.encode()
        stash = self.stash[who]
        for i, (data, addr) in enumerate(stash):
            if data.startswith(prefix) and call_number(data) == n:
                del stash[i]
                return data, addr
        deadline = time.monotonic() + 2.0
        sock = self.socks[who]
        while time.monotonic() < deadline:
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                continue
            if who == "uas":
                self.hop = addr
            if data.startswith(prefix) and call_number(data) == n:
                return data, addr
            if not data.startswith(b"SIP/2.0 100") or want == "SIP/2.0 100":
                stash.append((data, addr))  # another call's: later (a stray 100: dropped)
        raise TimeoutError(f"no {want} of call {n} within 2 s")


class _Capture:
    """Stands in for the proxy's asyncio datagram transport: keeps what it sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def is_closing(self) -> bool:
        return False

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


class InProcPeers(Peers):
    """The proxy in this process, fed through its UDP endpoint's `datagram_received`."""

    def __init__(self, endpoint: Any, uas_port: int) -> None:
        self.ep = endpoint
        self.capture = _Capture()
        self.real = endpoint.transport  # put back before closing
        endpoint.transport = self.capture
        self.addrs = {"uac": (LOCAL, uas_port - 1), "uas": (LOCAL, uas_port)}
        self.proxy_cpu = 0.0  # seconds inside the proxy's datagram_received
        self.uac_hp = f"{LOCAL}:{uas_port - 1}"
        self.uas_hp = f"{LOCAL}:{uas_port}"

    def send(self, who: str, data: bytes) -> None:
        t0 = time.thread_time()
        self.ep.datagram_received(data, self.addrs[who])
        # what the loop does at the end of this turn: the datagrams held in it leave
        # (`SipTransportLayer.send_datagram`); its own call, scheduled, then finds none
        self.ep.layer._release()
        self.proxy_cpu += time.thread_time() - t0

    def recv(self, who: str, want: str, n: int) -> tuple[bytes, tuple[str, int]]:
        addr = self.addrs[who]
        prefix = want.encode()
        sent = self.capture.sent
        for i, (data, to) in enumerate(sent):
            if to == addr and data.startswith(prefix) and call_number(data) == n:
                del sent[i]
                return data, to
        raise RuntimeError(f"the proxy sent no {want} of call {n} to the {who}")


# --------------------------------------------------------------------------- the runs


def run_udp(calls: int, rounds: int, burst: int = 1) -> list[dict[str, float]]:
    peers = UdpPeers()
    uas_port = peers.socks["uas"].getsockname()[1]
    cmd = [sys.executable, __file__, "--serve", str(uas_port)]
    src = os.environ.get("NG911_BENCH_SRC", str(HERE.parent / "src"))
    env = dict(os.environ, PYTHONPATH=src)
    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    results = []
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"proxy did not start: {line}")
        peers.proxy = (LOCAL, int(line[1]))
        for i in range(0, min(200, calls), burst):
            peers.calls([10_000_000 + i + j for j in range(burst)])
        n = 0
        for _ in range(rounds):
            c0, w0 = cpu_seconds(child.pid), time.perf_counter()
            for _ in range(0, calls, burst):
                peers.calls(list(range(n, n + burst)))
                n += burst
            c1, w1 = cpu_seconds(child.pid), time.perf_counter()
            results.append(
                {
                    "cpu_us_per_call": (c1 - c0) * 1e6 / calls,
                    "wall_us_per_call": (w1 - w0) * 1e6 / calls,
                }
            )
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)
    return results


def run_inproc(calls: int, rounds: int, profile: str | None) -> list[dict[str, float]]:
    """The proxy in this process; this thread's CPU time around the calls."""
    import asyncio
    import cProfile
    import gc

    async def main() -> list[dict[str, float]]:
        uas_port = 40002
        vsp = make_proxy(uas_port)
        await vsp.start()
        peers = InProcPeers(vsp.transport._listeners[0].udp, uas_port)
        settle_gc()
        for i in range(min(200, calls)):
            peers.calls([10_000_000 + i])
        out: list[dict[str, float]] = []
        prof = cProfile.Profile() if profile else None
        n = 0
        for _ in range(rounds):
            if prof is not None:
                prof.enable()
            peers.proxy_cpu = 0.0
            t0 = time.thread_time()
            for _ in range(calls):
                peers.calls([n])
                n += 1
            t1 = time.thread_time()
            if prof is not None:
                prof.disable()
            out.append(
                {
                    "cpu_us_per_call": peers.proxy_cpu * 1e6 / calls,
                    "with_peers_us_per_call": (t1 - t0) * 1e6 / calls,
                }
            )
        if prof is not None and profile:
            prof.dump_stats(profile)
        gc.enable()
        peers.ep.transport = peers.real
        await vsp.close()
        return out

    return asyncio.run(main())


def summary(results: list[dict[str, float]]) -> dict[str, float]:
    cpu = sorted(r["cpu_us_per_call"] for r in results)
    return {
        "best_cpu_us_per_call": round(cpu[0], 1),
        "median_cpu_us_per_call": round(cpu[len(cpu) // 2], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--mode", default="inproc,udp,udp-burst", help="comma list of inproc,udp,udp-burst"
    )
    ap.add_argument("--burst", type=int, default=20, help="calls per step in udp-burst")
    ap.add_argument("--profile", action="store_true", help="cProfile the in-process proxy")
    ap.add_argument("--callgrind", help="N1,N2: inproc instructions per call under callgrind")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON result")
    ap.add_argument("--out", default=str(HERE / "results" / "proxy.json"))
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    if args.callgrind:  # the whole process (peers, start-up cancelled), not only the proxy
        a, b = (int(x) for x in args.callgrind.split(","))
        per_call = callgrind_per_call(
            [__file__, "--mode", "inproc", "--rounds", "1", "--no-write"], (a, b)
        )
        print(f"callgrind: {per_call:,.0f} instructions per call, inproc ({compiled.build()})")
        if not args.no_write:
            out = {"bench": "proxy-callgrind", "build": compiled.build(), "calls": [a, b],
                   "instructions_per_call": round(per_call)}  # fmt: skip
            Path(args.out).with_name("proxy-callgrind.json").write_text(
                json.dumps(out, indent=2) + "\n"
            )
        return
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    res: dict[str, object] = {
        "bench": "proxy",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "build": compiled.build(),  # the sans-I/O core this process and its children run
        "calls_per_round": args.calls,
        "messages_per_call": 7,
        "gc": os.environ.get("NG911_BENCH_GC", "on (frozen after start-up)"),
    }
    print(f"{'mode':<8} {'round':>5} {'CPU µs/call':>12} {'wall µs/call':>13}")
    for mode in modes:
        if mode == "inproc":
            prof = str(HERE / "results" / "proxy.prof") if args.profile else None
            rounds = run_inproc(args.calls, args.rounds, prof)
        elif mode == "udp":
            rounds = run_udp(args.calls, args.rounds)
        elif mode == "udp-burst":
            rounds = run_udp(args.calls, args.rounds, args.burst)
        else:
            raise SystemExit(f"unknown mode {mode}")
        for i, r in enumerate(rounds):
            wall = r.get("wall_us_per_call")
            shown = "" if wall is None else f"{wall:13.1f}"
            print(f"{mode:<8} {i:>5} {r['cpu_us_per_call']:>12.1f} {shown}")
        res[mode] = {"rounds": rounds, **summary(rounds)}
    for mode in modes:
        m = res[mode]
        assert isinstance(m, dict)
        print(
            f"{mode:<8} VspProxy, 7 messages/call: best {m['best_cpu_us_per_call']} µs, "
            f"median {m['median_cpu_us_per_call']} µs of CPU per call"
        )
    print(
        "(inproc: parse → runtime → proxy → serialise, no kernel; udp: + sockets, epoll, "
        "one wake-up per datagram. Kamailio: ~250 µs per call in total, ANCHORS.md)"
    )
    if args.no_write:
        pass
    elif args.profile:
        import pstats

        pstats.Stats(str(HERE / "results" / "proxy.prof")).sort_stats("tottime").print_stats(30)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
