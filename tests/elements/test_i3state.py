"""The i3 state types: i3 member names, enumerations enforced, stale states forgotten."""

import pytest

from ng911.elements.i3state import QueueState, ServiceState, StateBoard


def test_queue_state_round_trips_and_knows_full() -> None:
    q = QueueState("sip:q@psap", 3, 3)
    assert QueueState.from_json(q.to_json()) == q
    assert q.full and not QueueState("sip:q@psap", 1, 3).full
    assert QueueState("sip:q@psap", 0, 3, "Full").full


def test_unknown_values_are_refused() -> None:
    with pytest.raises(ValueError, match="not one of"):
        QueueState.from_json(
            {"queueUri": "x", "queueLength": 1, "queueMaxLength": 2, "state": "Busy"}
        )
    with pytest.raises(ValueError):
        QueueState.from_json(
            {"queueUri": "x", "queueLength": -1, "queueMaxLength": 2, "state": "Active"}
        )
    s = ServiceState("PSAP", "psap.example", "Down", "maintenance", "Red")
    assert ServiceState.from_json(s.to_json()) == s


def test_board_forgets_stale_states() -> None:
    b = StateBoard(max_age=10)
    b.update_queue("sip:p", QueueState("sip:p", 1, 2), now=100)
    assert b.queue("sip:p", now=105) is not None
    assert b.queue("sip:p", now=111) is None
    b.forget("sip:p")
    assert b.queue("sip:p", now=100) is None
