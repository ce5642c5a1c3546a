"""Test calls (`urn:service:test.sos`, RFC 6881 §15; NENA-STA-010.3 Test Call): what psapd
decides and answers. Pure: no I/O; psapd (`psap.py`) carries it out.

Why psapd answers them itself: a test call checks the path a real emergency call takes
(the same routing to the same PSAP) without taking a call taker from a real caller. So the
call is never queued nor offered. The PSAP may limit how many it takes at once and may
refuse them while it is under load (486 Busy Here), may have the test function disabled by
policy (404); when it accepts, its 200 OK carries a `text/plain` part with the PSAP's name,
`urn:service:test.sos` and the location the call reported, each line ending in CRLF (NENA's
test call body), beside the SDP answer to the caller's offer (RFC 3264 needs one).
"""

from __future__ import annotations

from dataclasses import dataclass

from ng911.elements.emergency import TEST_SOS
from ng911.sip.body import BodyPart, build_multipart

__all__ = ["TestCallPolicy", "answer_body", "refusal"]


@dataclass(frozen=True, slots=True)
class TestCallPolicy:
    """psapd's test-call settings (`PsapConfig.test_calls*`)."""

    enabled: bool = True
    limit: int = 2  # test calls answered at once
    when_busy: bool = False  # take them while calls queue or every call taker is busy


def refusal(
    policy: TestCallPolicy, *, active: int, queued: int, free_takers: int
) -> tuple[int, str] | None:
    """(status, reason) refusing a new test call, or None to answer it."""
    if not policy.enabled:
        return 404, "Test calls not supported here"
    if active >= policy.limit:
        return 486, "Too many test calls"
    if not policy.when_busy and (queued > 0 or free_takers == 0):
        return 486, "PSAP busy: no test calls now"
    return None


def answer_body(psap: str, location: str | None, sdp_answer: bytes | None) -> tuple[str, bytes]:
    """(Content-Type, body) of the 200 OK: the NENA text part, with the SDP answer in a
    multipart/mixed when the INVITE made an offer."""
    text = f"{psap}\r\n{TEST_SOS}\r\n{location or 'no location received'}\r\n".encode()
    if sdp_answer is None:
        return "text/plain", text
    return build_multipart([BodyPart("application/sdp", sdp_answer), BodyPart("text/plain", text)])
