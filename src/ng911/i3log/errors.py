"""Why a LogEvent was refused, with the i3 status code that names it.

The Logging Service interface (NENA-STA-010.3 §4.12, NENA's loggingservice.yaml) names its
failures by code: 434 Signature Verification Failure, 438 Unacceptable Algorithm, 454
Unspecified Error, 460 Bad LogEvent, 461 LogEvent too big. The server answers HTTP 400 (413
for size) and carries the i3 code and reason in its JSON error body (`server.py` says why).
"""

from __future__ import annotations

from ng911.errors import Ng911Error

__all__ = [
    "AlgorithmError",
    "BadLogEvent",
    "CertificateChainError",
    "I3LogError",
    "SignatureError",
]


class I3LogError(Ng911Error):
    """A LogEvent or its JWS could not be accepted; `code` is the i3 status code."""

    code = 454
    reason = "Unspecified Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def to_json(self) -> dict[str, object]:
        """The i3-style error body: the code, its registered reason, and what we saw."""
        return {"code": self.code, "reason": self.reason, "detail": self.detail}


class BadLogEvent(I3LogError):
    """Not a LogEvent: not JSON, unknown logEventType, a required member missing or bad."""

    code = 460
    reason = "Bad LogEvent"


class SignatureError(I3LogError):
    """The JWS is malformed or its signature does not verify with the x5c leaf's key."""

    code = 434
    reason = "Signature Verification Failure"


class CertificateChainError(SignatureError):
    """The x5c chain is missing, unreadable, expired, or does not lead to a configured CA."""


class AlgorithmError(I3LogError):
    """The JWS `alg` is not one we accept (never "none")."""

    code = 438
    reason = "Unacceptable Algorithm"
