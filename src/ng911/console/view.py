"""What the console shows of a network event: a small frame for the live views, and the
full inspection of one message (its SIP text, PIDF-LO, call identifiers) on demand.

A message is drawn once, when its sender reports it ("out"); its receiver is found by the
remote address: a listening address is a host's (`RunningChain.addresses`), an ephemeral
one (the response path of a TCP/TLS connection) is whichever element last used it as its
own local address. The hop then follows from the two roles (`ng911.observe.hops`).
"""

from __future__ import annotations

from typing import Any

from ng911.elements.identifiers import extract_ids
from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Circle, Ellipse, Point, Polygon, reference_point
from ng911.location.pidf import PidfLo, parse_pidf
from ng911.lost.events import LostQueryEvent
from ng911.net.events import HandshakeEvent, MessageEvent, WireEvent
from ng911.observe.hops import hop_of_roles
from ng911.sip.body import find_part
from ng911.sip.message import Message, Request
from ng911.sip.parse import parse_message

Frame = dict[str, Any]
MAX_ENDPOINTS = 20000  # ephemeral endpoints remembered (bounded: cleared when exceeded)
PIDF_TYPE = "application/pidf+xml"


class Describer:
    """Turns chain events into console frames, naming both ends and the hop."""

    def __init__(
        self, roles: dict[str, str], addresses: dict[str, str], transports: dict[str, str]
    ) -> None:
        self.roles = roles
        self.by_ip = {ip: name for name, ip in addresses.items()}
        self.transports = transports
        self.endpoints: dict[tuple[str, int], str] = {}
        self.counters: dict[str, dict[str, int]] = {n: {} for n in roles}
        self.full_handshakes = 0  # not resumed: a call set up meanwhile was "cold"
        # (element, connection) → the TLS records of the last bytes it wrote: a TLS message's
        # ciphertext is written (WireEvent) just before its MessageEvent is reported
        self.last_wire: dict[tuple[str, int], list[int]] = {}

    def _count(self, element: str, what: str) -> None:
        c = self.counters.setdefault(element, {})
        c[what] = c.get(what, 0) + 1

    def _learn(self, element: str, local: tuple[str, int]) -> None:
        if len(self.endpoints) >= MAX_ENDPOINTS:
            self.endpoints.clear()
        self.endpoints[(local[0], local[1])] = element

    def peer(self, remote: tuple[str, int]) -> str | None:
        return self.endpoints.get((remote[0], remote[1])) or self.by_ip.get(remote[0])

    def hop(self, a: str, b: str | None) -> str | None:
        if b is None or a not in self.roles or b not in self.roles:
            return None
        return hop_of_roles(self.roles[a], self.roles[b])

    def __call__(self, ev: Any) -> Frame | None:
        if isinstance(ev, WireEvent):
            if ev.transport == "tls":
                if len(self.last_wire) >= MAX_ENDPOINTS:
                    self.last_wire.clear()
                self.last_wire[(ev.element, ev.connection_id)] = tls_records(ev.data)
            return None
        if isinstance(ev, MessageEvent):
            self._learn(ev.element, ev.local)
            if ev.direction != "out":
                return None
            to = self.peer(ev.remote)
            line = ev.first_line
            if line.startswith("INVITE "):
                self._count(ev.element, "invites")
            records: list[int] = []
            if ev.transport == "tls" and ev.connection_id is not None:
                records = self.last_wire.pop((ev.element, ev.connection_id), [])
                if sum(records) != ev.wire_bytes:
                    records = []  # not this message's bytes: show none rather than wrong ones
            return {
                "records": records,
                "type": "msg",
                "ts": ev.ts,
                "from": ev.element,
                "to": to,
                "hop": self.hop(ev.element, to),
                "transport": ev.transport,
                "line": line[:120],
                "call": ev.call_id,
                "sip_bytes": ev.sip_bytes,
                "wire_bytes": ev.wire_bytes,
            }
        if isinstance(ev, HandshakeEvent):
            self._learn(ev.element, ev.local)
            if ev.role != "server":  # one frame per handshake: the server's view
                return None
            self._count(ev.element, "handshakes")
            if not ev.resumed:
                self.full_handshakes += 1
            peer = self.peer(ev.remote)
            return {
                "type": "handshake",
                "ts": ev.ts,
                "element": ev.element,
                "peer": peer,
                "hop": self.hop(ev.element, peer),
                "resumed": ev.resumed,
                "mutual": bool(ev.peer_identities),
                "ok": ev.ok,
                "error": ev.error,
                "version": ev.version,
                "cipher": ev.cipher,
                "duration_ms": round(ev.duration * 1000, 2),
            }
        if isinstance(ev, LostQueryEvent):
            self._count(ev.element, "lost_queries")
            return {
                "type": "lost",
                "ts": ev.ts,
                "from": ev.element,
                "to": ev.server,
                "transport": ev.transport,
                "url": ev.url,
                "ok": ev.ok,
                "result": ev.result,
                "cached": ev.cached,
                "call": ev.call_id,
                "duration_ms": round(ev.duration * 1000, 2),
                "request_bytes": ev.request_bytes,
                "response_bytes": ev.response_bytes,
            }
        return None


def tls_records(data: bytes) -> list[int]:
    """Sizes of the TLS records in `data` (5-byte header + fragment each, RFC 8446 §5.1);
    what is left after the last whole record counts as one more (its true size unknown)."""
    sizes: list[int] = []
    i = 0
    while i + 5 <= len(data) and len(sizes) < 1000:
        n = 5 + int.from_bytes(data[i + 3 : i + 5], "big")
        sizes.append(min(n, len(data) - i))
        i += n
    if i < len(data) and not sizes:
        sizes.append(len(data))
    return sizes


# ------------------------------------------------------------------ the inspector


def shape_json(loc: Any) -> dict[str, Any]:
    """A PIDF-LO location as the inspector and the call-taker map draw it."""
    if isinstance(loc, CivicAddress):
        return {"shape": "civic", "fields": dict(loc.fields)}
    out: dict[str, Any] = {"shape": type(loc).__name__}
    try:
        ref = reference_point(loc)
        out["lat"], out["lon"] = ref.lat, ref.lon
    except Exception:
        pass
    if isinstance(loc, Circle):
        out["radius_m"] = loc.radius
    elif isinstance(loc, Ellipse):
        out.update(
            semi_major_m=loc.semi_major, semi_minor_m=loc.semi_minor, orientation=loc.orientation
        )
    elif isinstance(loc, Polygon):
        out["points"] = [[p.lat, p.lon] for p in loc.exterior]
    elif isinstance(loc, Point):
        out["radius_m"] = 0
    return out


def pidf_json(p: PidfLo) -> dict[str, Any]:
    return {
        "entity": p.entity,
        "locations": [
            {**shape_json(li.location), "method": li.method, "kind": li.kind} for li in p.locations
        ],
    }


def pidf_of(data: bytes) -> dict[str, Any] | None:
    """`pidf_of_message` of a message as it crossed the wire."""
    try:
        return pidf_of_message(parse_message(data))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def pidf_of_message(msg: Message) -> dict[str, Any] | None:
    """The PIDF-LO carried by a SIP message (by value), parsed; None when there is none;
    {"error": ...} when it does not parse (hostile or malformed input is shown, not raised)."""
    try:
        ctype = msg.headers.get("Content-Type")
        if not ctype or not msg.body:
            return None
        part = find_part(ctype, msg.body, mime=PIDF_TYPE)
        if part is None:
            return None
        return pidf_json(parse_pidf(part.body))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def inspect(frame: Frame, source: Any) -> dict[str, Any]:
    """Everything about one kept frame: for a message, its full text as it crossed the hop,
    its size on the wire (TLS records included) and its parsed PIDF-LO and identifiers; for
    a LoST exchange, the findService request and the answer as XML text (a cached answer
    crossed nothing: both empty)."""
    out: dict[str, Any] = {"frame": frame}
    if isinstance(source, LostQueryEvent):  # the findService request and its answer (XML)
        out["request_xml"] = source.request.decode("utf-8", "replace")
        out["response_xml"] = source.response.decode("utf-8", "replace")
        out["truncated"] = (
            len(source.request) < source.request_bytes
            or len(source.response) < source.response_bytes
        )
        return out
    if isinstance(source, MessageEvent):
        out["text"] = source.data.decode("utf-8", "replace")
        out["tls_overhead"] = source.wire_bytes - source.sip_bytes
        out["pidf"] = pidf_of(source.data)
        try:
            msg = parse_message(source.data)
            ids = extract_ids(msg)
            out["ids"] = {"call_id": ids.call_id, "incident_id": ids.incident_id}
            if isinstance(msg, Request):
                out["geolocation"] = msg.headers.get("Geolocation")
        except Exception as exc:
            out["parse_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return out
