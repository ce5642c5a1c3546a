"""The error an element answers a request with, and the status any error is answered with."""

from __future__ import annotations

from ng911.errors import Ng911Error
from ng911.sip.errors import SipParseError

__all__ = ["ElementError", "status_of"]


class ElementError(Ng911Error):
    """An element cannot serve a request; `status` is the SIP answer (RFC 3261 §21)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def status_of(exc: BaseException) -> tuple[int, str]:
    """The SIP status and reason phrase an error is answered with."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if not isinstance(status, int) or not 300 <= status <= 699:
        status = 500 if not isinstance(exc, SipParseError) else 400
    if not isinstance(reason, str) or not reason:
        reason = str(exc) or type(exc).__name__
    # a reason phrase is one line of printable text
    reason = "".join(c if c.isprintable() else " " for c in reason)[:120]
    return status, reason
