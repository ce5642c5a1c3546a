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
import json
import os
import platform
import re
import shutil
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rig import (
    BOROUGHS,
    BOUNDARIES,
    LOCAL,
    Element,
    children_of,
    free_port,
    rss_mb,
)

SIPP = shutil.which("sipp")
KAMAILIO = shutil.which("kamailio") or (
    "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
)
RESULTS = Path(__file__).resolve().parent / "results"
FLOOD_SRC = "127.0.0.2"  # the flooding peer
SOS_SRC = "127.0.0.3"  # the emergency caller (this process)
NG911_LADDER = [200, 300, 400, 500, 600, 750, 900, 1000, 1250, 1500, 1750, 2000, 2500]
SOS_RATE = 2.0  # emergency calls per second, beside the flood
CALL_TIMEOUT = 10.0  # s an emergency call may take to complete
HOLD = 0.1  # s between ACK and BYE


# --------------------------------------------------------------------------- SIPp scenarios

_UAC_FLOOD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ng911 flood">
  <send retrans="500">
    <![CDATA[

      INVITE sip:svc@[uas] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      From: "flood" <sip:flood@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:svc@[uas]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:flood@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=flood 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true" />
  <recv response="180" optional="true" />
  <recv response="503" optional="true" next="rejected" />
  <recv response="200" rrs="true" />
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      Max-Forwards: 70
      From: "flood" <sip:flood@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:svc@[uas]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Content-Length: 0

    ]]>
  </send>
  <recv response="180" timeout="100" ontimeout="held" />
  <label id="held" />
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      Max-Forwards: 70
      From: "flood" <sip:flood@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:svc@[uas]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true" next="done" />
  <label id="rejected" />
  <send>
    <![CDATA[

      ACK sip:svc@[uas] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-9];rport
      Max-Forwards: 70
      From: "flood" <sip:flood@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:svc@[uas]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Content-Length: 0

    ]]>
  </send>
  <label id="done" />
</scenario>
"""

_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ng911 flood callee">
  <recv request="INVITE" crlf="true" />
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:uas@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:uas@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=uas 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv request="ACK" optional="true" next="acked" />
  <recv request="BYE" next="bye_first" />
  <label id="acked" />
  <recv request="BYE" />
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <nop next="done" />
  <label id="bye_first" />
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" timeout="2000" ontimeout="done" />
  <label id="done" />
  <timewait milliseconds="500" />
</scenario>
"""


def _stop(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class SippUas:
    """The flood's callee (SIPp), on 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        sf = workdir / "uas.xml"
        sf.write_text(_UAS)
        self.proc = subprocess.Popen(
            [str(SIPP), "-sf", str(sf), "-i", LOCAL, "-p", str(self.port), "-t", "u1",
             "-nostdin", "-max_socket", "4096"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip
        time.sleep(0.3)

    def stop(self) -> None:
        _stop(self.proc)


def sipp_flood(
    proxy_port: int, uas_port: int, rate: int, calls: int, workdir: Path, tag: str
) -> tuple[subprocess.Popen[bytes], Path]:
    sf = workdir / "flood.xml"
    if not sf.exists():
        sf.write_text(_UAC_FLOOD)
    counts = workdir / f"{tag}-counts.csv"
    cmd = [
        str(SIPP), f"{LOCAL}:{proxy_port}", "-sf", str(sf), "-i", FLOOD_SRC, "-p", str(free_port()),
        "-t", "u1", "-key", "uas", f"{LOCAL}:{uas_port}", "-r", str(rate), "-m", str(calls),
        "-l", str(max(200, rate * 4)), "-nostdin", "-recv_timeout", "5000",
        "-timeout", "120s", "-max_socket", "4096", "-trace_counts", "-fd", "1",
        "-trace_stat", "-stf", str(workdir / f"{tag}-stat.csv"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    return proc, counts


def read_counts(workdir: Path) -> dict[str, int]:
    """SIPp's `-trace_counts` CSV (last row): INVITE 503s and 200s, calls ok/failed."""
    out = {"503": 0, "200": 0}
    for path in workdir.glob("flood_*_counts.csv"):
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
    try:
        rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    last = dict(zip(rows[0], rows[-1], strict=False))

    def n(k: str) -> int:
        try:
            return int(float(last.get(k, "0") or 0))
        except ValueError:
            return 0

    created = 0.0  # s until SIPp had created every call (rows every second, -fd 1)
    target = n("OutgoingCall(C)")
    for i, row in enumerate(rows[1:], 1):
        try:
            if int(float(row[rows[0].index("OutgoingCall(C)")] or 0)) >= target:
                created = float(i)
                break
        except (ValueError, IndexError):
            continue
    return {
        "created": target,
        "created_in_s": int(created),
        "ok": n("SuccessfulCall(C)"),
        "failed": n("FailedCall(C)"),
        "retrans": n("Retransmissions(C)"),
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
        from ng911.sip.uri import parse_name_addr_list

        routes = [
            str(na) for na in parse_name_addr_list(", ".join(resp.headers.get_all("Record-Route")))
        ]
        routes.reverse()  # RFC 3261 §12.1.2
        contact = (
            (resp.headers.get("Contact") or "<urn:service:sos>").split("<", 1)[-1].split(">", 1)[0]
        )
        hdr = "".join(f"Route: {r}\r\n" for r in routes)
        return (
            f"{method} {contact} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {SOS_SRC}:{self.port};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
            f"{hdr}Max-Forwards: 70\r\n"
            f"From: {resp.headers.get('From')}\r\nTo: {resp.headers.get('To')}\r\n"
            f"Call-ID: {resp.call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

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


async def sos_uas(port: int) -> None:
    """The emergency callee: 180 + 200 (Record-Route copied, RFC 3261 §12.1.1), 200 to BYE."""
    from ng911.sip.message import Request, make_response
    from ng911.sip.parse import parse_message

    contact = f"<sip:psap@{LOCAL}:{port}>"
    sdp = (
        b"v=0\r\no=psap 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0\r\n"
    )

    class Uas(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.tr = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            try:
                msg = parse_message(data)
            except Exception:
                return
            if not isinstance(msg, Request):
                return
            if msg.method == "INVITE":
                tag = "psap" + msg.call_id[-8:].replace("@", "")
                out = []
                for st, reason in ((180, "Ringing"), (200, "OK")):
                    r = make_response(msg, st, reason, to_tag=tag)
                    r.headers.add("Contact", contact)
                    if st == 200:
                        r.headers.add("Content-Type", "application/sdp")
                        r.body = sdp
                    out.append(r.to_bytes())
                for o in out:
                    self.tr.sendto(o, addr)  # type: ignore[attr-defined]
            elif msg.method in ("BYE", "OPTIONS", "CANCEL"):
                self.tr.sendto(make_response(msg, 200, "OK").to_bytes(), addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(Uas, local_addr=(LOCAL, port))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    tr.close()


class SosUas:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--sos-uas", str(self.port)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline().startswith("READY"):
            raise RuntimeError("emergency callee did not start")

    def stop(self) -> None:
        _stop(self.proc)


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
    def __init__(self, kind: str) -> None:
        self.name = f"ng911-{kind}"
        self.kind = kind
        self.els: list[Element] = []

    def start(self, sos_port: int, workdir: Path) -> None:
        self.port = free_port()
        listeners = [{"transport": "udp", "host": LOCAL, "port": self.port}]
        sos = f"sip:{LOCAL}:{sos_port}"
        # The flood is one SIPp source: the per-source limit (500 requests/s) would cut it
        # before overload control had anything to do, so the ladder turns it off and measures
        # overload control alone, the hard case (tests/resilience/test_flood.py has both).
        overload = {"source_rate": 0}
        if self.kind == "vsp":
            el = Element(
                "vsp",
                "vsp",
                {"listeners": listeners, "esrp": sos, "overload": overload},
                workdir,
                quiet=True,
                log_file=False,
            )
        else:
            lost = Element(
                "lost", "lost",
                {"host": LOCAL, "port": free_port(), "boundaries": str(BOUNDARIES),
                 "uris": {b: [sos] for b in BOROUGHS}},
                workdir,
            )  # fmt: skip
            lost.start()
            self.els.append(lost)
            el = Element(
                "esrp", "esrp",
                {"listeners": listeners, "lost_url": lost.ready["url"], "default_route": sos,
                 "overload": overload},
                workdir, quiet=True, log_file=False,
            )  # fmt: skip
        self.els.append(el.start())

    def pids(self) -> list[int]:
        return self.els[-1].pids() if self.els else []  # the proxy (not its LoST server)

    def stop(self) -> None:
        for el in reversed(self.els):
            el.stop()
        self.els = []


_KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
children=2
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{host}:{port}
mpath="{mpath}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "pike.so"
loadmodule "ratelimit.so"
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)
modparam("rr", "enable_full_lr", 1)
# pike: per source address, more than {pike} requests in 2 s blocks the source
modparam("pike", "sampling_time_unit", 2)
modparam("pike", "reqs_density_per_unit", {pike})
modparam("pike", "remove_latency", 4)
# ratelimit: one TAILDROP pipe for non-emergency initial requests, {limit} a second
modparam("ratelimit", "timer_interval", 1)
modparam("ratelimit", "pipe", "1:TAILDROP:{limit}")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("ACK")) {{
        exit;
    }}
    # emergency first: never limited (NENA i3)
    if ($ru =~ "^urn:service:sos" || $hdr(Resource-Priority) =~ "esnet\\.") {{
        if (!t_newtran()) {{
            sl_reply_error();
            exit;
        }}
        remove_hf("Route");
        record_route();
        $du = "sip:{host}:{sos_port}";
        t_relay();
        exit;
    }}
    if (!pike_check_req()) {{
        append_to_reply("Retry-After: 5\\r\\n");
        sl_send_reply("503", "Flood from your address");
        exit;
    }}
    if (!rl_check("1")) {{
        append_to_reply("Retry-After: 5\\r\\n");
        sl_send_reply("503", "Over capacity");
        exit;
    }}
    if (!t_newtran()) {{
        sl_reply_error();
        exit;
    }}
    remove_hf("Route");
    if (is_method("INVITE")) {{
        record_route();
    }}
    t_relay();
}}
"""


class KamailioProxy(Proxy):
    name = "kamailio+pike+rl"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.limit = 100000  # no limit while the ramp measures what it holds
        self.sos_port = 0
        self.workdir = Path(".")

    def set_limit(self, held: int) -> None:
        self.limit = held
        self.stop()
        self.start(self.sos_port, self.workdir)

    def start(self, sos_port: int, workdir: Path) -> None:
        import glob

        self.sos_port, self.workdir = sos_port, workdir
        mods = sorted(glob.glob("/usr/lib/*/kamailio/modules/pike.so"))
        if KAMAILIO is None or not mods:
            raise RuntimeError("kamailio (with pike, ratelimit) not installed: `make peers`")
        self.port = free_port()
        # requests per call from one source: INVITE only (ACK/BYE are in-dialog), so the
        # pike density is in calls: twice the held rate over its 2 s unit
        cfg = _KAMAILIO_CFG.format(
            host=LOCAL, port=self.port, mpath=str(Path(mods[0]).parent), sos_port=sos_port,
            limit=self.limit, pike=self.limit * 4,
        )  # fmt: skip
        path = workdir / "kamailio.cfg"
        path.write_text(cfg)
        chk = subprocess.run([KAMAILIO, "-c", "-f", str(path)], capture_output=True, text=True)
        if chk.returncode != 0:
            raise RuntimeError(f"kamailio -c: {chk.stderr[-2000:]}")
        log = (workdir / "kamailio.log").open("ab")
        self.proc = subprocess.Popen(
            [KAMAILIO, "-f", str(path), "-DD", "-E", "-m", "1024", "-M", "16",
             "-P", str(workdir / "kamailio.pid"), "-Y", str(workdir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        from rig import options_probe

        for _ in range(100):
            if options_probe(self.port, timeout=0.2) is not None:
                return
            time.sleep(0.1)
        raise RuntimeError("kamailio did not start")

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *children_of(self.proc.pid)]

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait(5)


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


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))]


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
        proc, _ = sipp_flood(
            proxy.port, uas.port, rate, calls, workdir, f"ramp-{proxy.name}-{rate}"
        )
        try:
            proc.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            _stop(proc, signal.SIGKILL)
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
    flood, _ = sipp_flood(proxy.port, uas.port, rate, r.flood_calls, workdir, tag)
    time.sleep(0.5)  # the flood is on
    sos = asyncio.run(emergency_calls(proxy.port, seconds - 0.5))
    # the flood's calls end by themselves; what is still hanging after 5 s more is cut
    try:
        flood.wait(6)
    except subprocess.TimeoutExpired:
        _stop(flood, signal.SIGUSR1)  # SIPp: stop placing calls, dump, exit
        _stop(flood)
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
    p50, p95 = pct(setups, 50), pct(setups, 95)
    r.setup_p50_ms = None if p50 is None else round(p50 * 1000, 2)
    r.setup_p95_ms = None if p95 is None else round(p95 * 1000, 2)
    print("  " + fmt_rung(r), flush=True)
    return r


def fmt_rung(r: Rung) -> str:
    def f(v: Any, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"

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
    ap.add_argument("--out", type=Path, default=RESULTS / "resilience.json")
    ap.add_argument("--sos-uas", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sos_uas:
        asyncio.run(sos_uas(args.sos_uas))
        return 0
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
        uas = SippUas(workdir)
        sos = SosUas()
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
    RESULTS.mkdir(parents=True, exist_ok=True)
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
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
