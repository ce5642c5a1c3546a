"""Digest authentication policy of a registrar or proxy (RFC 3261 §22, RFC 8760).

Pure policy around `ng911.sip.digest`: where the users come from, which header to read and
which to answer with, and who may register what. No sockets; the caller passes `now`.

- Users: a table user → password (`users`, for the testbed) and/or an htdigest-style file
  of `user:realm:HA1` lines (`users_file`), the HA1 being MD5 (32 hex) or SHA-256 (64 hex),
  so an operator need not keep passwords in clear (RFC 7616 §3.4.2).
- Challenges: one per algorithm, SHA-256 first, then MD5 for older UAs (RFC 8760 §2.4);
  `WWW-Authenticate` in a 401 from a registrar, `Proxy-Authenticate` in a 407 from a proxy
  (RFC 3261 §22.1, §22.3).
- Authorization: a user may register only its own address-of-record (§10.3 item 4): the
  To URI's user part must be the authenticated username, else 403.
- Emergency calls are never challenged: that rule lives with the caller of this module
  (the VSP), because only it knows what an emergency call is (RFC 6881 §8, NENA i3: a call
  to 911 is accepted from a device with no credentials at all).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ng911.elements.runtime import ElementError
from ng911.errors import Ng911Error
from ng911.sip.digest import (
    AuthResult,
    Credentials,
    DigestError,
    DigestServer,
    ha1,
    parse_credentials,
)
from ng911.sip.message import Request
from ng911.sip.uri import URI, SipURI, parse_uri

__all__ = ["Authenticator", "Denied", "UserTable", "load_users_file"]

_HEX = frozenset("0123456789abcdef")


def _clip(text: str, n: int = 64) -> str:
    """Attacker-supplied text for a log line: bounded and printable."""
    return "".join(c if c.isprintable() else "?" for c in text[:n])


def load_users_file(path: str | Path, realm: str) -> dict[tuple[str, str], str]:
    """`user:realm:HA1` lines (htdigest's format, plus 64-hex SHA-256 HA1s) → {(user, alg): HA1}.

    Lines of other realms are skipped; `#` starts a comment. A malformed line is an error
    naming its number, never its text (it holds secrets).
    """
    out: dict[tuple[str, str], str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ElementError(500, f"cannot read users file {path}: {exc.strerror}") from None
    for no, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(":", 2)
        if len(parts) != 3 or not parts[0]:
            raise ElementError(500, f"{path}:{no}: expected user:realm:HA1")
        user, line_realm, digest = parts[0], parts[1], parts[2].lower()
        if not set(digest) <= _HEX or len(digest) not in (32, 64):
            raise ElementError(500, f"{path}:{no}: HA1 must be 32 (MD5) or 64 (SHA-256) hex")
        if line_realm == realm:
            out[(user, "MD5" if len(digest) == 32 else "SHA-256")] = digest
    return out


@dataclass(frozen=True, slots=True)
class UserTable:
    """Stored HA1 per (user, algorithm): what a `DigestServer` looks up."""

    realm: str
    passwords: Mapping[str, str]
    ha1s: Mapping[tuple[str, str], str]

    def __call__(self, username: str, algorithm: str) -> str | None:
        stored = self.ha1s.get((username, algorithm))
        if stored is not None:
            return stored
        pw = self.passwords.get(username)
        return None if pw is None else ha1(algorithm, username, self.realm, pw)


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a request was not authenticated, and the answer it gets."""

    status: int  # 400 (unreadable credentials), 401/407 (challenge), 403 (not yours)
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    user: str = ""


class Authenticator:
    """Digest authentication of one realm for a registrar (401) or a proxy (407)."""

    def __init__(
        self,
        realm: str,
        users: UserTable,
        *,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        nonce_ttl: float = 300.0,
        secret: bytes | None = None,
    ) -> None:
        self.realm = realm
        self.server = DigestServer(realm, users, algorithms=algorithms, nonce_ttl=nonce_ttl)
        if secret is not None:  # shared by every worker process, so any of them checks a nonce
            self.server.secret = secret

    @classmethod
    def from_config(
        cls,
        realm: str,
        *,
        users: Mapping[str, str],
        users_file: str = "",
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        nonce_ttl: float = 300.0,
        secret: str = "",
    ) -> Authenticator:
        ha1s = load_users_file(users_file, realm) if users_file else {}
        table = UserTable(realm, dict(users), ha1s)
        return cls(
            realm,
            table,
            algorithms=algorithms,
            nonce_ttl=nonce_ttl,
            secret=secret.encode() if secret else None,
        )

    def challenge(self, now: float, *, proxy: bool, stale: bool = False) -> Denied:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        status = 407 if proxy else 401
        chs = self.server.challenges(now, stale=stale)
        return Denied(status, "credentials required", tuple((name, str(c)) for c in chs))

    def _ours(self, req: Request, header: str) -> Credentials | None:
        """Our realm's credentials among the request's (a proxy may see several realms'
        Proxy-Authorization, RFC 3261 §22.3); DigestError (400) when ours are unreadable."""
        for value in req.headers.get_all(header)[:8]:
            if "digest" not in value[:16].lower():
                continue
            creds = parse_credentials(value)
            if creds.realm == self.realm:
                return creds
        return None

    def authenticate(self, req: Request, now: float, *, proxy: bool) -> str | Denied:
        """The authenticated username, or how to answer (a fresh challenge, or 400)."""
        header = "Proxy-Authorization" if proxy else "Authorization"
        try:
            creds = self._ours(req, header)
        except DigestError as exc:
            return Denied(400, f"bad {header}: {exc.reason}"[:120])
        if creds is None:
            return self.challenge(now, proxy=proxy)
        if not _same_uri(creds.uri, req.uri):
            # RFC 7616 §3.4.6 / RFC 3261 §22.4: the digest-uri names this request
            return Denied(400, "digest uri does not match the Request-URI")
        res: AuthResult = self.server.verify(creds, req.method, now)
        if res.ok:
            return res.username
        denied = self.challenge(now, proxy=proxy, stale=res.stale)
        return Denied(denied.status, res.reason, denied.headers, _clip(creds.username))

    def consume(self, req: Request) -> None:
        """Remove our realm's Proxy-Authorization before forwarding (it is ours alone)."""
        values = req.headers.get_all("Proxy-Authorization")
        if not values:
            return
        keep = []
        for v in values:
            try:
                if parse_credentials(v).realm == self.realm:
                    continue
            except DigestError:
                pass
            keep.append(v)
        req.headers.remove("Proxy-Authorization")
        for v in keep:
            req.headers.add("Proxy-Authorization", v)

    @staticmethod
    def may_register(username: str, aor: URI) -> bool:
        """RFC 3261 §10.3 item 4: the authenticated user registers its own AoR only."""
        return isinstance(aor, SipURI) and aor.user == username


def _same_uri(digest_uri: str, request_uri: URI) -> bool:
    if digest_uri == str(request_uri):
        return True
    try:
        uri = parse_uri(digest_uri)
    except Ng911Error:  # an unreadable digest-uri is simply not a match
        return False
    if isinstance(uri, SipURI) and isinstance(request_uri, SipURI):
        return (uri.scheme, uri.user, uri.host.lower(), uri.port) == (
            request_uri.scheme,
            request_uri.user,
            request_uri.host.lower(),
            request_uri.port,
        )
    return str(uri) == str(request_uri)
