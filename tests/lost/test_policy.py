"""The ESRP's sips: policy for LoST answers."""

from __future__ import annotations

import pytest

from ng911.lost.policy import SipsPolicyError, apply_sips_policy


@pytest.mark.parametrize(
    "uri,expected",
    [
        ("sip:psap-queens@esinet.example", "sips:psap-queens@esinet.example"),
        ("sip:psap@esinet.example:5060", "sips:psap@esinet.example:5060"),
        ("sip:psap@esinet.example;transport=udp", "sips:psap@esinet.example"),
        ("sip:psap@esinet.example;transport=TCP;lr", "sips:psap@esinet.example;lr"),
        ("sip:psap@esinet.example;transport=tls", "sips:psap@esinet.example"),
        ("sip:psap@esinet.example;transport=ws", "sips:psap@esinet.example;transport=ws"),
        ("SIP:psap@10.0.0.1:5070;user=ip?subject=x", "sips:psap@10.0.0.1:5070;user=ip?subject=x"),
        (
            "sip:+12125551234;npdi@esinet.example;user=phone",
            "sips:+12125551234;npdi@esinet.example;user=phone",
        ),
        ("<sip:psap@esinet.example>", "sips:psap@esinet.example"),
        ("sips:psap@esinet.example;transport=tcp", "sips:psap@esinet.example;transport=tcp"),
    ],
)
def test_upgrade(uri: str, expected: str) -> None:
    assert apply_sips_policy(uri, "upgrade") == expected


def test_require() -> None:
    assert apply_sips_policy("sips:psap@x.example", "require") == "sips:psap@x.example"
    with pytest.raises(SipsPolicyError):
        apply_sips_policy("sip:psap@x.example", "require")
    with pytest.raises(SipsPolicyError):
        apply_sips_policy("xmpp:psap@x.example", "require")


def test_keep_and_bad_input() -> None:
    assert apply_sips_policy("sip:psap@x.example;transport=udp", "keep") == (
        "sip:psap@x.example;transport=udp"
    )
    with pytest.raises(ValueError):
        apply_sips_policy("sip:a@b", "maybe")
    with pytest.raises(SipsPolicyError):
        apply_sips_policy("no-colon-here", "upgrade")
    with pytest.raises(SipsPolicyError):
        apply_sips_policy("tel:+12125551234", "upgrade")
