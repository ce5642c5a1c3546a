"""The ACD state machine of psapd: queue, round-robin, re-offer, busy."""

from ng911.elements.acd import (
    Acd,
    Connected,
    Offer,
    Queued,
    Reject,
    Release,
    WithdrawOffer,
)


def make(n: int = 2, **kw: object) -> Acd:
    acd = Acd(**kw)  # type: ignore[arg-type]
    for i in range(1, n + 1):
        assert acd.add_taker(f"t{i}") == []
    return acd


def test_round_robin_offers_to_free_takers_in_turn():
    acd = make(3, offer_timeout=5.0)
    assert acd.incoming("c1") == [Offer("c1", "t1", 5.0)]
    assert acd.incoming("c2") == [Offer("c2", "t2", 5.0)]
    assert acd.answered("c1", "t1") == [Connected("c1", "t1")]
    assert acd.ended("c1") == []
    # the pointer moved on: t3 is next even though t1 is free again
    assert acd.incoming("c3") == [Offer("c3", "t3", 5.0)]
    assert acd.incoming("c4") == [Offer("c4", "t1", 5.0)]


def test_no_answer_reoffers_to_another_taker():
    acd = make(2, offer_timeout=1.0)
    assert acd.incoming("c1") == [Offer("c1", "t1", 1.0)]
    actions = acd.no_answer("c1", "t1")
    assert actions[0] == WithdrawOffer("c1", "t1", "no answer in 1 s")
    assert actions[1] == Offer("c1", "t2", 1.0)
    assert acd.taker_of("c1") == "t2"
    # the first taker's late 487 (after our CANCEL) is ignored
    assert acd.declined("c1", "t1", 487) == []
    # its late timer too
    assert acd.no_answer("c1", "t1") == []


def test_single_taker_is_rung_again_rather_than_leaving_the_call_waiting():
    acd = make(1, offer_timeout=1.0)
    acd.incoming("c1")
    actions = acd.no_answer("c1", "t1")
    assert actions == [WithdrawOffer("c1", "t1", "no answer in 1 s"), Offer("c1", "t1", 1.0)]


def test_decline_reoffers():
    acd = make(2)
    acd.incoming("c1")
    assert acd.declined("c1", "t1", 486) == [Offer("c1", "t2", 10.0)]


def test_queue_then_busy_with_retry_after():
    acd = make(1, queue_size=2, retry_after=20)
    assert acd.incoming("c1") == [Offer("c1", "t1", 10.0)]
    assert acd.incoming("c2") == [Queued("c2", 1)]
    assert acd.incoming("c3") == [Queued("c3", 2)]
    assert acd.incoming("c4") == [Reject("c4", 486, 20, "all call takers busy, queue full")]
    acd.answered("c1", "t1")
    # hanging up frees t1: the head of the queue is offered at once
    assert acd.ended("c1") == [Offer("c2", "t1", 10.0)]
    assert acd.queue == ("c3",)


def test_no_takers_480_at_once():
    # nobody could answer a queued call: 480 at once, so that the ESRP tries the alternate
    acd = Acd(queue_size=1, retry_after=5)
    assert acd.incoming("c1") == [Reject("c1", 480, 5, "no call taker registered")]
    assert acd.queue == ()
    assert acd.add_taker("t1") == []
    assert acd.incoming("c2") == [Offer("c2", "t1", 10.0)]


def test_a_queued_call_waits_when_the_last_taker_leaves():
    acd = Acd(queue_size=2)
    acd.add_taker("t1")
    acd.incoming("c1")
    assert acd.incoming("c2") == [Queued("c2", 1)]
    acd.remove_taker("t1")
    assert acd.add_taker("t2") == [Offer("c1", "t2", 10.0)]
    assert acd.queue == ("c2",)


def test_queued_calls_are_refused_when_no_taker_comes_back():
    # the last taker gone with calls queued: `unstaffed` (psapd's `unstaffed_wait` later)
    # refuses them 480 so the ESRP tries the alternate; nothing once a taker is back
    acd = Acd(queue_size=3, retry_after=7)
    acd.add_taker("t1")
    acd.incoming("c1")
    acd.incoming("c2")
    assert acd.remove_taker("t1") == [WithdrawOffer("c1", "t1", "call taker unregistered")]
    assert acd.queue == ("c1", "c2")
    assert acd.unstaffed() == [
        Reject("c1", 480, 7, "no call taker registered"),
        Reject("c2", 480, 7, "no call taker registered"),
    ]
    assert acd.queue == () and acd.taker_of("c1") is None
    assert acd.unstaffed() == []
    acd.add_taker("t2")
    acd.incoming("c3")
    acd.incoming("c4")
    assert acd.unstaffed() == []  # a taker is registered: the queue waits for it
    assert acd.queue == ("c4",)


def test_caller_abandons_while_ringing_and_while_queued():
    acd = make(1)
    acd.incoming("c1")
    acd.incoming("c2")
    # c1 cancelled while ringing t1: the offer is withdrawn and c2 gets t1
    assert acd.ended("c1") == [
        WithdrawOffer("c1", "t1", "caller abandoned"),
        Offer("c2", "t1", 10.0),
    ]
    acd.incoming("c3")
    assert acd.ended("c3") == []
    assert acd.queue == ()


def test_answer_to_withdrawn_offer_is_released():
    acd = make(2, offer_timeout=1.0)
    acd.incoming("c1")
    acd.no_answer("c1", "t1")
    assert acd.answered("c1", "t1") == [Release("c1", "t1")]
    assert acd.answered("c1", "t2") == [Connected("c1", "t2")]


def test_unregistering_a_ringing_taker_reoffers():
    acd = make(2)
    acd.incoming("c1")
    actions = acd.remove_taker("t1")
    assert actions == [
        WithdrawOffer("c1", "t1", "call taker unregistered"),
        Offer("c1", "t2", 10.0),
    ]
    assert acd.takers == ("t2",)
    assert acd.remove_taker("nobody") == []


def test_duplicate_incoming_is_ignored():
    acd = make(1)
    acd.incoming("c1")
    assert acd.incoming("c1") == []


def test_bounded_storm_keeps_invariants():
    """Many calls and events: every call is offered, queued or rejected, never lost."""
    acd = make(3, queue_size=4, offer_timeout=1.0)
    seen: dict[str, str] = {}
    for i in range(50):
        for a in acd.incoming(f"c{i}"):
            seen[a.call] = type(a).__name__
        if i % 3 == 0:
            for t in list(acd.takers):
                call = acd._state.get(t)
                if call is not None:
                    acd.answered(call, t)
                    acd.ended(call)
    assert len(seen) == 50
    assert set(seen.values()) <= {"Offer", "Queued", "Reject"}
    assert len(acd.queue) <= 4
