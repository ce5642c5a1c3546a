"""Which SIP messages go first when an element is behind (RFC 5031, RFC 7135, RFC 7339).

Sans-I/O: the transport layer uses it to order a batch of datagrams read at one wake-up
(emergency calls and the messages that finish work already admitted ahead of new ordinary
requests), and `ng911.elements.overload` to decide what to shed. It reads only what is
parsed at once or cheaply: the method, the Request-URI, the To tag, Resource-Priority.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from ng911.sip.message import Request, Response

__all__ = ["Priority", "classify", "priority_of"]


class Priority(IntEnum):
    EMERGENCY = 0
    IN_DIALOG = 1
    NORMAL = 2


_SOS_PREFIXES = ("urn:service:sos", "urn:emergency:service:sos")


def classify(
    method: str,
    request_uri: str,
    to_has_tag: bool,
    resource_priority: Iterable[str],
    *,
    recognised_emergency: bool = False,
) -> Priority:
    """EMERGENCY: `urn:service:sos*` (RFC 5031) or an `esnet.*` Resource-Priority (RFC 7135),
    or what the element recognised itself (dial strings); IN_DIALOG: ACK, CANCEL, or a To
    tag (it ends or completes work already admitted); NORMAL: every other new request."""
    if method in ("ACK", "CANCEL") or to_has_tag:
        return Priority.IN_DIALOG
    if recognised_emergency or request_uri[:26].lower().startswith(_SOS_PREFIXES):
        return Priority.EMERGENCY
    for value in resource_priority:
        # RFC 7135 §2: the "esnet" namespace is for emergency calls; any well-formed
        # priority in it marks one (a flood abusing it still meets the per-source limit)
        if "esnet." in value.lower():
            return Priority.EMERGENCY
    return Priority.NORMAL


def priority_of(msg: Request | Response) -> Priority:
    """`classify` for a parsed message; a response finishes admitted work (IN_DIALOG), and
    a message too broken to classify is NORMAL (the element answers it 400 in its turn)."""
    if isinstance(msg, Response):
        return Priority.IN_DIALOG
    try:
        return classify(
            msg.method,
            str(msg.uri),
            msg.to_addr.tag is not None,
            msg.headers.get_all("Resource-Priority"),
        )
    except Exception:
        return Priority.NORMAL
