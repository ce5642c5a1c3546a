"""multipart/mixed bodies (RFC 2046 §5.1), as an emergency INVITE carries them.

A caller sends its location by value: `Geolocation: <cid:ID>` and a multipart/mixed body
with the SDP and an `application/pidf+xml` part whose `Content-ID` is `<ID>` (RFC 6442 §4.1,
RFC 5621). Elements that add location or data wrap the body in another multipart, so
`find_part` descends nested multiparts.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Final

from ng911.sip.errors import SipParseError
from ng911.sip.message import header_key
from ng911.sip.uri import Value, parse_header_params

MAX_DEPTH: Final = 8  # nested multiparts deeper than this are refused (hostile input)


class BodyPart(Value):
    """One body part: its type, bytes, and its other headers (Content-ID, -Disposition...)."""

    __slots__ = ("body", "content_type", "headers")
    _FIELDS = ("content_type", "body", "headers")

    def __init__(
        self, content_type: str, body: bytes, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.content_type: Final = content_type
        self.body: Final = body
        self.headers: Final = headers

    def _fields(self) -> tuple[object, ...]:
        return (self.content_type, self.body, self.headers)

    def header(self, name: str) -> str | None:
        key = header_key(name)[0]
        for n, v in self.headers:
            if header_key(n)[0] == key:
                return v
        return None

    @property
    def content_id(self) -> str | None:
        """The Content-ID without its angle brackets."""
        cid = self.header("Content-ID")
        if cid is None:
            return None
        cid = cid.strip()
        return cid[1:-1] if cid.startswith("<") and cid.endswith(">") else cid

    @property
    def mime(self) -> str:
        """The media type without parameters, lower-cased (`application/pidf+xml`)."""
        return media_type(self.content_type)


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def content_type_param(content_type: str, name: str) -> str | None:
    """A parameter of a Content-Type value, unquoted (`boundary`, `charset`)."""
    _, semi, rest = content_type.partition(";")
    if not semi:
        return None
    try:
        params = parse_header_params(rest)
    except SipParseError:
        return None
    for n, v in params:
        if n == name.lower():
            if v is None:
                return ""
            if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
                return v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            return v
    return None


def _parse_part(raw: bytes) -> BodyPart:
    # A part starts with its header lines; a part with no headers starts with the blank line.
    if raw.startswith(b"\r\n"):
        head, body = b"", raw[2:]
    elif raw.startswith(b"\n"):
        head, body = b"", raw[1:]
    else:
        i = raw.find(b"\r\n\r\n")
        j = raw.find(b"\n\n")
        if i < 0 and j < 0:
            head, body = raw, b""
        elif j >= 0 and (i < 0 or j < i):
            head, body = raw[:j], raw[j + 2 :]
        else:
            head, body = raw[:i], raw[i + 4 :]
    try:
        text = head.decode()
    except UnicodeDecodeError:
        raise SipParseError("body part headers are not UTF-8", 400) from None
    content_type = "text/plain"  # RFC 2046 §5.1: the default
    headers: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line[0] in " \t" and headers:
            n, v = headers[-1]
            headers[-1] = (n, f"{v} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SipParseError(f"bad body part header: {line[:80]!r}", 400)
        headers.append((header_key(name)[1], value.strip()))
    rest: list[tuple[str, str]] = []
    for n, v in headers:
        if n == "Content-Type":
            content_type = v
        else:
            rest.append((n, v))
    return BodyPart(content_type, body, tuple(rest))


def parse_multipart(content_type: str, body: bytes) -> list[BodyPart]:
    """The parts of a multipart body. A nested multipart is one part: call again to descend.

    Raises `SipParseError(400)` when the type is not multipart, the boundary is missing or
    never found, or the closing delimiter is missing."""
    if not media_type(content_type).startswith("multipart/"):
        raise SipParseError(f"not a multipart body: {content_type[:80]!r}", 400)
    boundary = content_type_param(content_type, "boundary")
    if not boundary or len(boundary) > 70:
        raise SipParseError("multipart body without a valid boundary", 400)
    delim = b"--" + boundary.encode()
    # The first delimiter may open the body; every other one follows a line break.
    if body.startswith(delim):
        pos = 0
    else:
        pos = body.find(b"\n" + delim)
        if pos < 0:
            raise SipParseError("multipart boundary not found in the body", 400)
        pos += 1
    parts: list[BodyPart] = []
    while True:
        after = pos + len(delim)
        if body[after : after + 2] == b"--":
            return parts  # close delimiter; the epilogue is ignored
        # Skip transport padding and the line break after the delimiter.
        eol = body.find(b"\n", after)
        if eol < 0:
            raise SipParseError("multipart body ends inside a delimiter line", 400)
        start = eol + 1
        nxt = body.find(b"\n" + delim, start)
        if nxt < 0:
            raise SipParseError("multipart body without its closing delimiter", 400)
        end = (
            nxt - 1 if nxt > 0 and body[nxt - 1] == 13 else nxt
        )  # the CRLF belongs to the delimiter
        if end < start:
            end = start
        parts.append(_parse_part(body[start:end]))
        pos = nxt + 1


def build_multipart(
    parts: Sequence[BodyPart], boundary: str | None = None, *, subtype: str = "mixed"
) -> tuple[str, bytes]:
    """(Content-Type value with the boundary, body bytes) of a multipart body."""
    if boundary is None:
        boundary = "ng911-" + secrets.token_hex(12)
    delim = b"--" + boundary.encode()
    for p in parts:
        if delim in p.body:
            raise ValueError("boundary occurs in a part; choose another")
    chunks: list[bytes] = []
    for p in parts:
        chunks.append(delim + b"\r\n")
        chunks.append(f"Content-Type: {p.content_type}\r\n".encode())
        for n, v in p.headers:
            chunks.append(f"{n}: {v}\r\n".encode())
        chunks.append(b"\r\n")
        chunks.append(p.body)
        chunks.append(b"\r\n")
    chunks.append(delim + b"--\r\n")
    return f"multipart/{subtype};boundary={boundary}", b"".join(chunks)


def _strip_cid(cid: str) -> str:
    cid = cid.strip()
    if cid[:4].lower() == "cid:":
        cid = cid[4:]
    if cid.startswith("<") and cid.endswith(">"):
        cid = cid[1:-1]
    return cid


def find_part(
    content_type: str,
    body: bytes,
    *,
    content_id: str | None = None,
    mime: str | None = None,
    _depth: int = 0,
) -> BodyPart | None:
    """The first part (depth-first, descending nested multiparts) matching every criterion
    given: `content_id` (with or without `cid:` and <>), `mime` (media type, no params).
    A non-multipart body is itself the only candidate. Raises `SipParseError(400)` on a
    malformed multipart or nesting deeper than MAX_DEPTH."""
    if _depth > MAX_DEPTH:
        raise SipParseError("multipart nested too deep", 400)
    want_cid = _strip_cid(content_id) if content_id is not None else None
    want_mime = mime.lower() if mime is not None else None

    def matches(p: BodyPart) -> bool:
        if want_mime is not None and p.mime != want_mime:
            return False
        return want_cid is None or p.content_id == want_cid

    if not media_type(content_type).startswith("multipart/"):
        whole = BodyPart(content_type, body)
        return whole if want_cid is None and matches(whole) else None
    for part in parse_multipart(content_type, body):
        if matches(part):
            return part
        if part.mime.startswith("multipart/"):
            found = find_part(
                part.content_type, part.body, content_id=content_id, mime=mime, _depth=_depth + 1
            )
            if found is not None:
                return found
    return None


__all__ = [
    "BodyPart",
    "build_multipart",
    "content_type_param",
    "find_part",
    "media_type",
    "parse_multipart",
]
