"""`ng911 demo --invite` (src/ng911/demo.py): the parsed emergency INVITE, readable.

(`ng911 demo` itself runs the testbed: tests/test_cli.py.)
"""

from __future__ import annotations

from ng911.cli import main


def test_demo_prints_the_call_and_its_location(capsys):
    assert main(["demo", "--invite"]) == 0
    out = capsys.readouterr().out
    assert "INVITE urn:service:sos SIP/2.0" in out
    assert "emergency service URN: True" in out
    assert "application/sdp" in out and "application/pidf+xml" in out
    assert "Content-ID <caller-loc-7a3f9c@ua.example.net>" in out
    assert "<gml:pos>40.7580 -73.9855</gml:pos>" in out
