"""Fixtures of the element tests: builders of real `ng911.sip` requests."""

from __future__ import annotations

import pytest

from ng911.sip.message import Request
from ng911.sip.uri import parse_uri


def invite(
    uri: str = "sip:911@vsp.example",
    *,
    to: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKtest1;rport"),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@vsp.example>;tag=abc"),
        ("To", to if to is not None else f"<{uri}>"),
        ("Call-ID", "call-1@127.0.0.1"),
        ("CSeq", "1 INVITE"),
        ("Contact", "<sip:alice@127.0.0.1:5062>"),
        *extra,
    ]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    return Request("INVITE", parse_uri(uri), headers, body)


@pytest.fixture
def make_invite():
    return invite
