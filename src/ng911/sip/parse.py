"""Bytes to messages: one datagram (`parse_message`) or a TCP/TLS stream (`StreamParser`).

The hot path is short on purpose: one search for the blank line, one decode, one split into
lines, one `partition(":")` and one dict hit per header line. Only the request line, CSeq,
Content-Length and Max-Forwards are parsed here; Via, From, To and the rest stay text until
asked (see `message.Headers`).

Tolerant where RFC 3261 allows it (§7.3.1 folding and LWS around the colon, header-name case,
compact forms, bare LF line ends, leading CRLFs §7.5), strict where a server must refuse:
every refusal is a `SipParseError` with the status to answer and, when the request's first
line, Via, From, To, Call-ID and CSeq were read, the request itself (`partial`).
"""

from __future__ import annotations

from typing import Final

from ng911.sip.errors import SipParseError
from ng911.sip.headers import parse_cseq
from ng911.sip.message import _NAMES, Headers, Request, Response
from ng911.sip.uri import URI, AbsoluteURI, _is_token, bounded_int, parse_uri

DEFAULT_MAX_SIZE: Final = 65535
# Longer Request-URIs get 414 (RFC 3261 §21.4.12). Real ones are < 300 bytes.
MAX_URI_LENGTH: Final = 4096
# A request without these cannot be answered (RFC 3261 §8.1.1); Max-Forwards is added by
# the first proxy when missing (§16.6 step 3), so its absence is accepted.
_MANDATORY: Final = ("via", "from", "to", "call-id", "cseq")
# Headers that may appear once only (RFC 3261 §7.3.1, RFC 4475 §3.1.2.11 "multi01").
_SINGLE: Final = frozenset({"from", "to", "call-id", "cseq", "max-forwards"})
# The header fields whose values the parse reads itself (framing, answering, the checks).
_FRAMING: Final = frozenset({*_MANDATORY, "max-forwards", "content-length"})

Message = Request | Response


class _Head:
    """A parsed header section: the message (body not set yet) and what framing needs."""

    __slots__ = ("content_length", "error", "framing_error", "message")

    def __init__(self) -> None:
        self.message: Message | None = None
        self.content_length: int | None = None  # None: absent
        self.error: SipParseError | None = None
        self.framing_error = False  # bad Content-Length or first line: stream out of sync


def _find_head_end(buf: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(end of header section, start of body), or None when the blank line is not there yet.

    The blank line is CRLF CRLF, or with bare LF line ends LF LF / LF CRLF (tolerated)."""
    i = buf.find(b"\r\n\r\n", start)
    if i >= 0:
        j = buf.find(b"\n\n", start, i)
        if j < 0:
            return i, i + 4
        return j, j + 2
    j = buf.find(b"\n\n", start)
    k = buf.find(b"\n\r\n", start)
    if j < 0 and k < 0:
        return None
    if k < 0 or (0 <= j < k):
        return j, j + 2
    return k, k + 3


def _uri_for_partial(text: str) -> URI:
    scheme, _, rest = text.partition(":")
    return AbsoluteURI(scheme.lower() or "invalid", rest)


def _parse_head(head: bytes, max_uri: int) -> _Head:
    out = _Head()
    err: SipParseError | None = None
    try:
        text = head.decode()
    except UnicodeDecodeError:
        # Keep going on a lossy decode so the 400 can still carry the request.
        text = head.decode(errors="replace")
        err = SipParseError("header section is not UTF-8", 400)
    lines = text.split("\r\n")
    for line in lines:  # per line, not text.count("\n"): `in` is a memchr, count is not
        if "\n" in line:  # a bare LF somewhere: split on LF instead
            lines = [line.rstrip("\r") for line in text.split("\n")]
            break

    # --- first line ---
    first = lines[0]
    parts = first.split(" ", 2)
    is_request = True
    method = uri_text = ""
    status = 0
    reason = ""
    if first.startswith("SIP/"):
        is_request = False
        if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
            out.error = err or SipParseError(f"bad status line: {first[:80]!r}", 400)
            out.framing_error = True
            return out
        code = parts[1]
        if not (len(code) == 3 and code.isascii() and code.isdigit() and "100" <= code <= "699"):
            out.error = err or SipParseError(f"bad status code: {first[:80]!r}", 400)
            out.framing_error = True
            return out
        status = int(code)
        reason = parts[2] if len(parts) > 2 else ""
    else:
        if len(parts) != 3:
            parts = first.split()
        if len(parts) != 3 or not _is_token(parts[0]):
            out.error = err or SipParseError(f"bad request line: {first[:80]!r}", 400)
            out.framing_error = True
            return out
        method, uri_text, version = parts
        if version.upper() != "SIP/2.0":
            v = version.upper()
            major, dot, minor = v[4:].partition(".")
            if v.startswith("SIP/") and dot and major.isdigit() and minor.isdigit():
                err = err or SipParseError(f"SIP version {version} not supported", 505)
            else:
                out.error = err or SipParseError(f"bad request line: {first[:80]!r}", 400)
                out.framing_error = True
                return out

    # --- header fields: (key, output name, raw value), flat (Headers._items) ---
    # The values framing and answering need are gathered in the same pass (`have`: the first
    # value of each `_FRAMING` key; `gathered`: the key the last field's value went to, which
    # a continuation line then grows there too).
    items: list[str] = []
    names = _NAMES
    have: dict[str, str] = {}
    cl_values: list[str] = []
    gathered: str | None = None
    dup: SipParseError | None = None  # reported after the lines' own errors, as before
    for line in lines[1:]:
        if not line:
            continue
        if line[0] == " " or line[0] == "\t":
            # RFC 3261 §7.3.1: a continuation line folds into the previous value.
            if not items:
                err = err or SipParseError("continuation line before any header", 400)
                continue
            v = items[-1]
            cont = line.strip()
            items[-1] = f"{v} {cont}" if v else cont
            if gathered == "content-length":
                cl_values[-1] = items[-1]
            elif gathered is not None:
                have[gathered] = items[-1]
            continue
        colon = line.find(":")
        if colon < 0:
            err = err or SipParseError(f"header line without a colon: {line[:80]!r}", 400)
            continue
        name = line[:colon]
        hit = names.get(name)
        if hit is None:
            name = name.strip()
            hit = names.get(name) or names.get(name.lower())
            if hit is None:
                if not _is_token(name):
                    err = err or SipParseError(f"bad header name: {name[:80]!r}", 400)
                    continue
                hit = (name.lower(), name)
        key = hit[0]
        value = line[colon + 1 :].strip()
        items.append(key)
        items.append(hit[1])
        items.append(value)
        gathered = None
        if key in _FRAMING:
            if key == "content-length":
                cl_values.append(value)
                gathered = key
            elif key not in have:
                have[key] = value
                gathered = key
            elif key in _SINGLE and dup is None:
                dup = SipParseError(f"more than one {_NAMES[key][1]} header", 400)
    err = err or dup
    headers = Headers._from_parsed(items)

    # --- the values framing and answering need ---
    if cl_values:
        v0 = cl_values[0]
        cl = bounded_int(v0, 2**31 - 1)
        if not v0.isascii() or not v0.isdigit() or any(v != v0 for v in cl_values):
            err = err or SipParseError(f"bad Content-Length: {v0[:20]!r}", 400)
            out.framing_error = True
        elif cl is None:  # digits, but more than any message could hold
            err = err or SipParseError(f"Content-Length too large: {v0[:20]!r}", 413)
            out.framing_error = True
        else:
            out.content_length = cl
    missing = [n for n in _MANDATORY if n not in have]
    answerable = not missing

    msg: Message
    if is_request:
        uri: URI
        if len(uri_text) > max_uri:
            err = err or SipParseError(f"Request-URI longer than {max_uri}", 414)
            uri = _uri_for_partial(uri_text[:max_uri])
        else:
            try:
                uri = parse_uri(uri_text)
            except SipParseError as e:
                err = err or e
                uri = _uri_for_partial(uri_text)
            else:
                if isinstance(uri, AbsoluteURI):
                    err = err or SipParseError(f"unsupported URI scheme {uri.scheme}:", 416)
        msg = Request(method, uri, headers)
    else:
        msg = Response(status, reason, headers)
    out.message = msg
    partial = msg if answerable and isinstance(msg, Request) else None

    if missing:
        missing_names = ", ".join(_NAMES[n][1] for n in missing)
        err = err or SipParseError(f"missing {missing_names}", 400)
    else:
        try:
            cseq = parse_cseq(have["cseq"])
        except SipParseError as e:
            err = err or e
        else:
            headers._cache["cseq"] = cseq
            if is_request and cseq.method != method:
                err = err or SipParseError(
                    f"CSeq method {cseq.method} does not match {method}", 400
                )
    mf = have.get("max-forwards")
    if mf is not None and bounded_int(mf, 255) is None:
        err = err or SipParseError(f"bad Max-Forwards: {mf[:20]!r}", 400)
    if err is not None:
        err.partial = partial
        out.error = err
    return out


def parse_message(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_uri: int = MAX_URI_LENGTH
) -> Request | Response:
    """Parse one complete message (a datagram). Raises `SipParseError`.

    Without Content-Length the body is the rest of the datagram; with it, extra bytes are
    dropped and missing ones are a 400 (RFC 3261 §18.3)."""
    start = 0
    n = len(data)
    while start < n and data[start] in (13, 10):  # §7.5: ignore CRLFs before the start line
        start += 1
    if start:
        data = data[start:]
    if not data:
        raise SipParseError("empty message", 400)
    too_big = len(data) > max_size
    end = _find_head_end(data)
    if end is None:
        # No blank line: accept a header-only datagram that ends its last line.
        if data.endswith(b"\n") and not too_big:
            end = (len(data), len(data))
        elif too_big:
            raise SipParseError(f"message larger than {max_size} bytes", 413)
        else:
            raise SipParseError("no end of header section", 400)
    head_end, body_start = end
    if too_big:
        partial: Request | None = None
        if head_end <= max_size:
            h = _parse_head(data[:head_end], max_uri)
            if h.message is not None and (h.error is None or h.error.partial is not None):
                partial = h.message if isinstance(h.message, Request) else None
        raise SipParseError(f"message larger than {max_size} bytes", 413, partial)
    h = _parse_head(data[:head_end], max_uri)
    if h.error is not None:
        raise h.error
    msg = h.message
    assert msg is not None
    body = data[body_start:]
    cl = h.content_length
    if cl is not None:
        if cl > len(body):
            raise SipParseError(
                f"Content-Length {cl} larger than the body ({len(body)} bytes)",
                400,
                msg if isinstance(msg, Request) else None,
            )
        if cl < len(body):
            body = body[:cl]
    msg.body = body
    return msg


class StreamParser:
    """Frames messages on a TCP/TLS stream by Content-Length (RFC 3261 §18.3).

    `feed` takes whatever the socket read and returns the messages completed by it. CRLF
    keep-alives between messages (RFC 5626 §3.5.1) are skipped and counted in `keepalives`;
    `pings` counts double-CRLF pings, which the transport answers with one CRLF (a ping
    split across two reads is counted as two pongs and goes unanswered: the client retries).
    Nothing is buffered without bound: a header section or a declared message larger than
    `max_size` raises 413 at once.

    Two kinds of error: a message that is framed correctly but bad (say a missing Call-ID)
    is consumed and raised, and the parser stays usable (answer it and carry on); a framing
    error (no or bad Content-Length, garbage start line, oversize) leaves the stream out of
    sync: `broken` becomes true, every later `feed` raises, close the connection. Either
    way, messages completed earlier in the same `feed` are on the error's `messages`.
    """

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE, max_uri: int = MAX_URI_LENGTH) -> None:
        self.max_size = max_size
        self.max_uri = max_uri
        self.keepalives = 0  # runs of CR/LF skipped between messages
        self.pings = 0  # CRLFCRLF pings among them: the transport answers each with CRLF
        self._buf = bytearray()
        self._scan = 0
        self._pending: tuple[Message, SipParseError | None, int, int] | None = None
        self._broken: SipParseError | None = None

    @property
    def broken(self) -> bool:
        return self._broken is not None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buf)

    def _fatal(self, err: SipParseError, done: list[Message]) -> SipParseError:
        err.messages = tuple(done)
        self._broken = err
        self._buf.clear()
        self._pending = None
        return err

    def feed(self, data: bytes) -> list[Request | Response]:
        if self._broken is not None:
            raise SipParseError(
                f"stream unusable after earlier error: {self._broken.reason}", self._broken.status
            )
        buf = self._buf
        buf += data
        out: list[Message] = []
        while True:
            if self._pending is None:
                i = 0
                n = len(buf)
                while i < n and buf[i] in (13, 10):
                    i += 1
                if i:
                    # RFC 5626 §3.5.1: CRLFCRLF is a ping (answer CRLF), a lone CRLF a pong.
                    self.pings += buf.count(b"\r\n\r\n", 0, i)
                    del buf[:i]
                    self._scan = 0
                    self.keepalives += 1
                if not buf:
                    break
                end = _find_head_end(buf, self._scan)
                if end is None:
                    if len(buf) > self.max_size:
                        raise self._fatal(
                            SipParseError(f"header section larger than {self.max_size}", 413), out
                        )
                    self._scan = max(0, len(buf) - 3)
                    break
                self._scan = 0
                head_end, body_start = end
                if head_end > self.max_size:
                    raise self._fatal(
                        SipParseError(f"header section larger than {self.max_size}", 413), out
                    )
                h = _parse_head(bytes(buf[:head_end]), self.max_uri)
                msg = h.message
                # The request to answer with a framing error: only if it was fully readable.
                partial: Request | None
                if h.error is not None:
                    partial = h.error.partial
                else:
                    partial = msg if isinstance(msg, Request) else None
                if msg is None or h.framing_error:
                    assert h.error is not None
                    raise self._fatal(h.error, out)
                if h.content_length is None:
                    raise self._fatal(
                        SipParseError("missing Content-Length on a stream", 400, partial), out
                    )
                if body_start + h.content_length > self.max_size:
                    raise self._fatal(
                        SipParseError(f"message larger than {self.max_size} bytes", 413, partial),
                        out,
                    )
                self._pending = (msg, h.error, body_start, h.content_length)
            msg, err, body_start, cl = self._pending
            if len(buf) < body_start + cl:
                break
            msg.body = bytes(buf[body_start : body_start + cl])
            del buf[: body_start + cl]
            self._pending = None
            if err is not None:
                err.messages = tuple(out)
                raise err
            out.append(msg)
        return out


__all__ = ["DEFAULT_MAX_SIZE", "MAX_URI_LENGTH", "StreamParser", "parse_message"]
