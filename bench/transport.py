"""What each transport costs ng911: OPTIONS -> 200 round trips per second over UDP, TCP and
TLS (one reused mutual-TLS connection), and full mutual TLS handshakes per second (ECDSA
P-256 vs RSA-2048), plus resumed ones; each also as a ratio to UDP measured in the same run.

Both ends (client and answering server) are ng911 `SipTransportLayer`s in ONE process and
event loop on loopback, one request outstanding at a time: the figures are the full cost of
our stack for both sides of a hop, CPU-bound on one core. "cpu us/rt" is process CPU time
(user+sys, getrusage) per round trip. Handshake scenarios open a new connection for each
OPTIONS (connect + handshake + request + 200), TLS 1.3 with resumption off (full) or on.

    .venv/bin/python bench/transport.py [--quick] [--seconds S]

Writes bench/results/transport.json.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ng911.net import Address, HandshakeEvent, MessageEvent, NetEvent, SipTransportLayer, Source
from ng911.pki.testpki import TestPki, build_test_pki
from ng911.sip.headers import new_branch, new_call_id, new_tag
from ng911.sip.message import Request, Response, make_response
from ng911.sip.uri import parse_uri
from rig import write_result


def options() -> Request:
    return Request(
        "OPTIONS",
        parse_uri("sip:esinet.example"),
        [
            ("Via", f"SIP/2.0/TLS 127.0.0.1:5061;branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:bench@vsp.example>;tag={new_tag()}"),
            ("To", "<sip:esinet.example>"),
            ("Call-ID", new_call_id("vsp.example")),
            ("CSeq", "1 OPTIONS"),
            ("Accept", "application/sdp"),
        ],
    )


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Pair:
    """A server that answers 200 and a client that waits for each answer."""

    def __init__(
        self,
        server_tls: ssl.SSLContext | None,
        client_tls: ssl.SSLContext | None,
        *,
        resumption: bool = True,
    ) -> None:
        self.server = SipTransportLayer(element="server")
        self.client = SipTransportLayer(
            element="client", client_tls=client_tls, tls_resumption=resumption
        )
        self.server_tls = server_tls
        self.waiting: dict[str, asyncio.Future[Response]] = {}
        self.events: list[NetEvent] = []
        self.server.on_message = self._serve
        self.client.on_message = self._answer

    def _serve(self, msg: Request | Response, src: Source) -> None:
        if isinstance(msg, Request):
            resp = make_response(msg, 200, "OK")
            asyncio.get_running_loop().create_task(
                self.server.send(resp, src.address, connection_id=src.connection_id)
            )

    def _answer(self, msg: Request | Response, src: Source) -> None:
        if isinstance(msg, Response):
            fut = self.waiting.pop(msg.call_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def start(self, transport: str) -> Address:
        addr = await self.server.listen(transport, "127.0.0.1", 0, tls=self.server_tls)
        return Address(transport, "127.0.0.1", addr.port)

    async def round_trip(self, dest: Address, *, new_connection: bool = False) -> None:
        req = options()
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.waiting[req.call_id] = fut
        await self.client.send(req, dest, server_name="esinet.example")
        await asyncio.wait_for(fut, 5)
        if new_connection:
            for c in self.client.connections():
                self.client.close_connection(int(c["id"]))  # type: ignore[call-overload]

    async def close(self) -> None:
        await self.client.close()
        await self.server.close()


async def measure(
    pair: Pair, transport: str, seconds: float, *, new_connection: bool = False
) -> dict[str, float]:
    dest = await pair.start(transport)
    for _ in range(20):  # warm-up (and the first handshake for reused connections)
        await pair.round_trip(dest, new_connection=new_connection)
    pair.client.observers.append(pair.events.append)
    n = 0
    c0, t0 = cpu(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await pair.round_trip(dest, new_connection=new_connection)
        n += 1
    elapsed, used = time.perf_counter() - t0, cpu() - c0
    pair.client.observers.clear()
    hs = [e for e in pair.events if isinstance(e, HandshakeEvent) and e.ok]
    outs = [e for e in pair.events if isinstance(e, MessageEvent) and e.direction == "out"]
    await pair.close()
    result = {
        "round_trips": n,
        "per_second": n / elapsed,
        "cpu_us_per_rt": used / n * 1e6,
        "sip_bytes": outs[0].sip_bytes if outs else 0,
        "wire_bytes": outs[0].wire_bytes if outs else 0,
    }
    if hs:
        result["handshake_ms_median"] = statistics.median(h.duration for h in hs) * 1e3
        result["resumed_fraction"] = sum(h.resumed for h in hs) / len(hs)
        result["handshake_bytes"] = statistics.median(h.bytes_in + h.bytes_out for h in hs)
    return result


async def run(seconds: float) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="ng911-bench-"))
    pkis: dict[str, TestPki] = {
        kt: build_test_pki(tmp / kt, cas=["vsp", "esinet"], key_type=kt) for kt in ("ec", "rsa")
    }

    def ctxs(kt: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        p = pkis[kt]
        return p.server_context("esrp", require_client_cert=True), p.client_context("vsp-proxy")

    scenarios: list[tuple[str, str, str | None, bool, bool]] = [
        # name, transport, key type, new connection per request, resumption
        ("udp", "udp", None, False, True),
        ("tcp, reused connection", "tcp", None, False, True),
        ("tls mutual ECDSA, reused connection", "tls", "ec", False, True),
        ("tls mutual RSA, reused connection", "tls", "rsa", False, True),
        ("tls mutual ECDSA, full handshake each", "tls", "ec", True, False),
        ("tls mutual RSA, full handshake each", "tls", "rsa", True, False),
        ("tls mutual ECDSA, resumed handshake each", "tls", "ec", True, True),
        ("tcp, new connection each", "tcp", None, True, True),
    ]
    results: dict[str, dict[str, float]] = {}
    for name, transport, kt, new_conn, resume in scenarios:
        s, c = ctxs(kt) if kt else (None, None)
        pair = Pair(s, c, resumption=resume)
        results[name] = await measure(pair, transport, seconds, new_connection=new_conn)
    udp = results["udp"]["per_second"]
    for r in results.values():
        r["ratio_to_udp"] = r["per_second"] / udp
    return {
        "bench": "transport",
        "openssl": ssl.OPENSSL_VERSION,
        "seconds_per_scenario": seconds,
        "results": results,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per scenario (default 3)")
    ap.add_argument("--quick", action="store_true", help="0.5 s per scenario")
    args = ap.parse_args()
    seconds = 0.5 if args.quick else args.seconds
    out = asyncio.run(run(seconds))
    res = out["results"]
    assert isinstance(res, dict)
    print(
        f"{'scenario':44} {'rt/s':>8} {'x UDP':>6} {'cpu us/rt':>10} {'hs ms':>6} "
        f"{'sip B':>6} {'wire B':>6}"
    )
    for name, r in res.items():
        hs = f"{r['handshake_ms_median']:.2f}" if "handshake_ms_median" in r else "-"
        print(
            f"{name:44} {r['per_second']:8.0f} {r['ratio_to_udp']:6.2f} "
            f"{r['cpu_us_per_rt']:10.0f} {hs:>6} {r['sip_bytes']:6.0f} {r['wire_bytes']:6.0f}"
        )
    write_result("transport", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
