"""Typed SIP errors.

A `SipParseError` knows the status code a server answers it with (h11's model: a remote
protocol error carries its response), and, when enough of a request was read, the request
itself (`partial`) so `make_response` can build that answer (RFC 3261 §8.2.2, §21.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ng911.errors import Ng911Error

if TYPE_CHECKING:
    from ng911.sip.message import Request, Response


class SipError(Ng911Error):
    """Base of every error raised by the SIP core."""


class SipParseError(SipError):
    """A message, header or URI that cannot be read.

    `status` is the response a server sends (400 bad syntax, 413 too large, 414 URI too
    long, 416 unsupported URI scheme, 505 version not supported); `reason` is human text,
    usable as reason phrase or in a Warning header. `partial` is the request when its first
    line and Via, From, To, Call-ID and CSeq were read, else None (responses are never
    answered, RFC 3261 §18.1.2). `messages` is set only by `StreamParser.feed`: the complete
    messages that preceded the bad one in the same feed, to be delivered before answering.
    """

    status: int
    reason: str
    partial: Request | None
    messages: tuple[Request | Response, ...]

    def __init__(
        self,
        reason: str,
        status: int = 400,
        partial: Request | None = None,
        messages: Sequence[Request | Response] = (),
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.partial = partial
        self.messages = tuple(messages)
