"""Dialog paths a proxy remembers: where an in-dialog request goes when it does not say.

RFC 3261 §12.2.1.1 / §16.12: a request inside a dialog carries its own route (the Route set
taken from Record-Route, and the peer's Contact as Request-URI), so a record-routing proxy
needs no dialog state. Real callers are not always that tidy: i3 test suites and older gear
send the ACK or BYE of a 911 call with the dialed `urn:service:sos` as Request-URI and no
Route at all. Routed as it stands such a request is unroutable (416), and the call taker
never gets the ACK (it retransmits its 2xx, then hangs up) or the BYE (the call stays up).

So every proxy remembers, when the 2xx of a dialog-creating INVITE passes, what it saw of
the dialog (`DialogPath`): the caller's Contact, the callee's Contact and the 2xx's
Record-Route. When an in-dialog request (it has a To tag) arrives whose Route set is empty
and whose Request-URI it cannot route, the proxy looks the dialog up by Call-ID and tags
(§12: the dialog id; which tag is in From says the direction) and rebuilds the request's
route as the sender should have (`reroute`): the Request-URI becomes the other side's
Contact, the Route set the recorded hops past this proxy. A request with a To tag that
matches no dialog and cannot be routed gets 481 (§12.2.2), never 416.

Only the unusual request pays for a lookup (the hot path, a request with a Route or a
routable Request-URI, never looks). The table is bounded: entries leave after the BYE's
final answer, after `lifetime` seconds, or oldest first beyond `max_entries`. Pure: the
caller passes the clock. The table is per process: with `workers` > 1, such a request that
reaches another worker than the one the 2xx passed through gets 481 (the kernel keeps one
UDP source on one worker, so a caller's own requests find theirs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ng911.errors import Ng911Error
from ng911.sip.message import Request, Response, parse_comma_list
from ng911.sip.uri import URI, parse_name_addr

__all__ = ["DialogPath", "DialogTable", "path_of", "reroute"]

#: An emergency call may last hours (a caller who cannot hang up, a long incident).
DEFAULT_LIFETIME = 12 * 3600.0
#: ~1 KB per dialog: a flood of answered calls costs at most ~20 MB here.
DEFAULT_MAX_ENTRIES = 20_000


class DialogPath:
    """What a proxy saw of one dialog when its 2xx passed (raw header text, parsed on use).

    `record_route` is the 2xx's Record-Route, top (callee side) first (RFC 3261 §16.6 item 4:
    each proxy pushes its entry on top). `down_uri`/`down_route` are the Request-URI and top
    Route of the INVITE as this proxy forwarded it, `up_uri` where the INVITE came from:
    the fallbacks when a side sent no Contact. Read-only by convention; a plain class, not a
    dataclass, because one is made per call and the compiled build runs a written
    `__init__` natively (a dataclass's generated one is interpreted).
    """

    __slots__ = (
        "callee_target", "caller_target", "down_route", "down_uri", "record_route", "up_uri",
    )  # fmt: skip

    def __init__(
        self,
        caller_target: str | None,
        callee_target: str | None,
        record_route: tuple[str, ...],
        down_uri: URI,
        down_route: str | None,
        up_uri: str | None,
    ) -> None:
        self.caller_target = caller_target
        self.callee_target = callee_target
        self.record_route = record_route
        self.down_uri = down_uri
        self.down_route = down_route
        self.up_uri = up_uri

    def __repr__(self) -> str:
        return (
            f"DialogPath(caller_target={self.caller_target!r}, "
            f"callee_target={self.callee_target!r}, record_route={self.record_route!r}, "
            f"down_uri={self.down_uri!r}, down_route={self.down_route!r}, up_uri={self.up_uri!r})"
        )


def path_of(
    received: Request, forwarded: Request, ok: Response, *, up_uri: str | None = None
) -> DialogPath:
    """The `DialogPath` of a dialog: the INVITE as `received` and as `forwarded`, its 2xx."""
    return DialogPath(
        caller_target=received.headers.get("Contact"),
        callee_target=ok.headers.get("Contact"),
        # whole fields, split on use: the 2xx of every call passes here, a lookup is rare
        record_route=tuple(v for n, v in ok.headers if n == "Record-Route"),
        down_uri=forwarded.uri,
        down_route=forwarded.headers.get("Route"),
        up_uri=up_uri,
    )


def _past_us(entries: list[str], is_own: Callable[[URI], bool]) -> list[str]:
    """The entries after our last own one (all of them if none is ours)."""
    last = -1
    for i, entry in enumerate(entries):
        try:
            if is_own(parse_name_addr(entry).uri):
                last = i
        except Ng911Error:
            continue
    return entries[last + 1 :]


def _contact_uri(value: str | None) -> URI | None:
    if value is None or value.strip() == "*":
        return None
    try:
        return parse_name_addr(value).uri
    except Ng911Error:
        return None


def reroute(
    request: Request, path: DialogPath, *, downstream: bool, is_own: Callable[[URI], bool]
) -> None:
    """Give `request` (in place; it has no Route left) the route its sender should have
    used (RFC 3261 §12.2.1.1): the other side's Contact as Request-URI, the recorded
    Record-Route hops past us as Route set (in the caller's order going downstream, the
    2xx's order going upstream)."""
    rr = [entry for field in path.record_route for entry in parse_comma_list(field)]
    if downstream:
        rr.reverse()  # §12.1.2: the caller's route set is the Record-Route reversed
    routes = _past_us(rr, is_own)
    target = _contact_uri(path.callee_target if downstream else path.caller_target)
    if target is None:
        if downstream:
            target = path.down_uri
            if not routes and path.down_route is not None:
                routes = [path.down_route]
        elif not routes and path.up_uri is not None:
            routes = [f"<{path.up_uri}>"]
    if target is not None:
        request.uri = target
    request.headers.remove("Route")
    for r in routes:
        request.headers.add("Route", r)


class _Entry:
    __slots__ = ("callee_tag", "caller_tag", "expires", "path")

    def __init__(self, path: DialogPath, caller_tag: str, callee_tag: str, expires: float) -> None:
        self.path = path
        self.caller_tag = caller_tag
        self.callee_tag = callee_tag
        self.expires = expires


DialogKey = tuple[str, str, str]  # Call-ID, From tag, To tag of a request inside the dialog


class DialogTable:
    """Dialog paths by Call-ID and tags, bounded in size and age (oldest leave first)."""

    def __init__(
        self, *, lifetime: float = DEFAULT_LIFETIME, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self.lifetime = lifetime
        self.max_entries = max_entries
        # by the caller-side key (Call-ID, caller tag, callee tag), in creation order
        # (an OrderedDict: popping its oldest entry is O(1), a dict's degrades as it empties)
        self._entries: OrderedDict[DialogKey, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(
        self, call_id: str, caller_tag: str, callee_tag: str, path: DialogPath, now: float
    ) -> None:
        """The 2xx of a dialog passed (again: a retransmission or another fork's 2xx)."""
        key = (call_id, caller_tag, callee_tag)
        self._entries[key] = _Entry(path, caller_tag, callee_tag, now + self.lifetime)
        self._entries.move_to_end(key)  # a refresh moves it to the young end
        self._expire(now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _expire(self, now: float) -> None:
        # lifetimes are equal, so the oldest entries expire first: stop at the first live one
        entries = self._entries
        while entries:
            key = next(iter(entries))
            if entries[key].expires > now:
                return
            entries.popitem(last=False)

    def lookup(self, request: Request, now: float) -> tuple[DialogPath, bool] | None:
        """The path of `request`'s dialog and its direction (True: caller → callee)."""
        from_tag, to_tag = request.from_addr.tag, request.to_addr.tag
        if not from_tag or not to_tag:
            return None
        call_id = request.call_id
        entry = self._entries.get((call_id, from_tag, to_tag))
        downstream = True
        if entry is None:
            entry = self._entries.get((call_id, to_tag, from_tag))
            downstream = False
        if entry is None:
            return None
        if entry.expires <= now:
            self._expire(now)
            return None
        return entry.path, downstream

    def forget(self, request: Request) -> None:
        """The dialog of `request` (a BYE that got its final answer) is over."""
        from_tag, to_tag = request.from_addr.tag or "", request.to_addr.tag or ""
        call_id = request.call_id
        self._entries.pop((call_id, from_tag, to_tag), None)
        self._entries.pop((call_id, to_tag, from_tag), None)
