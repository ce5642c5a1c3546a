"""HTTP Digest authentication for SIP, sans-I/O (RFC 3261 §22, RFC 7616, RFC 8760).

Three parts, none touching a socket or a clock of its own (the caller passes `now`):

- the codec: `parse_challenge`/`Challenge` for `WWW-Authenticate`/`Proxy-Authenticate`,
  `parse_credentials`/`Credentials` for `Authorization`/`Proxy-Authorization`. Quoted
  strings with backslash escapes (RFC 7230 §3.2.6), unknown parameters kept (RFC 7616 §3.3:
  "unrecognised directives MUST be ignored", but a proxy must not lose them), each parameter
  at most once (RFC 7235 §2.1). Hostile input raises `DigestError`, which carries 400 like
  every `SipParseError`; lengths and parameter counts are bounded.
- the arithmetic: `response()` and `ha1()` for MD5, MD5-sess, SHA-256 and SHA-256-sess
  (RFC 7616 §3.4.1-§3.4.2, RFC 8760 §2.2) with `qop=auth`, and the RFC 2069 form without
  qop that RFC 3261 §22.4 keeps for old clients (MD5 only).
- the server: `DigestServer` issues stateless nonces (a timestamp and a random salt under an
  HMAC keyed with a per-process secret, so no table of issued nonces can be flooded) and
  verifies credentials: HMAC-checked nonce, `stale=true` when it only expired (RFC 7616
  §3.3), a nonce-count strictly increasing per nonce against replay (RFC 7616 §3.4), kept
  in a bounded table, and constant-time comparison of the response (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ng911.sip.errors import SipParseError

__all__ = [
    "ALGORITHMS",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestError",
    "DigestServer",
    "HA1Lookup",
    "answer_challenge",
    "choose_challenge",
    "ha1",
    "parse_challenge",
    "parse_credentials",
    "response",
]

# RFC 8760 §2.2 / RFC 7616 §6.1 (IANA registry); strongest first: a client picks the first
# it supports, a server offers them in this order (RFC 8760 §2.4: most preferred first).
ALGORITHMS = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
_HASHES = {"MD5": "md5", "SHA-256": "sha256"}
_CANON = {a.upper(): a for a in ALGORITHMS}

MAX_HEADER = 4096  # a Digest header longer than this is an attack, not a client
MAX_PARAMS = 32
MAX_VALUE = 1024

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_HEX = frozenset("0123456789abcdefABCDEF")


class DigestError(SipParseError):
    """A Digest header that cannot be read, or credentials that cannot be checked.

    A `SipParseError` (status 400, RFC 3261 §21.4.1): the reason never echoes more than a
    short, escaped prefix of the offending text.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason, status)


def _snip(text: str) -> str:
    return repr(text[:40])


def _is_token(s: str) -> bool:
    return bool(s) and all(c in _TOKEN_CHARS for c in s)


# ------------------------------------------------------------------------------- codec

Params = tuple[tuple[str, str], ...]


def _skip(s: str, i: int, chars: str | frozenset[str]) -> int:
    """The index of the first character of `s` at or after `i` that is not in `chars`."""
    n = len(s)
    while i < n and s[i] in chars:
        i += 1
    return i


def _token(s: str, i: int) -> tuple[str, int]:
    """The token (maybe empty) at `i`, and the index after it."""
    end = _skip(s, i, _TOKEN_CHARS)
    return s[i:end], end


def _parse_params(text: str) -> tuple[str, dict[str, str], Params]:
    """`scheme name=value, name="quoted"` → (scheme, {lower name: value}, every (name, value)).

    RFC 7235 §2.1: auth-param = token BWS "=" BWS ( token / quoted-string ).
    """
    if len(text) > MAX_HEADER:
        raise DigestError(f"Digest header longer than {MAX_HEADER} characters")
    s = text.strip()
    n = len(s)
    scheme, i = _token(s, 0)
    if not scheme or (i < n and s[i] not in " \t"):
        raise DigestError(f"no authentication scheme in {_snip(s)}")
    values: dict[str, str] = {}
    items: list[tuple[str, str]] = []
    while True:
        i = _skip(s, i, " \t,")
        if i >= n:
            break
        name, end = _token(s, i)
        if not name:
            raise DigestError(f"bad auth-param at {_snip(s[i:])}")
        i = end
        i = _skip(s, i, " \t")
        if i >= n or s[i] != "=":
            raise DigestError(f"auth-param {_snip(name)} without a value")
        i = _skip(s, i + 1, " \t")
        if i < n and s[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise DigestError(f"unterminated quoted string in {_snip(name)}")
                c = s[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    i += 1
                    if i >= n:
                        raise DigestError("backslash at the end of a quoted string")
                    c = s[i]
                if (c < " " and c != "\t") or c == "\x7f":
                    raise DigestError(f"control character in {_snip(name)}")
                buf.append(c)
                i += 1
            value = "".join(buf)
        else:
            value, i = _token(s, i)
            if not value:
                raise DigestError(f"auth-param {_snip(name)} has an empty value")
        i = _skip(s, i, " \t")
        if i < n and s[i] != ",":
            raise DigestError(f"junk after auth-param {_snip(name)}")
        if len(value) > MAX_VALUE:
            raise DigestError(f"auth-param {_snip(name)} longer than {MAX_VALUE}")
        key = name.lower()
        if key in values:
            raise DigestError(f"auth-param {_snip(name)} given twice")  # RFC 7235 §2.1
        values[key] = value
        items.append((name, value))
        if len(items) > MAX_PARAMS:
            raise DigestError(f"more than {MAX_PARAMS} auth-params")
    return scheme, values, tuple(items)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _param(name: str, value: str) -> str:
    """Unknown parameters: a token stays a token, anything else is quoted."""
    return f"{name}={value}" if _is_token(value) else f"{name}={_quote(value)}"


#: Parameters sent as quoted strings; the others (algorithm, message-qop, nc, stale) are
#: tokens (RFC 3261 §25.1).
_QUOTED = frozenset({"username", "realm", "nonce", "uri", "response", "cnonce", "opaque", "domain"})


def _render(value: Challenge | Credentials, names: str, **given: str | None) -> str:
    """`Digest name=value, ...`: the attributes `names` (or the `given` text) that are not None,
    quoted where `_QUOTED` says, then the unknown parameters (`extra`) as they came."""
    parts = []
    for name in names.split():
        v = given[name] if name in given else getattr(value, name)
        if v is not None:
            parts.append(f"{name}={_quote(v) if name in _QUOTED and name not in given else v}")
    parts.extend(_param(k, v) for k, v in value.extra)
    return "Digest " + ", ".join(parts)


def _algorithm(value: str | None) -> str:
    """RFC 7616 §3.3: an absent algorithm means MD5. Unknown names are kept as given."""
    if value is None:
        return "MD5"
    return _CANON.get(value.upper(), value)


def _unknown(items: Params, known: frozenset[str]) -> Params:
    return tuple((k, v) for k, v in items if k.lower() not in known)


_CHALLENGE_KNOWN = frozenset({"realm", "nonce", "algorithm", "qop", "opaque", "stale", "domain"})
_CRED_KNOWN = frozenset(
    {"username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "opaque", "qop", "nc"}
)


@dataclass(frozen=True, slots=True)
class Challenge:
    """One `WWW-Authenticate`/`Proxy-Authenticate: Digest ...` value (RFC 3261 §20.44)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)  # empty: an RFC 2069 challenge
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    extra: Params = ()

    def __str__(self) -> str:
        return _render(
            self,
            "realm nonce opaque domain algorithm qop stale",
            qop=_quote(",".join(self.qop)) if self.qop else None,
            stale="true" if self.stale else None,
        )


def parse_challenge(text: str) -> Challenge:
    """Parse a Digest challenge. Raises `DigestError` (400) when it is not one."""
    scheme, v, items = _parse_params(text)
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {_snip(scheme)}")
    if "realm" not in v or "nonce" not in v:
        raise DigestError("Digest challenge without realm or nonce")
    algorithm = _algorithm(v.get("algorithm"))
    if not _is_token(algorithm):
        raise DigestError("algorithm is not a token")
    qop_text = v.get("qop")
    qop = tuple(q.strip() for q in qop_text.split(",") if q.strip()) if qop_text else ()
    if not all(_is_token(q) for q in qop):
        raise DigestError("qop list holds a non-token")
    return Challenge(
        realm=v["realm"],
        nonce=v["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=v.get("opaque"),
        stale=v.get("stale", "").lower() == "true",
        domain=v.get("domain"),
        extra=_unknown(items, _CHALLENGE_KNOWN),
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """One `Authorization`/`Proxy-Authorization: Digest ...` value (RFC 3261 §20.7, §25.1)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None  # None: RFC 2069 credentials (no cnonce, no nc)
    cnonce: str | None = None
    nc: str | None = None  # 8 hex digits (RFC 7616 §3.4)
    opaque: str | None = None
    extra: Params = ()

    @property
    def nonce_count(self) -> int:
        return int(self.nc, 16) if self.nc else 0

    def __str__(self) -> str:
        return _render(self, "username realm nonce uri response algorithm qop cnonce nc opaque")


def parse_credentials(text: str) -> Credentials:
    """Parse Digest credentials. Raises `DigestError` (400) when they are malformed."""
    scheme, v, items = _parse_params(text)
    if scheme.lower() != "digest":
        raise DigestError(f"not Digest credentials: {_snip(scheme)}")
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in v]
    if missing:
        raise DigestError(f"Digest credentials without {', '.join(missing)}")
    algorithm = _algorithm(v.get("algorithm"))
    if not _is_token(algorithm):
        raise DigestError("algorithm is not a token")
    qop = v.get("qop")
    nc = v.get("nc")
    cnonce = v.get("cnonce")
    if qop is not None:
        # RFC 7616 §3.4: with qop, cnonce and nc are required; nc is exactly 8 hex digits
        if not _is_token(qop):
            raise DigestError("qop is not a token")
        if cnonce is None or nc is None:
            raise DigestError("qop without cnonce or nc")
    if nc is not None and (len(nc) != 8 or not all(c in _HEX for c in nc)):
        raise DigestError("nc is not 8 hex digits")
    return Credentials(
        username=v["username"],
        realm=v["realm"],
        nonce=v["nonce"],
        uri=v["uri"],
        response=v["response"],
        algorithm=algorithm,
        qop=qop,
        cnonce=cnonce,
        nc=nc,
        opaque=v.get("opaque"),
        extra=_unknown(items, _CRED_KNOWN),
    )


# ------------------------------------------------------------------------------- arithmetic


def _hash_name(algorithm: str) -> str:
    base = algorithm.upper().removesuffix("-SESS")
    for name, h in _HASHES.items():
        if name == base:
            return h
    raise DigestError(f"unsupported algorithm {_snip(algorithm)}", 401)


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(_hash_name(algorithm), text.encode("utf-8")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password): what a server may store instead of the password
    (RFC 7616 §3.4.2; the `-sess` variants derive theirs from it per nonce)."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def response(
    algorithm: str,
    ha1_hex: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = "auth",
    cnonce: str | None = None,
    nc: str | None = None,
) -> str:
    """The request-digest (RFC 7616 §3.4.1; RFC 2069 form when `qop` is None).

    `ha1_hex` is H(username:realm:password) in the algorithm's hash; for `-sess` it is
    turned into H(that:nonce:cnonce) here (RFC 7616 §3.4.2).
    """
    if algorithm.upper().endswith("-SESS"):
        if cnonce is None:
            raise DigestError("-sess algorithm without cnonce")
        ha1_hex = _h(algorithm, f"{ha1_hex}:{nonce}:{cnonce}")
    ha2 = _h(algorithm, f"{method}:{uri}")  # qop=auth; auth-int is not offered
    if qop is None:
        return _h(algorithm, f"{ha1_hex}:{nonce}:{ha2}")
    if cnonce is None or nc is None:
        raise DigestError("qop without cnonce or nc")
    return _h(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ------------------------------------------------------------------------------- client


def choose_challenge(
    challenges: Iterable[str], supported: tuple[str, ...] = ALGORITHMS
) -> Challenge | None:
    """The challenge a client answers: the strongest algorithm it supports (RFC 8760 §2.4),
    ignoring values it cannot parse or whose algorithm or qop it cannot do."""
    best: tuple[int, Challenge] | None = None
    for text in challenges:
        try:
            ch = parse_challenge(text)
        except DigestError:
            continue
        if ch.algorithm not in supported:
            continue
        if ch.qop and "auth" not in ch.qop:
            continue  # only auth-int offered
        if not ch.qop and ch.algorithm != "MD5":
            continue  # RFC 2069 knows MD5 only
        rank = supported.index(ch.algorithm)
        if best is None or rank < best[0]:
            best = (rank, ch)
    return None if best is None else best[1]


def answer_challenge(
    ch: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> Credentials:
    """Credentials for `ch` (RFC 3261 §22.2 / §22.3): qop=auth when offered, else RFC 2069."""
    qop = "auth" if ch.qop else None
    nc_text = f"{nc:08x}" if qop else None
    cn = (cnonce or secrets.token_hex(8)) if qop or ch.algorithm.endswith("-sess") else None
    digest = response(
        ch.algorithm,
        ha1(ch.algorithm, username, ch.realm, password),
        method=method,
        uri=uri,
        nonce=ch.nonce,
        qop=qop,
        cnonce=cn,
        nc=nc_text,
    )
    return Credentials(
        username=username,
        realm=ch.realm,
        nonce=ch.nonce,
        uri=uri,
        response=digest,
        algorithm=ch.algorithm,
        qop=qop,
        cnonce=cn,
        nc=nc_text,
        opaque=ch.opaque,
    )


# ------------------------------------------------------------------------------- server

HA1Lookup = Callable[[str, str], str | None]
"""(username, algorithm without -sess) → stored HA1 hex, or None for an unknown user."""


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What `DigestServer.verify` concluded. `ok` → `username` is authenticated.

    `stale`: the credentials were right but the nonce expired (or was forgotten): challenge
    again with `stale=true` so the UA retries without asking its user (RFC 7616 §3.3).
    """

    ok: bool
    username: str = ""
    reason: str = ""
    stale: bool = False


_NONCE_LEN = 8 + 8 + 16  # timestamp, salt, truncated HMAC-SHA-256


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


@dataclass(slots=True)
class DigestServer:
    """Issues challenges and verifies credentials for one realm (RFC 3261 §22.1, §22.3).

    Nonces are stateless: base64url(timestamp ‖ salt ‖ HMAC(secret, realm ‖ timestamp ‖ salt)).
    Any process holding `secret` can check one; a forged or altered nonce fails the HMAC.
    Replay: each nonce's highest nonce-count seen is kept in an LRU table of at most
    `max_nonces` entries; when one is evicted, every nonce issued no later than it becomes
    stale (`_horizon`), so eviction can never reopen a replay window, it only costs a
    re-challenge. RFC 2069 credentials (no nc) may use a nonce once.
    """

    realm: str
    lookup: HA1Lookup
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    nonce_ttl: float = 300.0
    max_nonces: int = 10_000
    allow_rfc2069: bool = True
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _seen: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)
    _horizon: float = float("-inf")
    _swept: float = 0.0

    def __post_init__(self) -> None:
        for a in self.algorithms:
            if a not in ALGORITHMS:
                raise ValueError(f"unsupported digest algorithm {a!r}")

    # -- nonces

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self.secret, self.realm.encode() + b"\0" + body, "sha256").digest()[:16]

    def new_nonce(self, now: float) -> str:
        body = struct.pack(">d", now) + secrets.token_bytes(8)
        return _b64(body + self._mac(body))

    def nonce_time(self, nonce: str) -> float | None:
        """When the nonce was issued, or None if we did not issue it."""
        if len(nonce) != 43 or not all(c.isalnum() or c in "-_" for c in nonce):
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except ValueError:
            return None
        if len(raw) != _NONCE_LEN or _b64(raw) != nonce:  # one spelling per nonce
            return None
        body, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        issued: float = struct.unpack(">d", body[:8])[0]
        return issued

    def challenges(self, now: float, *, stale: bool = False) -> list[Challenge]:
        """One challenge per algorithm, most preferred first (RFC 8760 §2.4), same nonce."""
        nonce = self.new_nonce(now)
        return [Challenge(self.realm, nonce, a, ("auth",), stale=stale) for a in self.algorithms]

    # -- verification

    def verify(self, creds: Credentials, method: str, now: float) -> AuthResult:
        """Check `creds` for a request of `method` (the caller checks `creds.uri`)."""
        if creds.realm != self.realm:
            return AuthResult(False, reason="other realm")
        if creds.algorithm not in self.algorithms:
            return AuthResult(False, reason="algorithm not offered")
        if creds.qop is None:
            if not (self.allow_rfc2069 and creds.algorithm == "MD5"):
                return AuthResult(False, reason="credentials without qop")
        elif creds.qop.lower() != "auth":
            return AuthResult(False, reason="qop not offered")
        issued = self.nonce_time(creds.nonce)
        if issued is None:
            return AuthResult(False, reason="nonce not ours")
        stored = self.lookup(creds.username, creds.algorithm.removesuffix("-sess"))
        known = stored is not None
        if stored is None:  # compute anyway: an unknown user takes as long as a wrong password
            stored = _h(creds.algorithm, f"{creds.username}:{self.realm}:")
        try:
            expected = response(
                creds.algorithm,
                stored,
                method=method,
                uri=creds.uri,
                nonce=creds.nonce,
                qop=creds.qop,
                cnonce=creds.cnonce,
                nc=creds.nc,
            )
        except DigestError as exc:
            return AuthResult(False, reason=exc.reason)
        match = hmac.compare_digest(expected.encode(), creds.response.lower().encode())
        if not (match and known):
            return AuthResult(False, reason="unknown user or wrong password")
        # the digest is right; is the nonce still good? (RFC 7616 §3.3 stale)
        if now - issued > self.nonce_ttl or issued > now + 5.0 or issued <= self._horizon:
            return AuthResult(False, creds.username, "nonce expired", stale=True)
        count = creds.nonce_count if creds.qop is not None else 0
        last = self._seen.get(creds.nonce)
        if last is not None and (creds.qop is None or count <= last[0]):
            return AuthResult(False, creds.username, "nonce-count replayed")
        if creds.qop is not None and count < 1:
            return AuthResult(False, creds.username, "nonce-count zero")
        self._remember(creds.nonce, count, issued, now)
        return AuthResult(True, creds.username)

    def _remember(self, nonce: str, count: int, issued: float, now: float) -> None:
        seen = self._seen
        seen[nonce] = (count, issued)
        seen.move_to_end(nonce)
        if len(seen) > self.max_nonces and now - self._swept >= 1.0:
            # forget expired nonces first (they are stale anyway); at most once a second
            self._swept = now
            for old in [k for k, (_, t) in seen.items() if t < now - self.nonce_ttl]:
                del seen[old]
        while len(seen) > self.max_nonces:
            _, (_, t) = seen.popitem(last=False)
            self._horizon = max(self._horizon, t)
