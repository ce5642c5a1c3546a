"""SIP traffic the load benches generate beside SIPp: a callee, a TLS caller, their PKI.

Not a benchmark: `bench/load.py` and `bench/resilience.py` import it, and run it as their
child processes (a generator must not share a core's event loop with what it measures):

    python bench/loadgen.py callee PORT [--pki DIR]     # UDP callee, or TLS with --pki
    python bench/loadgen.py tls-caller PROXY_PORT CALLEE_PORT RATE SECONDS --pki DIR

- the callee answers an INVITE with 180 and 200 at once (copying Record-Route, RFC 3261
  §12.1.1), and BYE, OPTIONS, CANCEL with 200; it prints READY once listening
  (`Callee` starts it and always stops it);
- the TLS caller (SIPp here has no TLS) places `RATE` calls a second for `SECONDS` over one
  mutual-TLS connection (`--connections N`: N, the calls spread over them in turn): INVITE,
  ACK and, after `HOLD`, BYE along the reversed Record-Route set (`in_dialog`), timing
  INVITE → 180 with `perf_counter`; it prints one JSON line (`tls_calls` runs it and reads
  that line);
- `make_pki`: one test CA and ECDSA certificates for the proxy, caller and callee.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ng911.interop.kamailio import write_ca_bundle
from ng911.interop.procs import LOCAL, stop
from ng911.pki.testpki import ElementSpec, build_test_pki
from ng911.pki.tls import client_context, server_context
from ng911.sip.message import Request, Response, make_response
from ng911.sip.parse import StreamParser, parse_message
from ng911.sip.uri import parse_name_addr_list

HOLD = 0.1  # s between ACK and BYE
SDP = (
    b"v=0\r\no=load 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


# --------------------------------------------------------------------------- PKI


def make_pki(pki_dir: Path) -> dict[str, str]:
    """One test CA, certificates for the proxy (ng911 and Kamailio alike), caller, callee;
    the paths, also in `pki_dir/pki.json`. Kamailio's: proxy.chain.pem, proxy.key.pem,
    ca-bundle.pem."""
    specs = [
        ElementSpec(n, "bench", (f"{n}.bench.example",), (f"{n}.bench.example",))
        for n in ("proxy", "uac", "uas")
    ]
    pki = build_test_pki(pki_dir, cas=("bench",), elements=specs)
    ca = pki.cas["bench"].cert_path
    out: dict[str, str] = {"ca": str(ca)}
    for n in ("proxy", "uac", "uas"):
        c = pki.cert(n)
        out[f"{n}_chain"], out[f"{n}_key"] = str(c.chain_path), str(c.key_path)
    shutil.copy(out["proxy_chain"], pki_dir / "proxy.chain.pem")
    shutil.copy(out["proxy_key"], pki_dir / "proxy.key.pem")
    write_ca_bundle([ca], pki_dir / "ca-bundle.pem")
    (pki_dir / "pki.json").write_text(json.dumps(out))
    return out


def pki_paths(pki_dir: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((pki_dir / "pki.json").read_text())
    return data


def tls_context(pki_dir: Path, name: str, server: bool) -> ssl.SSLContext:
    """`name`'s TLS context (mutual authentication both ways)."""
    p = pki_paths(pki_dir)
    chain, key, ca = Path(p[f"{name}_chain"]), Path(p[f"{name}_key"]), Path(p["ca"])
    if server:
        return server_context(chain, key, [ca], require_client_cert=True)
    return client_context([ca], cert=chain, key=key)


# --------------------------------------------------------------------------- SIP


def in_dialog(method: str, seq: int, resp: Response, via: str, target: str) -> bytes:
    """ACK or BYE for the dialog `resp` (a 2xx) set up: to its Contact (else `target`),
    along the reversed Record-Route set (RFC 3261 §12.1.2); `via` e.g. `UDP host:port`."""
    routes = [
        str(na) for na in parse_name_addr_list(", ".join(resp.headers.get_all("Record-Route")))
    ]
    routes.reverse()
    contact = resp.headers.get("Contact") or f"<{target}>"
    contact = contact.split("<", 1)[-1].split(">", 1)[0]
    hdr = "".join(f"Route: {r}\r\n" for r in routes)
    return (
        f"{method} {contact} SIP/2.0\r\n"
        f"Via: SIP/2.0/{via};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
        f"{hdr}Max-Forwards: 70\r\n"
        f"From: {resp.headers.get('From')}\r\nTo: {resp.headers.get('To')}\r\n"
        f"Call-ID: {resp.call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answers(req: Request, tag: str, contact: str) -> list[bytes]:
    """The callee's answers to `req`: 180 and 200 with SDP to an INVITE, 200 to the rest."""
    if req.method != "INVITE":
        return [make_response(req, 200, "OK").to_bytes()]
    out = []
    for status, reason in ((180, "Ringing"), (200, "OK")):
        r = make_response(req, status, reason, to_tag=tag)
        r.headers.add("Contact", contact)
        if status == 200:
            r.headers.add("Content-Type", "application/sdp")
            r.body = SDP
        out.append(r.to_bytes())
    return out


async def callee(port: int, pki_dir: Path | None) -> None:
    """Answer calls on UDP `port` (TLS with `pki_dir`) until SIGTERM."""
    tls = pki_dir is not None
    contact = f"<sip:uas@{LOCAL}:{port}" + (";transport=tls>" if tls else ">")

    def answer(msg: object) -> list[bytes]:
        if not isinstance(msg, Request) or msg.method == "ACK":
            return []
        # the same tag for a retransmitted INVITE: one dialog per call
        return answers(msg, f"uas{hash(msg.call_id) & 0xFFFFFFFF:x}", contact)

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.tr: Any = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            with contextlib.suppress(Exception):
                for out in answer(parse_message(data)):
                    self.tr.sendto(out, addr)

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = StreamParser()
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                for msg in parser.feed(data):
                    writer.write(b"".join(answer(msg)))
        writer.close()

    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    if pki_dir is not None:
        ctx = tls_context(pki_dir, "uas", server=True)
        server: Any = await asyncio.start_server(stream, LOCAL, port, ssl=ctx)
    else:
        server, _ = await loop.create_datagram_endpoint(Udp, local_addr=(LOCAL, port))
    print("READY", flush=True)
    await stopped.wait()
    server.close()


class Callee:
    """`callee` in a process of its own on `port`; `stop()` always ends it."""

    def __init__(self, port: int, pki_dir: Path | None = None) -> None:
        self.port = port
        tls = ["--pki", str(pki_dir)] if pki_dir is not None else []
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "callee", str(port), *tls], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline().startswith("READY"):
            self.stop()
            raise RuntimeError("callee did not start")

    def stop(self) -> None:
        stop(self.proc)


# --------------------------------------------------------------------------- TLS caller


async def _connect(
    port: int, ctx: ssl.SSLContext, tries: int = 20
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """One TLS connection to the proxy, and its local port (read now: a connection the
    proxy resets later has no address to read, and the caller's Via needs it), retried a
    while: Kamailio's main process accepts on its TLS port before its TLS workers can take
    the handshake, and resets the ones that come too early (seen in runs of the
    8-connection step, once while the next connections were being made); a step must
    measure the proxy, not its start-up."""
    for attempt in range(tries):
        try:
            reader, writer = await asyncio.open_connection(LOCAL, port, ssl=ctx)
            sockname = writer.get_extra_info("sockname")
            if writer.is_closing() or sockname is None:
                # handshake done, then reset at once (Kamailio's TLS worker, seen under the
                # 8-connection step): gone before a call could use it, so try again
                writer.close()
                raise ConnectionResetError("the proxy closed the TLS connection at once")
            return reader, writer, int(sockname[1])
        except (ConnectionError, ssl.SSLError, OSError):
            if attempt == tries - 1:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


def _lost(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Has the peer closed or reset this connection?"""
    return writer.is_closing() or reader.at_eof() or reader.exception() is not None


async def tls_caller(
    proxy_port: int,
    uas_port: int,
    rate: int,
    seconds: float,
    pki_dir: Path,
    connections: int = 1,
) -> dict[str, Any]:
    """`rate` calls a second for `seconds` through the proxy to the callee; what happened.

    `connections` > 1: that many TLS connections, the calls spread over them in turn (a
    proxy's workers share its port, and the kernel gives each connection to one of them)."""
    ctx = tls_context(pki_dir, "uac", server=False)
    made = [await _connect(proxy_port, ctx) for _ in range(connections)]
    for _ in range(5):  # bounded: 0.5 s
        # Kamailio also resets a connection after its handshake, while the next ones are
        # being made (seen once in a run of the 8-connection step: one call in eight failed
        # at 500 cps): replace those before the first call
        await asyncio.sleep(0.1)
        gone = [i for i, (r, w, _) in enumerate(made) if _lost(r, w)]
        if not gone:
            break
        for i in gone:
            made[i][1].close()
            made[i] = await _connect(proxy_port, ctx)
    conns = [(r, w) for r, w, _ in made]
    vias = [f"TLS {LOCAL}:{lport}" for _, _, lport in made]
    calls = max(1, int(rate * seconds))
    state: dict[str, dict[str, Any]] = {}
    delays: list[float] = []
    ok = failed = 0
    done = asyncio.Event()
    byes: set[asyncio.Future[None]] = set()
    ruri = f"sip:svc@{LOCAL}:{uas_port};transport=tls"

    def invite(i: int) -> bytes:
        cid = f"{i}-{os.getpid()}@tlsgen"
        state[cid] = {"t0": time.perf_counter()}
        k = i % connections
        via, lport = vias[k], vias[k].rsplit(":", 1)[1]
        return (
            f"INVITE {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{via};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:load@{LOCAL}>;tag=t{i}\r\nTo: <{ruri}>\r\n"
            f"Call-ID: {cid}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:load@{LOCAL}:{lport};transport=tls>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
        ).encode() + SDP

    def settle(cid: str, good: bool) -> None:
        nonlocal ok, failed
        ok, failed = ok + good, failed + (not good)
        state.pop(cid, None)
        if ok + failed >= calls:
            done.set()

    async def bye(resp: Response, k: int) -> None:
        await asyncio.sleep(HOLD)
        conns[k][1].write(in_dialog("BYE", 2, resp, vias[k], ruri))

    async def read(k: int) -> None:
        reader, writer = conns[k]
        parser = StreamParser()
        while data := await reader.read(65536):
            for msg in parser.feed(data):
                st = state.get(msg.call_id) if isinstance(msg, Response) else None
                if st is None or not isinstance(msg, Response):
                    continue
                if msg.cseq.method == "BYE" and msg.status >= 200:
                    settle(msg.call_id, msg.status < 300)
                elif msg.cseq.method != "INVITE":
                    continue
                elif msg.status == 180 and "t180" not in st:
                    st["t180"] = time.perf_counter()
                    delays.append(st["t180"] - st["t0"])
                elif 200 <= msg.status < 300 and "acked" not in st:
                    st["acked"] = True
                    writer.write(in_dialog("ACK", 1, msg, vias[k], ruri))
                    task = asyncio.ensure_future(bye(msg, k))
                    byes.add(task)
                    task.add_done_callback(byes.discard)
                elif msg.status >= 300:
                    settle(msg.call_id, False)

    readers = [asyncio.ensure_future(read(k)) for k in range(connections)]
    t0 = time.perf_counter()
    sent = 0
    while sent < calls:
        due = min(calls, int((time.perf_counter() - t0) * rate) + 1)
        for i in range(sent, due):
            conns[i % connections][1].write(invite(i))
        sent = max(sent, due)
        await asyncio.sleep(0.002)
    send_time = time.perf_counter() - t0
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 10)
    for task in readers:
        task.cancel()
    for _, writer in conns:
        writer.close()
    return {
        "calls": calls,
        "ok": ok,
        "failed": failed + len(state),
        "delays": delays,
        "achieved_cps": calls / max(send_time, 1e-3),
    }


def tls_calls(
    proxy_port: int,
    uas_port: int,
    rate: int,
    seconds: float,
    pki_dir: Path,
    connections: int = 1,
) -> dict[str, Any]:
    """`tls_caller` in a process of its own: its result, or {"error": ...}."""
    cmd = [sys.executable, __file__, "tls-caller", str(proxy_port), str(uas_port), str(rate),
           str(seconds), "--pki", str(pki_dir), "--connections", str(connections)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 40)
    try:
        res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"generator failed: {out.stderr[-300:]}"}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("mode", choices=("callee", "tls-caller"))
    ap.add_argument("numbers", type=float, nargs="+", help="PORT | PROXY CALLEE RATE SECONDS")
    ap.add_argument("--pki", type=Path)
    ap.add_argument("--connections", type=int, default=1, help="TLS caller: connections")
    args = ap.parse_args()
    n = args.numbers
    if args.mode == "callee":
        asyncio.run(callee(int(n[0]), args.pki))
        return 0
    res = asyncio.run(tls_caller(int(n[0]), int(n[1]), int(n[2]), n[3], args.pki, args.connections))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
