"""Typed errors of the location layer.

A bad location never stops an emergency call (NENA i3: the ESRP routes by its default route
and logs why), so every failure here is a `LocationError` the caller can catch in one place.
`XmlError` narrows it to input that is hostile or not XML at all, which is worth logging apart
from a well-formed document that merely says something we cannot use.
"""

from __future__ import annotations

from ng911.errors import Ng911Error


class LocationError(Ng911Error):
    """A location that is missing, garbled or unusable.

    On the wire: an ESRP routes the call by its default route (NENA i3) and may answer a
    location-based request with SIP 424 Bad Location Information plus a Geolocation-Error
    header (RFC 6442 §4.3, §4.4); a LoST server answers `<locationInvalid>` or `<badRequest>`
    (RFC 5222 §13.1).
    """

    #: SIP status a UAS answers with when it must reject because of the location.
    sip_status: int = 424
    #: RFC 5222 §13.1 error element a LoST server answers with.
    lost_error: str = "locationInvalid"


class XmlError(LocationError):
    """Hostile or malformed XML: a DTD or entity, too large, too deep, not XML at all.

    LoST answers `<badRequest>` (RFC 5222 §13.1) for these: the request is not a location
    problem but a broken message.
    """

    sip_status = 400
    lost_error = "badRequest"
