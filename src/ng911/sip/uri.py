"""SIP, SIPS, TEL and URN URIs, and name-addr values.

Value types are immutable; `parse_uri(str(u)) == u` holds for every URI this module
produces (property-tested). The user and password parts are stored unescaped and escaped
again on output (RFC 3261 §19.1.2), so `sip:%61lice@x` and `sip:alice@x` parse to equal
objects. URI parameter and header values are stored as written: they are compared
escape- and case-insensitively by `equivalent` (RFC 3261 §19.1.4), never rewritten.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Self, TypeVar
from urllib.parse import quote, unquote

from ng911.sip.errors import SipParseError

Params = tuple[tuple[str, str | None], ...]
T = TypeVar("T")

_ALNUM: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_TOKEN: Final = _ALNUM | frozenset("-.!%*_+`'~")
_HOST: Final = _ALNUM | frozenset("-._")
_IPV6: Final = frozenset("0123456789abcdefABCDEF:.")
_SCHEME: Final = _ALNUM | frozenset("+-.")
_TEL_CHARS: Final = frozenset("0123456789abcdefABCDEF*#-.()")
_NOT_IN_URI: Final = frozenset(' \t\r\n<>"')
# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved ); alphanumerics are
# always safe for `quote`, these are the other characters left as they are ("?" is legal
# in a user but escaped on output, so no reading of the output is ambiguous).
_USER_SAFE: Final = "-_.!~*'()&=+$,;/"
_PASSWORD_SAFE: Final = "-_.!~*'()&=+$,"
# a user part made only of these comes out as it is: `quote` would leave it unchanged, and
# skipping it saves ~2 µs per URI written (seven per proxied call)
_USER_AS_IS: Final = _ALNUM | frozenset(_USER_SAFE)
# RFC 3261 §19.1.4: these parameters, when present in either URI, must be in both.
_MUST_MATCH: Final = ("user", "ttl", "method", "maddr", "transport")


def _unescape(s: str) -> str:
    return unquote(s) if "%" in s else s


def _bad(what: str, text: str) -> SipParseError:
    return SipParseError(f"bad {what}: {text[:80]!r}", 400)


def _within(s: str, allowed: frozenset[str]) -> bool:
    """Every character of `s` in `allowed`, a set holding the ASCII letters and digits.
    isalnum/isascii first: C loops with no object per character, true of nearly every token
    or user part a message carries; the set, one lookup per character, only for the rest."""
    return (s.isalnum() and s.isascii()) or allowed.issuperset(s)


def _is_token(s: str) -> bool:
    return bool(s) and _within(s, _TOKEN)


def _parse_params(text: str, what: str) -> Params:
    """`;a=1;b` (text without the leading `;`) -> (("a", "1"), ("b", None)); names lower-cased."""
    out: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            raise _bad(what, text)
        out.append((name, value.strip() if eq else None))
    return tuple(out)


def _format_params(params: Params) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def bounded_int(text: str, limit: int) -> int | None:
    """`text` as a non-negative decimal integer when it is one and at most `limit`, else None.

    Why not `int()` after `isdigit()`: CPython refuses to convert more than 4,300 digits
    (ValueError, a traceback in a parser that must only answer 400), and a number of
    thousands of digits is no port, CSeq or Content-Length anyway: its length is compared
    before anything is converted.
    """
    if not text.isascii() or not text.isdigit():
        return None
    if len(text) < 10:  # the usual port, CSeq, length: int() of a few digits is safe
        value = int(text)
    else:
        digits = text.lstrip("0") or "0"
        if len(digits) > len(str(limit)):
            return None
        value = int(digits)
    return value if value <= limit else None


def _get_param(params: Params, name: str) -> str | None:
    name = name.lower()
    for n, v in params:
        if n == name:
            return "" if v is None else v
    return None


def _set_params(params: Params, kw: dict[str, str | None]) -> Params:
    """Replace (in place) or append each keyword; a `_` in a keyword name stands for `-`."""
    updates = {k.replace("_", "-").lower(): v for k, v in kw.items()}
    out = [(n, updates.pop(n)) if n in updates else (n, v) for n, v in params]
    out.extend(updates.items())
    return tuple(out)


class Value:
    """Base of the immutable SIP values (URIs, name-addrs, Via, CSeq): equality, hashing
    and repr from `_fields()`, as a frozen dataclass had them.

    Why not `@dataclass(frozen=True)`: its generated `__init__` sets each field through
    `object.__setattr__` and stays interpreted under mypyc, ~0.5-1 µs per object where a
    plain compiled class takes ~0.05 µs, and a parsed INVITE makes about ten of them. So
    these are plain classes with `__slots__` and a written `__init__`; their attributes are
    `Final` (mypy forbids assigning them, the compiled build makes them read-only). The
    records an element or a transport makes per message or per call (`net.address.Source`,
    the routing plan's `RouteCandidate`, a body part...) are built on it for the same reason.
    """

    __slots__ = ()
    _FIELDS: ClassVar[tuple[str, ...]] = ()  # the names of `_fields()`, for repr

    def _fields(self) -> tuple[object, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        # as a dataclass: equal only to an instance of the same class, field by field
        if type(other) is not type(self) or not isinstance(other, Value):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={v!r}" for n, v in zip(self._FIELDS, self._fields(), strict=True))
        return f"{type(self).__name__}({args})"


class _Keep:
    """The default of `replace()` arguments: keep the current value (None is a value)."""

    __slots__ = ()


KEEP: Final = _Keep()


def _pick(new: T | _Keep, old: T) -> T:
    return old if isinstance(new, _Keep) else new


class Parameterised(Value):
    """What the values with `;name=value` parameters share (URIs, name-addrs, Via).

    Each subclass holds `params` and makes its copies with `_with_params`; the
    `with`/`without` methods return copies.
    """

    __slots__ = ()

    @property
    def params(self) -> Params:
        raise NotImplementedError

    def _with_params(self, params: Params) -> Self:
        raise NotImplementedError

    def param(self, name: str) -> str | None:
        """The parameter's value, `""` for a flag parameter, None when absent."""
        return _get_param(self.params, name)

    def has_param(self, name: str) -> bool:
        return _get_param(self.params, name) is not None

    def with_params(self, **kw: str | None) -> Self:
        """Set or replace parameters (`None` makes a flag: `with_params(lr=None)`)."""
        return self.with_param_map(kw)

    def with_param_map(self, kw: dict[str, str | None]) -> Self:
        """`with_params` from a dict: what the transport stamps on every request's Via.
        Compiled code calls a `**kw` method through Python's keyword call (the arguments
        packed, then parsed by name); a dict argument is a plain C call."""
        return self._with_params(_set_params(self.params, kw))

    def without_params(self, *names: str) -> Self:
        drop = {n.lower() for n in names}
        return self._with_params(tuple(p for p in self.params if p[0] not in drop))


def _parse_host(hostport: str, text: str) -> tuple[str, int | None]:
    """`host[:port]` -> (lower-cased host, port). IPv6 references keep their brackets.

    Kept by its text like URIs (`PARSE_CACHE_MAX`): every Via of a hop carries the same
    sent-by, and its checks (character set, port range) cost ~4 k instructions each time."""
    hit = _HOSTPORTS.get(hostport)
    if hit is not None:
        return hit
    parsed = _parse_hostport(hostport, text)
    keep_parsed(_HOSTPORTS, hostport, parsed)
    return parsed


def _parse_hostport(hostport: str, text: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _bad("IPv6 reference", text)
        host = hostport[: end + 1].lower()
        if not _IPV6.issuperset(host[1:-1]) or ":" not in host:
            raise _bad("IPv6 reference", text)
        rest = hostport[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise _bad("host", text)
        port_text = rest[1:]
    else:
        host, colon, port_text = hostport.partition(":")
        host = host.lower()
        if not host or not _HOST.issuperset(host):
            raise _bad("host", text)
        if not colon:
            return host, None
    port = bounded_int(port_text, 65535)
    if port is None:
        raise _bad("port", text)
    return host, port


def format_host(host: str, port: int | None) -> str:
    """`host[:port]`; used by Via and by transports."""
    return host if port is None else f"{host}:{port}"


class SipURI(Parameterised):
    """A `sip:` or `sips:` URI (RFC 3261 §19.1)."""

    # `_text`: the wire form, made on the first str() (not a field: equality, hash and repr
    # ignore it). The same URI objects are written again and again (the parse cache hands
    # out one object per text; an element's own Record-Route and Contact URIs).
    __slots__ = ("_text", "headers", "host", "params", "password", "port", "scheme", "user")
    _FIELDS = ("scheme", "user", "password", "host", "port", "params", "headers")

    def __init__(
        self,
        scheme: str,
        user: str | None,
        password: str | None,
        host: str,
        port: int | None = None,
        params: Params = (),
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.scheme: Final = scheme
        self.user: Final = user
        self.password: Final = password
        self.host: Final = host
        self.port: Final = port
        self.params: Final = params
        self.headers: Final = headers
        self._text: str | None = None

    def _fields(self) -> tuple[object, ...]:
        return (
            self.scheme,
            self.user,
            self.password,
            self.host,
            self.port,
            self.params,
            self.headers,
        )

    def _with_params(self, params: Params) -> SipURI:
        return SipURI(
            self.scheme, self.user, self.password, self.host, self.port, params, self.headers
        )

    def replace(
        self,
        *,
        scheme: str | _Keep = KEEP,
        user: str | _Keep | None = KEEP,
        password: str | _Keep | None = KEEP,
        host: str | _Keep = KEEP,
        port: int | _Keep | None = KEEP,
        params: Params | _Keep = KEEP,
        headers: tuple[tuple[str, str], ...] | _Keep = KEEP,
    ) -> SipURI:
        """A copy with the given fields changed."""
        return SipURI(
            _pick(scheme, self.scheme),
            _pick(user, self.user),
            _pick(password, self.password),
            _pick(host, self.host),
            _pick(port, self.port),
            _pick(params, self.params),
            _pick(headers, self.headers),
        )

    @property
    def transport(self) -> str | None:
        t = _get_param(self.params, "transport")
        return t.lower() if t else None

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def hostport(self) -> str:
        return format_host(self.host, self.port)

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._text = self._format()
        return text

    def _format(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            user = self.user
            parts.append(user if _within(user, _USER_AS_IS) else quote(user, safe=_USER_SAFE))
            if self.password is not None:
                parts.append(":" + quote(self.password, safe=_PASSWORD_SAFE))
            parts.append("@")
        parts.append(self.host if self.port is None else f"{self.host}:{self.port}")
        if self.params:
            parts.append(_format_params(self.params))
        if self.headers:
            parts.append("?" + "&".join(f"{n}={v}" for n, v in self.headers))
        return "".join(parts)

    def equivalent(self, other: object) -> bool:
        """RFC 3261 §19.1.4 comparison (not `==`, which is structural)."""
        if not isinstance(other, SipURI):
            return False
        if (self.scheme, self.user, self.password, self.host, self.port) != (
            other.scheme,
            other.user,
            other.password,
            other.host,
            other.port,
        ):
            return False
        mine = {n: _unescape(v).lower() if v is not None else "" for n, v in self.params}
        theirs = {n: _unescape(v).lower() if v is not None else "" for n, v in other.params}
        for name in _MUST_MATCH:
            if (name in mine) != (name in theirs):
                return False
        for name, value in mine.items():
            if name in theirs and theirs[name] != value:
                return False
        hdrs = {(_unescape(n).lower(), _unescape(v)) for n, v in self.headers}
        return hdrs == {(_unescape(n).lower(), _unescape(v)) for n, v in other.headers}


class TelURI(Parameterised):
    """A `tel:` URI (RFC 3966): global (`+1-212-555-0100`) or local with phone-context."""

    __slots__ = ("number", "params")
    _FIELDS = ("number", "params")

    def __init__(self, number: str, params: Params = ()) -> None:
        self.number: Final = number
        self.params: Final = params

    def _fields(self) -> tuple[object, ...]:
        return (self.number, self.params)

    def _with_params(self, params: Params) -> TelURI:
        return TelURI(self.number, params)

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 §5.1.1), lower-cased."""
        return "".join(c for c in self.number if c not in "-.()").lower()

    def __str__(self) -> str:
        return f"tel:{self.number}{_format_params(self.params)}"

    def equivalent(self, other: object) -> bool:
        """RFC 3966 §4: separators ignored, parameters compared in any order."""
        if not isinstance(other, TelURI):
            return False

        def norm(p: Params) -> set[tuple[str, str]]:
            return {(n, (v or "").lower()) for n, v in p}

        return self.digits == other.digits and norm(self.params) == norm(other.params)


class URN(Value):
    """A URN (RFC 8141), notably service URNs (RFC 5031): `URN("service", "sos")`."""

    __slots__ = ("nid", "nss")
    _FIELDS = ("nid", "nss")

    def __init__(self, nid: str, nss: str) -> None:
        self.nid: Final = nid
        self.nss: Final = nss

    def _fields(self) -> tuple[object, ...]:
        return (self.nid, self.nss)

    @property
    def is_emergency(self) -> bool:
        """`urn:service:sos` and its sub-services `urn:service:sos.*` (RFC 5031 §4.2)."""
        if self.nid != "service":
            return False
        nss = self.nss.lower()
        return nss == "sos" or nss.startswith("sos.")

    @property
    def service(self) -> str | None:
        """The service name of a service URN (`sos.fire`), lower-cased; None otherwise."""
        return self.nss.lower() if self.nid == "service" else None

    def __str__(self) -> str:
        return f"urn:{self.nid}:{self.nss}"

    def equivalent(self, other: object) -> bool:
        # RFC 5031 §3: service URNs compare case-insensitively.
        if not isinstance(other, URN) or self.nid != other.nid:
            return False
        if self.nid == "service":
            return self.nss.lower() == other.nss.lower()
        return self.nss == other.nss


class AbsoluteURI(Value):
    """Any other scheme (`cid:`, `http:`, `xmpp:`, `mailto:` ...), kept as written."""

    __slots__ = ("rest", "scheme")
    _FIELDS = ("scheme", "rest")

    def __init__(self, scheme: str, rest: str) -> None:
        self.scheme: Final = scheme
        self.rest: Final = rest

    def _fields(self) -> tuple[object, ...]:
        return (self.scheme, self.rest)

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    def equivalent(self, other: object) -> bool:
        return self == other


URI = SipURI | TelURI | URN | AbsoluteURI


def _parse_sip(scheme: str, rest: str, text: str) -> SipURI:
    # RFC 3261 §25.1: "@" never appears unescaped after the userinfo, while "?" may appear
    # in a user part (RFC 4475 §3.1.1.2), so the first "@" ends the userinfo. Sloppy URIs put
    # an unescaped "@" in a header of a URI without user (`sip:host?Replaces=a@b`): when the
    # first reading fails and a "?" came before that "@", read it as having no userinfo.
    at = rest.find("@")
    if at >= 0:
        try:
            return _parse_sip_parts(scheme, rest[:at], rest[at + 1 :], text)
        except SipParseError:
            q = rest.find("?")
            if not 0 <= q < at:
                raise
    return _parse_sip_parts(scheme, None, rest, text)


def _parse_sip_parts(scheme: str, userinfo: str | None, hostpart: str, text: str) -> SipURI:
    headers: tuple[tuple[str, str], ...] = ()
    q = hostpart.find("?")
    if q >= 0:
        hostpart, htext = hostpart[:q], hostpart[q + 1 :]
        hl: list[tuple[str, str]] = []
        for item in htext.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise _bad("URI header", text)
            hl.append((name, value))
        headers = tuple(hl)
    user = password = None
    if userinfo is not None:
        u, colon, p = userinfo.partition(":")
        if not u:
            raise _bad("user", text)
        user = _unescape(u)
        password = _unescape(p) if colon else None
    semi = hostpart.find(";")
    if semi >= 0:
        params = _parse_params(hostpart[semi + 1 :], "URI parameter")
        hostpart = hostpart[:semi]
    else:
        params = ()
    host, port = _parse_host(hostpart, text)
    return SipURI(scheme, user, password, host, port, params, headers)


def _parse_tel(rest: str, text: str) -> TelURI:
    number, semi, ptext = rest.partition(";")
    # RFC 3966 §3: global numbers are "+" digits; local numbers may have hex digits, * and #.
    body = number[1:] if number.startswith("+") else number
    if not body or not any(c.isdigit() for c in body) or not _TEL_CHARS.issuperset(body):
        raise _bad("telephone number", text)
    return TelURI(number, _parse_params(ptext, "tel parameter") if semi else ())


# Parsed values by their text, for the few texts a proxy sees again and again (its own and
# its peers' URIs, a dialog's From/To, the Vias of a transaction's responses). Safe because
# the values are immutable; bounded (emptied when full) so that unique texts, a flood's, cost
# memory only up to the bound. Errors are not kept: a bad text raises every time.
# bench/proxy.py: ~22 URIs and name-addrs parsed per proxied call, most of them seen before.
PARSE_CACHE_MAX: Final = 1024
_URIS: Final[dict[str, URI]] = {}
_HOSTPORTS: Final[dict[str, tuple[str, int | None]]] = {}
_NAME_ADDRS: Final[dict[str, NameAddr]] = {}


def keep_parsed(cache: dict[str, Any], text: str, value: object) -> None:
    """Keep a parsed value by its text: the miss path of every parse cache, so the bound lives
    here once (lookups stay inline in each parser, the hit path makes no call)."""
    if len(cache) >= PARSE_CACHE_MAX:
        cache.clear()
    cache[text] = value


def parse_uri(text: str) -> URI:
    """Parse any URI; raises `SipParseError(400)` when it is not one."""
    uri = _URIS.get(text)
    if uri is None:
        uri = _parse_uri(text)
        keep_parsed(_URIS, text, uri)
    return uri


def _parse_uri(text: str) -> URI:
    text = text.strip()
    colon = text.find(":")
    if colon <= 0:
        raise _bad("URI", text)
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if not _SCHEME.issuperset(scheme) or not scheme[0].isalpha() or not rest:
        raise _bad("URI", text)
    if not _NOT_IN_URI.isdisjoint(rest):
        raise _bad("URI", text)
    if scheme == "sip" or scheme == "sips":
        return _parse_sip(scheme, rest, text)
    if scheme == "tel":
        return _parse_tel(rest, text)
    if scheme == "urn":
        nid, c2, nss = rest.partition(":")
        if not c2 or not nss or not nid or len(nid) > 32 or not _HOST.issuperset(nid):
            raise _bad("URN", text)
        return URN(nid.lower(), nss)
    return AbsoluteURI(scheme, rest)


# --- name-addr (RFC 3261 §20.10, §25.1) -------------------------------------------------


def split_quoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes and angle brackets (quoted-pair aware)."""
    if '"' not in text:
        pieces = text.split(sep)
        if "<" not in text or len(pieces) == 1:
            return pieces
        # Angle brackets only: re-join pieces cut inside <...> (C-speed splits, no char loop).
        joined: list[str] = []
        depth = 0
        for piece in pieces:
            if depth > 0:
                joined[-1] = joined[-1] + sep + piece
            else:
                joined.append(piece)
            depth = max(0, depth + piece.count("<") - piece.count(">"))
        return joined
    out: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == sep and not in_angle:
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return out


def parse_header_params(text: str) -> Params:
    """Header parameters after the value (`;tag=x;lr`): quoted values kept with their quotes."""
    out: list[tuple[str, str | None]] = []
    for item in split_quoted(text, ";"):
        if not item.strip():
            raise _bad("header parameter", text)
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not _is_token(name):
            raise _bad("header parameter", text)
        out.append((name, value.strip() if eq else None))
    return tuple(out)


def _quote_display(display: str) -> str:
    return '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'


class NameAddr(Parameterised):
    """`"Display" <uri>;param=value` (From, To, Contact, Route, Record-Route, Refer-To...)."""

    __slots__ = ("display", "params", "uri")
    _FIELDS = ("uri", "display", "params")

    def __init__(self, uri: URI, display: str | None = None, params: Params = ()) -> None:
        self.uri: Final = uri
        self.display: Final = display
        self.params: Final = params

    def _fields(self) -> tuple[object, ...]:
        return (self.uri, self.display, self.params)

    def _with_params(self, params: Params) -> NameAddr:
        return NameAddr(self.uri, self.display, params)

    def replace(
        self,
        *,
        uri: URI | _Keep = KEEP,
        display: str | _Keep | None = KEEP,
        params: Params | _Keep = KEEP,
    ) -> NameAddr:
        """A copy with the given fields changed."""
        return NameAddr(
            _pick(uri, self.uri), _pick(display, self.display), _pick(params, self.params)
        )

    @property
    def tag(self) -> str | None:
        return _get_param(self.params, "tag")

    def __str__(self) -> str:
        head = (
            f"<{self.uri}>"
            if self.display is None
            else f"{_quote_display(self.display)} <{self.uri}>"
        )
        return head + _format_params(self.params) if self.params else head


def parse_name_addr(text: str) -> NameAddr:
    """Parse a name-addr or a bare addr-spec (whose `;params` are then header params)."""
    na = _NAME_ADDRS.get(text)
    if na is None:
        na = _parse_name_addr(text)
        keep_parsed(_NAME_ADDRS, text, na)
    return na


def _parse_name_addr(text: str) -> NameAddr:
    s = text.strip()
    display: str | None = None
    if s.startswith('"'):
        i = s.find('"', 1)
        if i > 0 and "\\" not in s[1:i]:  # no quoted-pair: the display name is as written
            display = s[1:i]
        else:
            i = 1
            chars: list[str] = []
            n = len(s)
            while i < n and s[i] != '"':
                if s[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(s[i])
                i += 1
            if i >= n:
                raise _bad("display name", text)
            display = "".join(chars)
        s = s[i + 1 :].lstrip()
        if not s.startswith("<"):
            raise _bad("name-addr", text)
    lt = s.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            display = s[:lt].strip() or None
        gt = s.find(">", lt)
        if gt < 0:
            raise _bad("name-addr", text)
        uri = parse_uri(s[lt + 1 : gt])
        rest = s[gt + 1 :].strip()
    else:
        if not s:
            raise _bad("name-addr", text)
        uri_text, _, rest = s.partition(";")
        rest = ";" + rest if rest else ""
        uri = parse_uri(uri_text)
    if rest:
        if not rest.startswith(";"):
            raise _bad("name-addr", text)
        params = parse_header_params(rest[1:])
    else:
        params = ()
    return NameAddr(uri, display, params)


def parse_name_addr_list(text: str) -> list[NameAddr]:
    """A comma-separated list (Route, Record-Route, Contact); commas in quotes or <> are kept."""
    return [parse_name_addr(part) for part in split_quoted(text, ",") if part.strip()]
