"""The PSAP up/down policy (elements/health.py): events in, state out, no I/O."""

from ng911.elements.health import HealthPolicy, PeerHealth, Transition


def test_unknown_peers_are_up_and_one_failure_marks_down():
    h = PeerHealth()
    assert h.is_up("sip:a")
    assert h.failed("sip:a", 1.0, "no answer") == Transition("sip:a", False, "no answer")
    assert not h.is_up("sip:a")
    assert h.down() == ("sip:a",)
    assert h.failed("sip:a", 2.0, "again") is None  # already down: no new transition
    assert h.answered("sip:a", 3.0, "OPTIONS answered 200") == Transition(
        "sip:a", True, "OPTIONS answered 200"
    )
    assert h.is_up("sip:a") and h.state("sip:a").changed == 3.0


def test_thresholds():
    h = PeerHealth(HealthPolicy(down_after=3, up_after=2))
    assert h.failed("p", 0, "x") is None
    assert h.answered("p", 0) is None  # an answer resets the failure count
    assert h.failed("p", 0, "x") is None
    assert h.failed("p", 0, "x") is None
    assert h.failed("p", 0, "x") is not None
    assert h.answered("p", 1) is None
    assert h.failed("p", 1, "x") is None  # resets the answers
    assert h.answered("p", 2) is None
    assert h.answered("p", 3) == Transition("p", True, "answered")


def test_pings_down_ones_often_up_ones_seldom():
    h = PeerHealth(HealthPolicy(interval=10.0, interval_down=1.0))
    h.track("up")
    h.track("down")
    h.failed("down", 0.0, "x")
    assert sorted(h.due(0.0)) == ["down", "up"]  # never pinged: both at once
    assert h.due(0.5) == []
    assert h.due(1.0) == ["down"]
    assert h.due(2.0) == ["down"]
    assert sorted(h.due(10.0)) == ["down", "up"]
    assert PeerHealth(HealthPolicy(interval=0.0)).due(5.0) == []


def test_order_puts_down_peers_last_in_plan_order():
    h = PeerHealth()
    h.failed("a", 0, "x")
    h.failed("c", 0, "x")
    assert h.order(["a", "b", "c", "d"]) == (["b", "d"], ["a", "c"])
    h.failed("b", 0, "x")
    h.failed("d", 0, "x")
    assert h.order(["a", "b", "c", "d"]) == ([], ["a", "b", "c", "d"])


def test_bounded_and_configured_peers_stay():
    h = PeerHealth(HealthPolicy(max_peers=3))
    h.track("default", pinned=True)
    for i in range(10):
        h.track(f"lost{i}")
    assert len(h.peers) == 3
    assert "default" in h.peers and "lost9" in h.peers


def test_answered_keeps_every_other_field() -> None:
    """`answered` on an up peer rebuilds its state field by field: nothing else changes."""
    h = PeerHealth(HealthPolicy(down_after=3))
    h.track("sip:psap", pinned=True)
    h.failed("sip:psap", 5.0, "no answer")
    h.due(7.0)
    before = h.state("sip:psap")
    assert before is not None and before.failures == 1 and before.pinned
    h.answered("sip:psap", 9.0)
    after = h.state("sip:psap")
    assert after is not None
    assert (after.failures, after.answers) == (0, before.answers + 1)
    assert (after.up, after.changed, after.last_ping, after.reason, after.pinned) == (
        before.up, before.changed, before.last_ping, before.reason, before.pinned
    )  # fmt: skip
