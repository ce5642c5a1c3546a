"""SIP requests and responses, and their header multimap.

Headers are kept as (name, raw value) pairs in wire order and parsed only when asked
(`Message.top_via`, `Message.from_addr`...), with the result cached until the headers change.
A proxy that reads the top Via, Route, Max-Forwards and Call-ID pays for nothing else, and
forwards every other header value byte-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Self, TypeVar

from ng911.sip.errors import SipParseError
from ng911.sip.headers import CSeq, Via, parse_cseq, parse_via
from ng911.sip.uri import (
    URI,
    NameAddr,
    bounded_int,
    parse_name_addr,
    parse_name_addr_list,
    split_quoted,
)

T = TypeVar("T")

# Canonical spellings of the headers we know; anything else is kept as received.
_CANONICAL = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-ID", "Content-Language",
    "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires",
    "From", "Geolocation", "Geolocation-Error", "Geolocation-Routing", "History-Info",
    "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version",
    "Min-Expires", "Min-SE", "Organization", "P-Asserted-Identity", "P-Preferred-Identity",
    "Path", "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization",
    "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By",
    "Reject-Contact", "Replaces", "Reply-To", "Request-Disposition", "Require",
    "Resource-Priority", "Retry-After", "Route", "RSeq", "Server", "Service-Route",
    "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State",
    "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate",
)  # fmt: skip

# RFC 3261 §7.3.3 and later RFCs: compact forms.
_COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact",
    "k": "Supported", "l": "Content-Length", "m": "Contact", "n": "Identity-Info",
    "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To", "u": "Allow-Events",
    "v": "Via", "x": "Session-Expires", "y": "Identity",
}  # fmt: skip

# name as written (any case seen so far) -> (key, canonical name). Interning the common
# spellings makes header lookup one dict hit per line on the parse path.
_NAMES: Final[dict[str, tuple[str, str]]] = {}
for _n in _CANONICAL:
    for _spelling in (_n, _n.lower(), _n.upper()):
        _NAMES[_spelling] = (_n.lower(), _n)
for _c, _n in _COMPACT.items():
    _NAMES[_c] = _NAMES[_c.upper()] = (_n.lower(), _n)
del _n, _c, _spelling

# Headers whose values are comma-separated lists (RFC 3261 §7.3.1): `get_all` splits them.
# Not Authorization & co. (commas inside), not Date, not From/To/Call-ID/CSeq.
COMMA_LISTS: Final = frozenset(
    {
        "via", "route", "record-route", "contact", "allow", "supported", "require",
        "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "call-info", "alert-info", "error-info", "in-reply-to",
        "content-encoding", "content-language", "warning", "path", "service-route",
        "geolocation", "resource-priority", "reason", "accept-contact", "reject-contact",
        "p-asserted-identity", "p-preferred-identity", "history-info", "security-client",
        "security-server", "security-verify", "p-associated-uri", "request-disposition",
    }
)  # fmt: skip


# Lazy-parse cache slots and the header each is read from: editing that header drops them.
CACHE_SLOTS: Final[dict[str, str]] = {
    "cseq": "cseq",
    "from": "from",
    "to": "to",
    "vias": "via",
    "top_via": "via",
    "top_via_branch": "via",
}

# the header fields `Request.essentials` keeps (lookup keys)
_ESSENTIAL: Final = frozenset({"via", "from", "to", "call-id", "cseq"})


def header_key(name: str) -> tuple[str, str]:
    """(lookup key, output name) of a header name in any case or compact form."""
    hit = _NAMES.get(name)
    if hit is not None:
        return hit
    name = name.strip()
    hit = _NAMES.get(name.lower())
    if hit is not None:
        return hit
    return name.lower(), name


def _split(key: str, value: str) -> list[str]:
    if key in COMMA_LISTS:
        if "," not in value:
            return [value]
        return [p.strip() for p in split_quoted(value, ",") if p.strip()]
    return [value]


class Headers:
    """Ordered multimap of header fields, case-insensitive, compact forms normalised.

    Each field is a line of the message (`Via: a, b` is one field with two values); values
    are strings exactly as received (line folding replaced by a space).

    The fields are held in one flat list, three strings per field (lookup key, output
    name, value), not a tuple per field: a proxy holds ~80 such tuples per call for the
    life of its transactions, each one allocated, freed and walked by the cyclic collector's
    young generation before the collector untracks it (2026-12-06, callgrind and perf).
    """

    __slots__ = ("_cache", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[str] = []
        self._cache: dict[str, Any] = {}
        for name, value in items:
            key, out = header_key(name)
            self._items.append(key)
            self._items.append(out)
            self._items.append(value)

    @classmethod
    def _from_parsed(cls, items: list[str]) -> Headers:
        """From a flat list of (key, output name, value) triples, taken as it is."""
        # Headers() by name, not cls(): mypyc calls a class it can name natively, a `cls` by
        # the generic call protocol (and a compiled class has no `__new__` to call)
        h = Headers()
        h._items = items
        return h

    def cached(self, slot: str, fn: Callable[[], T]) -> T:
        """`fn()`, computed once until the header it is read from changes (the lazy-parse
        cache). The slots in `CACHE_SLOTS` are dropped only when their own header is edited
        (a proxy's Via push/pop keeps From, To and CSeq parsed); any other slot on every
        edit."""
        try:
            return self._cache[slot]  # type: ignore[no-any-return]
        except KeyError:
            value = self._cache[slot] = fn()
            return value

    def remember(self, slot: str, value: object) -> None:
        """Seed the cache with a value the caller already holds parsed (the Via it just
        wrote), so that it is not parsed back from text."""
        self._cache[slot] = value

    def _edited(self, key: str) -> None:
        cache = self._cache
        if cache:
            stale = [s for s in cache if CACHE_SLOTS.get(s, key) == key]
            for s in stale:
                del cache[s]

    def _find(self, key: str) -> int:
        """Index in `_items` of the first field whose key is `key`, or -1."""
        items = self._items
        for i in range(0, len(items), 3):
            if items[i] == key:
                return i
        return -1

    def get(self, name: str) -> str | None:
        """The first value (the first element of a comma list), or None."""
        key = header_key(name)[0]
        i = self._find(key)
        if i < 0:
            return None
        v = self._items[i + 2]
        if key in COMMA_LISTS and "," in v:
            parts = _split(key, v)
            return parts[0] if parts else v
        return v

    def get_field(self, name: str) -> str | None:
        """The first field's whole value, without splitting."""
        i = self._find(header_key(name)[0])
        return self._items[i + 2] if i >= 0 else None

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, comma lists split outside quotes and <>."""
        key = header_key(name)[0]
        items = self._items
        out: list[str] = []
        for i in range(0, len(items), 3):
            if items[i] == key:
                out.extend(_split(key, items[i + 2]))
        return out

    def add(self, name: str, value: str) -> None:
        key, out = header_key(name)
        self._items.append(key)
        self._items.append(out)
        self._items.append(value)
        self._edited(key)

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first field of `name` (a proxy's Via, Route, Record-Route),
        or at the top when there is none."""
        key, out = header_key(name)
        pos = max(self._find(key), 0)
        items = self._items
        items.insert(pos, value)
        items.insert(pos, out)
        items.insert(pos, key)
        self._edited(key)

    def set(self, name: str, value: str) -> None:
        """Replace every field of `name` by one, at the position of the first (else at the end)."""
        key, out = header_key(name)
        old = self._items
        items: list[str] = []
        placed = False
        for i in range(0, len(old), 3):
            if old[i] != key:
                items.append(old[i])
                items.append(old[i + 1])
                items.append(old[i + 2])
            elif not placed:
                items.append(key)
                items.append(out)
                items.append(value)
                placed = True
        if not placed:
            items.append(key)
            items.append(out)
            items.append(value)
        self._items = items
        self._edited(key)

    def remove(self, name: str) -> int:
        """Remove every field of `name`; returns how many fields were removed."""
        key = header_key(name)[0]
        old = self._items
        items: list[str] = []
        for i in range(0, len(old), 3):
            if old[i] != key:
                items.append(old[i])
                items.append(old[i + 1])
                items.append(old[i + 2])
        removed = (len(old) - len(items)) // 3
        if removed:
            self._items = items
            self._edited(key)
        return removed

    def remove_first(self, name: str) -> str | None:
        """Pop the first VALUE of `name` (the top Via, the top Route), splitting a comma list."""
        key = header_key(name)[0]
        i = self._find(key)
        if i < 0:
            return None
        items = self._items
        v = items[i + 2]
        self._edited(key)
        if key not in COMMA_LISTS or "," not in v:
            del items[i : i + 3]
            return v
        pieces = split_quoted(v, ",")
        first_at = next((j for j, p in enumerate(pieces) if p.strip()), None)
        if first_at is None:
            del items[i : i + 3]
            return v
        rest = pieces[first_at + 1 :]
        if not any(p.strip() for p in rest):
            del items[i : i + 3]
        else:
            items[i + 2] = ",".join(rest).lstrip()  # the rest of the field exactly as written
        return pieces[first_at].strip()

    def replace_first(self, name: str, value: str) -> bool:
        """Replace the first VALUE of `name` in place (the top Via a server stamps with
        received/rport, RFC 3261 §18.2.1); the rest of a comma list stays as written, in
        a field of its own just below. False when there is no such header."""
        key = header_key(name)[0]
        i = self._find(key)
        if i < 0:
            return False
        items = self._items
        v = items[i + 2]
        self._edited(key)
        if key in COMMA_LISTS and "," in v:
            pieces = split_quoted(v, ",")
            first_at = next((j for j, p in enumerate(pieces) if p.strip()), None)
            if first_at is not None:
                rest = pieces[first_at + 1 :]
                items[i + 2] = value
                if any(p.strip() for p in rest):
                    items[i + 3 : i + 3] = (key, items[i + 1], ",".join(rest).lstrip())
                return True
        items[i + 2] = value
        return True

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return self._find(header_key(name)[0]) >= 0

    def fields(self) -> list[tuple[str, str, str]]:
        """(key, output name, value) per field, in wire order (a copy)."""
        items = self._items
        return [(items[i], items[i + 1], items[i + 2]) for i in range(0, len(items), 3)]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(name, value) per field, in wire order, names in their long canonical form."""
        items = self._items
        return iter([(items[i + 1], items[i + 2]) for i in range(0, len(items), 3)])

    def __len__(self) -> int:
        return len(self._items) // 3

    def text_size(self) -> int:
        """Characters of the header values: what holding this header section costs, about
        (an element's memory budget for the requests it keeps)."""
        items = self._items
        return sum(len(items[i]) for i in range(2, len(items), 3))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._pairs(None) == other._pairs(None)

    __hash__ = None  # type: ignore[assignment]

    def _pairs(self, skip: str | None) -> list[tuple[str, str]]:
        """(key, value) per field, but those of key `skip`: what equality compares."""
        items = self._items
        return [(items[i], items[i + 2]) for i in range(0, len(items), 3) if items[i] != skip]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        """An independent copy; parsed values are immutable, so the cache is shared out
        too (a proxy's copy of a request does not parse From/To/CSeq/Via again)."""
        h = Headers._from_parsed(self._items.copy())
        if self._cache:
            h._cache = dict(self._cache)
        return h

    def same_fields(self, other: Headers) -> bool:
        """Equal apart from Content-Length, which `to_bytes` derives from the body: what
        message equality (and so parse -> serialise -> parse) compares."""
        return self._pairs("content-length") == other._pairs("content-length")


def _required(msg: Message, name: str) -> str:
    v = msg.headers.get(name)
    if v is None:
        raise SipParseError(f"missing {name}", 400, msg._partial())
    return v


def _parsed(msg: Message, slot: str, parse: Callable[[str], T], name: str) -> T:
    """`parse` of header `name`'s first value, cached in `slot` until that header changes; a
    lazily raised parse error carries the request, so it can still be answered.

    No closures here (nor in the properties that call this): compiled by mypyc, a closure
    and its environment are a reference cycle holding the message, which only the cyclic
    collector frees (tests/elements/test_chain.py checks that calls leave no cycles)."""
    cache = msg.headers._cache
    hit = cache.get(slot)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    try:
        value = parse(_required(msg, name))
    except SipParseError as e:
        if e.partial is None:
            e.partial = msg._partial()
        raise
    cache[slot] = value
    return value


class Message:
    """What requests and responses share: headers, body, lazily parsed convenience views."""

    __slots__ = ("body", "headers")

    def __init__(
        self, headers: Headers | Iterable[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        if headers is None:
            headers = Headers()
        elif not isinstance(headers, Headers):
            headers = Headers(headers)
        self.headers: Headers = headers
        self.body: bytes = body

    def _partial(self) -> Request | None:
        return None

    @property
    def first_line(self) -> str:
        raise NotImplementedError

    def _start(self) -> tuple[object, object]:
        """The start line's values: (method, Request-URI) or (status, reason)."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        kind = Request if isinstance(self, Request) else Response
        if not isinstance(other, kind):
            return NotImplemented  # a request never equals a response
        return (
            self._start() == other._start()
            and self.headers.same_fields(other.headers)
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        first, second = self._start()
        return f"<{type(self).__name__} {first} {second}>"

    @property
    def call_id(self) -> str:
        return _required(self, "Call-ID")

    @property
    def cseq(self) -> CSeq:
        return _parsed(self, "cseq", parse_cseq, "CSeq")

    @property
    def cseq_method(self) -> str:
        """`cseq.method`, straight from the parse cache when CSeq is parsed already (the
        parser parses it; a copy shares it): per-message counters read it on every message."""
        parsed = self.headers._cache.get("cseq")
        return parsed.method if parsed is not None else self.cseq.method  # type: ignore[no-any-return]

    @property
    def from_addr(self) -> NameAddr:
        return _parsed(self, "from", parse_name_addr, "From")

    @property
    def to_addr(self) -> NameAddr:
        return _parsed(self, "to", parse_name_addr, "To")

    @property
    def vias(self) -> list[Via]:
        cache = self.headers._cache
        hit: list[Via] | None = cache.get("vias")
        if hit is None:
            hit = []
            for v in self.headers.get_all("Via"):
                try:
                    hit.append(parse_via(v))
                except SipParseError as e:
                    e.partial = self._partial()
                    raise
            if not hit:
                raise SipParseError("missing Via", 400, self._partial())
            cache["vias"] = hit
        return list(hit)

    @property
    def top_via(self) -> Via:
        return _parsed(self, "top_via", parse_via, "Via")

    @property
    def branch(self) -> str | None:
        return self.top_via.branch

    @property
    def max_forwards(self) -> int | None:
        v = self.headers.get("Max-Forwards")
        if v is None:
            return None
        v = v.strip()
        # RFC 3261 §20.22: 0-255 (RFC 4475 §3.1.2.4: larger values are a 400).
        mf = bounded_int(v, 255)
        if mf is None:
            raise SipParseError(f"bad Max-Forwards: {v[:20]!r}", 400, self._partial())
        return mf

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    def _name_addrs(self, name: str) -> list[NameAddr]:
        out: list[NameAddr] = []
        for v in self.headers.get_all(name):
            try:
                out.append(parse_name_addr(v))
            except SipParseError as e:
                e.partial = self._partial()
                raise
        return out

    @property
    def routes(self) -> list[NameAddr]:
        """Route values, top first (parsed on each call)."""
        return self._name_addrs("Route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._name_addrs("Record-Route")

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values; `Contact: *` (REGISTER, §10.2.2) is not a name-addr: check
        `headers.get("Contact") == "*"` first."""
        return self._name_addrs("Contact")

    def validate(self) -> None:
        """Parse every structured header we know, raising `SipParseError(400)` on the first
        bad one. Parsing is lazy; call this where a full check is wanted (a UAS)."""
        self.vias  # noqa: B018
        self.from_addr  # noqa: B018
        self.to_addr  # noqa: B018
        self.cseq  # noqa: B018
        self.call_id  # noqa: B018
        self.max_forwards  # noqa: B018
        self.routes  # noqa: B018
        self.record_routes  # noqa: B018
        if self.headers.get("Contact") != "*":
            self.contacts  # noqa: B018

    def to_bytes(self) -> bytes:
        """Wire form. Content-Length is set from the body (kept where it was, else last)."""
        # One flat list of pieces joined once: no intermediate string per header line.
        parts = [self.first_line, "\r\n"]
        length = str(len(self.body))
        seen = False
        items = self.headers._items
        for i in range(0, len(items), 3):
            if items[i] == "content-length":
                if not seen:
                    parts.append("Content-Length: ")
                    parts.append(length)
                    parts.append("\r\n")
                    seen = True
            else:
                parts.append(items[i + 1])
                parts.append(": ")
                parts.append(items[i + 2])
                parts.append("\r\n")
        if not seen:
            parts.append("Content-Length: ")
            parts.append(length)
            parts.append("\r\n")
        parts.append("\r\n")
        head = "".join(parts).encode()
        return head + self.body if self.body else head

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def copy(self) -> Self:
        raise NotImplementedError


class Request(Message):
    """A SIP request (RFC 3261 §7.1)."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: URI,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method: str = method
        self.uri: URI = uri

    def _partial(self) -> Request | None:
        return self

    @property
    def first_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def copy(self) -> Self:
        return type(self)(self.method, self.uri, self.headers.copy(), self.body)

    def essentials(self, extra: frozenset[str] = frozenset()) -> Request:
        """The request as a finished transaction still needs it: the request line and Via,
        From, To, Call-ID and CSeq (what matches a retransmission, RFC 3261 §17.2.3, and
        what a response copies, §8.2.6.2), and the fields of lookup keys `extra`; no body.

        Why: a finished INVITE transaction waits 64*T1 on every transport (RFC 6026 Timer
        L and M) and a non-INVITE one over UDP (Timer J, K). Holding the whole request that
        long, its SDP and PIDF-LO and every header, was most of what an element kept per
        call (`bench/chain.py`: ~100 KB a call across the chain before)."""
        items = self.headers._items
        keep: list[str] = []
        for i in range(0, len(items), 3):
            if items[i] in _ESSENTIAL or items[i] in extra:
                keep.append(items[i])
                keep.append(items[i + 1])
                keep.append(items[i + 2])
        # nothing parsed comes along: a waiting transaction seldom reads a field again, and
        # the parsed Vias, addresses and their parameters are most of a message's objects
        return Request(self.method, self.uri, Headers._from_parsed(keep))

    def _start(self) -> tuple[object, object]:
        return self.method, self.uri


class Response(Message):
    """A SIP response (RFC 3261 §7.2)."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status: int = status
        self.reason: str = REASONS.get(status, "") if reason is None else reason

    @property
    def first_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        return 100 <= self.status < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_final(self) -> bool:
        return self.status >= 200

    def copy(self) -> Self:
        return type(self)(self.status, self.reason, self.headers.copy(), self.body)

    def _start(self) -> tuple[object, object]:
        return self.status, self.reason


# RFC 3261 §21 and later RFCs: default reason phrases.
REASONS: Final[dict[int, str]] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    424: "Bad Location Information", 428: "Use Identity Header", 429: "Provide Referrer Identity",
    433: "Anonymity Disallowed", 436: "Bad Identity-Info", 437: "Unsupported Certificate",
    438: "Invalid Identity Header", 439: "First Hop Lacks Outbound Support",
    470: "Consent Needed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted",
}  # fmt: skip

# Requests that create a dialog: their 1xx/2xx answers carry Record-Route (§12.1.1).
DIALOG_CREATING: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> Response:
    """A response to `request` built as RFC 3261 §8.2.6 says.

    Via (every value, in order), From, Call-ID and CSeq are copied as written; To too, with
    `to_tag` added when given and To has no tag yet (§8.2.6.2). Record-Route is copied into
    101-299 answers to dialog-creating requests (§12.1.1), Timestamp into a 100 (§8.2.6.1).
    Works on a `SipParseError.partial` request: nothing but To is parsed.
    """
    items: list[str] = []
    req_items = request.headers._items
    n = len(req_items)
    for key in ("via", "from", "to", "call-id", "cseq"):
        for i in range(0, n, 3):
            if req_items[i] != key:
                continue
            v = req_items[i + 2]
            if key == "to" and to_tag is not None:
                try:
                    to = parse_name_addr(v)
                except SipParseError:
                    to = None
                if to is not None and to.tag is None:
                    v = f"{v};tag={to_tag}"
            items.append(key)
            items.append(req_items[i + 1])
            items.append(v)
    copied = (
        "timestamp"
        if status == 100
        else "record-route"
        if 100 < status < 300 and request.method in DIALOG_CREATING
        else ""
    )
    if copied:
        for i in range(0, n, 3):
            if req_items[i] == copied:
                items.append(req_items[i])
                items.append(req_items[i + 1])
                items.append(req_items[i + 2])
    resp = Response(status, reason, Headers._from_parsed(items))
    cseq = request.headers._cache.get("cseq")
    if cseq is not None:  # copied as written: the request's parsed CSeq is the response's
        resp.headers.remember("cseq", cseq)
    for name, value in extra:
        resp.headers.add(name, value)
    return resp


def parse_comma_list(value: str) -> list[str]:
    """Split a comma-separated header value outside quotes and <> (Allow, Supported...)."""
    return [p.strip() for p in split_quoted(value, ",") if p.strip()]


__all__ = [
    "COMMA_LISTS",
    "REASONS",
    "Headers",
    "Message",
    "Request",
    "Response",
    "header_key",
    "make_response",
    "parse_comma_list",
    "parse_name_addr_list",
]
