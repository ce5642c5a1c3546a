"""Synthetic net events of whole calls through the chain, with known timings.

Builds the events `ng911.net` would report for caller → VSP → ESRP (+ LoST) → PSAP → call
taker, with every transit and processing time chosen by the test, so a measurement computed
from them has an exact expected value. Uses ng911.net.events' own dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ng911.lost.events import LostQueryEvent
from ng911.net.events import ConnectionEvent, HandshakeEvent, MessageEvent

HOST = "127.0.0.1"
PORTS = {"caller": 5001, "vsp": 5002, "esrp": 5003, "psap-manhattan": 5004, "taker-manhattan": 5005}
CHAIN = ["caller", "vsp", "esrp", "psap-manhattan", "taker-manhattan"]
ROLES = {
    "caller": "caller",
    "vsp": "vsp",
    "esrp": "esrp",
    "psap-manhattan": "psap",
    "taker-manhattan": "calltaker",
    "lost": "lost",
}
TLS_OVERHEAD = 22  # record header 5 + AEAD tag 16 + content type 1 (TLS 1.3)


@dataclass
class Timing:
    """Milliseconds. transit[i]: hop i+1 one-way; proc[element]: its own time per message."""

    transit: tuple[float, float, float, float] = (0.1, 0.2, 0.3, 0.4)
    proc: dict[str, float] = field(
        default_factory=lambda: {"vsp": 0.05, "esrp": 0.07, "psap-manhattan": 0.09}
    )
    lost: float = 0.5  # ESRP's LoST query, inside its INVITE processing
    ring: float = 0.11  # call taker: INVITE in → 180 out
    answer: float = 2.0  # call taker: 180 out → 200 out
    hold: float = 5.0  # caller: 200 in → BYE out
    handshake: float = 1.5  # a full TLS handshake, when a TLS hop opens its connection


class Chain:
    """Emits events for calls on a chain whose hops use the given transports."""

    def __init__(self, transports: tuple[str, str, str, str], b2bua_psap: bool = False) -> None:
        self.transports = transports
        self.b2bua = b2bua_psap
        self.events: list[object] = []
        self.t = 1000.0  # mono, seconds
        self.wall = 1_700_000_000.0
        self.conns: dict[int, tuple[tuple[str, int], tuple[str, int]]] = {}
        self.ephemeral = 40000
        self.calls = 0
        self.lost_calls: list[str] = []

    # addresses: UDP uses listening ports both ways; streams: client ephemeral → server port
    def _addrs(self, hop: int) -> tuple[tuple[str, int], tuple[str, int], bool]:
        """(upstream local, downstream local, new connection?) for hop index 0..3."""
        up, down = CHAIN[hop], CHAIN[hop + 1]
        if self.transports[hop] == "udp":
            return (HOST, PORTS[up]), (HOST, PORTS[down]), False
        if hop not in self.conns:
            self.ephemeral += 1
            self.conns[hop] = ((HOST, self.ephemeral), (HOST, PORTS[down]))
            return (*self.conns[hop], True)
        return (*self.conns[hop], False)

    def _msg(self, element, direction, hop, local, remote, data: bytes, at: float) -> None:
        t = self.transports[hop]
        wire = len(data) + (TLS_OVERHEAD if t == "tls" else 0)
        first = data.split(b"\r\n", 1)[0].decode()
        cid = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in data.decode().split("\r\n")
                if ln.startswith("Call-ID:")
            ),
            None,
        )
        self.events.append(
            MessageEvent(
                ts=self.wall + at,
                mono=at,
                element=element,
                direction=direction,
                transport=t,
                local=local,
                remote=remote,
                sip_bytes=len(data),
                wire_bytes=wire,
                data=data,
                call_id=cid,
                first_line=first,
            )
        )

    def _send(self, hop: int, downstream: bool, data: bytes, at: float, timing: Timing) -> float:
        """One message across hop (0-based); returns its arrival time."""
        up_addr, down_addr, new = self._addrs(hop)
        up, down = CHAIN[hop], CHAIN[hop + 1]
        src, dst = (up, down) if downstream else (down, up)
        src_addr, dst_addr = (up_addr, down_addr) if downstream else (down_addr, up_addr)
        if new:
            self.events.append(
                ConnectionEvent(
                    self.wall + at, at, up, self.transports[hop], up_addr, down_addr, "open", None
                )
            )
            if self.transports[hop] == "tls":
                hs = timing.handshake / 1000.0
                # the transport reports the message out only once the handshake is done
                for role, el, loc, rem in (
                    ("client", up, up_addr, down_addr),
                    ("server", down, down_addr, up_addr),
                ):
                    self.events.append(
                        HandshakeEvent(
                            self.wall + at + hs,
                            at + hs,
                            el,
                            loc,
                            rem,
                            role,
                            False,
                            hs,
                            "TLSv1.3",
                            "TLS_AES_256_GCM_SHA384",
                            (),
                            True,
                            None,
                        )
                    )
                at += hs
        self._msg(src, "out", hop, src_addr, dst_addr, data, at)
        arrive = at + timing.transit[hop] / 1000.0
        self._msg(dst, "in", hop, dst_addr, src_addr, data, arrive)
        return arrive

    def call(self, timing: Timing | None = None, *, answer_status: int = 200) -> str:
        """One call: INVITE down, 100s, 180 and 200 up, ACK down, BYE from the caller."""
        tm = timing or Timing()
        self.calls += 1
        n = self.calls
        cid = f"call{n}@caller.example"
        cid4 = f"b2b{n}@psap.example" if self.b2bua else cid
        ecid = f"urn:emergency:uid:callid:abc{n:08d}:esrp.example"
        t = self.t
        ms = 1 / 1000.0

        def req(method: str, call_id: str, seq: int, info: bool) -> bytes:
            lines = [
                f"{method} urn:service:sos SIP/2.0",
                "Via: SIP/2.0/UDP h;branch=z9hG4bKx",
                f"Call-ID: {call_id}",
                f"CSeq: {seq} {method}",
                "From: <sip:a@b>;tag=1",
                "To: <urn:service:sos>",
            ]
            if info:
                lines.append(f"Call-Info: <{ecid}>;purpose=emergency-CallId")
            return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

        def resp(
            status: int, reason: str, call_id: str, seq: int, method: str, info: bool
        ) -> bytes:
            lines = [
                f"SIP/2.0 {status} {reason}",
                "Via: SIP/2.0/UDP h;branch=z9hG4bKx",
                f"Call-ID: {call_id}",
                f"CSeq: {seq} {method}",
                "From: <sip:a@b>;tag=1",
                "To: <urn:service:sos>;tag=2",
            ]
            if info:
                lines.append(f"Call-Info: <{ecid}>;purpose=emergency-CallId")
            return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

        def cid_at(hop: int) -> str:
            return cid4 if hop == 3 else cid

        # INVITE down the chain
        at = t
        for hop in range(4):
            el = CHAIN[hop]
            if hop > 0:  # proxies: 100 Trying upstream (made locally), then forward
                self._send(
                    hop - 1,
                    False,
                    resp(100, "Trying", cid_at(hop - 1), 1, "INVITE", hop - 1 >= 2),
                    at + 0.01 * ms,
                    tm,
                )
                p = tm.proc[el] * ms
                if el == "esrp":
                    q0 = at + 0.01 * ms
                    self.events.append(
                        LostQueryEvent(
                            self.wall + q0,
                            q0,
                            tm.lost * ms,
                            "esrp",
                            "http://127.0.0.1:1/lost",
                            "http",
                            True,
                            ecid,  # what the ESRP passes: its emergency-CallId
                        )
                    )
                    p += tm.lost * ms
                at += p
            at = self._send(hop, True, req("INVITE", cid_at(hop), 1, hop >= 2), at, tm)
        # call taker rings
        at += tm.ring * ms
        ring_at = at
        for hop in (3, 2, 1, 0):
            if hop < 3:
                at += tm.proc[CHAIN[hop + 1]] * ms
            at = self._send(
                hop, False, resp(180, "Ringing", cid_at(hop), 1, "INVITE", hop >= 2), at, tm
            )
        at = ring_at + tm.answer * ms
        for hop in (3, 2, 1, 0):
            if hop < 3:
                at += tm.proc[CHAIN[hop + 1]] * ms
            reason = "OK" if answer_status == 200 else "Busy Here"
            at = self._send(
                hop, False, resp(answer_status, reason, cid_at(hop), 1, "INVITE", hop >= 2), at, tm
            )
        if answer_status == 200:
            for hop in range(4):
                if hop > 0:
                    at += tm.proc[CHAIN[hop]] * ms
                at = self._send(hop, True, req("ACK", cid_at(hop), 1, hop >= 2), at, tm)
            at += tm.hold * ms
            for hop in range(4):
                if hop > 0:
                    at += tm.proc[CHAIN[hop]] * ms
                at = self._send(hop, True, req("BYE", cid_at(hop), 2, hop >= 2), at, tm)
            at += tm.ring * ms
            for hop in (3, 2, 1, 0):
                if hop < 3:
                    at += tm.proc[CHAIN[hop + 1]] * ms
                at = self._send(
                    hop, False, resp(200, "OK", cid_at(hop), 2, "BYE", hop >= 2), at, tm
                )
        self.t = at + 10 * ms
        return cid


def expected_srd(timing: Timing, handshakes: tuple[bool, bool, bool, bool] = (False,) * 4) -> float:
    """The SRD (ms) the synthetic chain produces: every transit twice, each proxy twice."""
    tm = timing
    return (
        2 * sum(tm.transit)
        + 2 * (tm.proc["vsp"] + tm.proc["esrp"] + tm.proc["psap-manhattan"])
        + tm.lost
        + tm.ring
        + sum(tm.handshake for h in handshakes if h)
    )
