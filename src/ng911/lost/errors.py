"""Typed LoST errors, each naming the RFC 5222 §13.1 error element it is answered with.

A server turns a `LostProtocolError` into `<errors><KIND message=…/></errors>` (HTTP 200:
LoST errors travel in the body, RFC 5222 §13). A client raises a `LostClientError` for what
went wrong below LoST (unreachable, timeout, HTTP status) and a `LostResponseError` for an
`<errors>` answer, so the ESRP can tell "the ECRF said no" from "the ECRF is down" and route
by its default route in both cases.
"""

from __future__ import annotations

from ng911.errors import Ng911Error

# RFC 5222 §13.1: the error elements of an <errors> response.
ERROR_KINDS: tuple[str, ...] = (
    "badRequest",
    "internalError",
    "serviceSubstitution",
    "defaultMappingReturned",
    "forbidden",
    "notFound",
    "loop",
    "serviceNotImplemented",
    "serverTimeout",
    "serverError",
    "locationInvalid",
    "locationProfileUnrecognized",
)
# RFC 5222 §13.2: warnings. The two "substitution" errors are used as warnings too: a
# server that answers with a default mapping or a substituted service says so in <warnings>.
WARNING_KINDS: tuple[str, ...] = (
    "locationValidationUnavailable",
    "serviceSubstitution",
    "defaultMappingReturned",
)


class LostError(Ng911Error):
    """Base of every LoST error; `kind` is the RFC 5222 §13.1 element name."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message


class LostProtocolError(LostError):
    """A request (or response) the protocol layer cannot accept; the server answers `kind`."""


class LostClientError(LostError):
    """The LoST server could not be asked: unreachable, timed out, or an HTTP-level error.

    `kind` is "unreachable", "timeout", "http" or "protocol" (an unparsable answer).
    """

    def __init__(self, kind: str, message: str = "", *, status: int | None = None) -> None:
        super().__init__(kind, message)
        self.status = status


class LostResponseError(LostClientError):
    """The server answered with `<errors>` (RFC 5222 §13.1); `kind` is the error element."""

    def __init__(self, kind: str, message: str = "", *, source: str | None = None) -> None:
        super().__init__(kind, message)
        self.source = source


class LostNotFound(LostResponseError):
    """`<notFound>`: the server has no mapping for this location and service."""


class BoundaryDataError(Ng911Error, ValueError):
    """A service-boundary file (GeoJSON) that cannot be read: missing, not JSON, not a
    FeatureCollection of polygons. The message names the file; `ng911 lost serve` and
    `ng911 run lost` print it as their one error line."""
