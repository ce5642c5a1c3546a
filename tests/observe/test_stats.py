"""Percentiles, summaries, differences from the baseline, RFC 6076 ratios: exact values."""

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ng911.observe.stats import (
    CallMeasure,
    aggregate,
    diff,
    diff_summary,
    percentile,
    session_establishment_ratio,
    summarize,
)


def test_percentile_type7_known_values():
    xs = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert percentile(xs, 0) == 15.0
    assert percentile(xs, 100) == 50.0
    assert percentile(xs, 50) == 35.0
    assert percentile(xs, 40) == 29.0  # h = 1.6 → 20 + 0.6·15
    assert percentile(xs, 95) == pytest.approx(48.0)  # h = 3.8 → 40 + 0.8·10
    assert percentile([7.0], 99) == 7.0
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=50))
def test_percentile_matches_statistics_inclusive(xs):
    qs = statistics.quantiles(xs, n=100, method="inclusive")
    for q in (1, 25, 50, 95, 99):
        assert percentile(xs, q) == pytest.approx(qs[q - 1], rel=1e-9, abs=1e-6)


def test_percentile_errors():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], math.nan)


def test_summary_and_diffs():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s is not None
    assert (s.n, s.mean, s.p50, s.min, s.max) == (4, 2.5, 2.5, 1.0, 4.0)
    assert s.p95 == pytest.approx(3.85)
    assert summarize([]) is None
    base = summarize([2.0, 2.0])
    assert base is not None
    d = diff_summary(s, base)
    assert d["mean"]["ms"] == 0.5 and d["mean"]["pct"] == 25.0
    # Welch: 1.96·√(s²/n + 0) with s² = 5/3 (1..4), n = 4; the baseline has no spread
    assert d["mean"]["ci95_ms"] == pytest.approx(1.96 * math.sqrt((5 / 3) / 4))
    assert s.stdev == pytest.approx(statistics.stdev([1.0, 2.0, 3.0, 4.0]))
    one = summarize([1.0])
    assert one is not None and one.stdev == 0.0
    assert diff_summary(one, base)["mean"]["ci95_ms"] is None
    assert diff(1.0, 0.0).pct is None
    assert diff(3.0, 4.0).to_dict() == {"ms": -1.0, "pct": -25.0}


def test_ser_rfc6076():
    calls = [
        CallMeasure("a", True, final_status=200),
        CallMeasure("b", True, final_status=200),
        CallMeasure("c", False, final_status=302),
        CallMeasure("d", False, final_status=486),
    ]
    assert session_establishment_ratio(calls) == pytest.approx(200 / 3)
    assert session_establishment_ratio([]) is None


def test_aggregate_cold_and_warm_apart():
    calls = [
        CallMeasure("c0", True, srd=10.0, invite_to_200=20.0, cold=True, final_status=200),
        CallMeasure("c1", True, srd=1.0, invite_to_200=2.0, final_status=200),
        CallMeasure("c2", True, srd=3.0, invite_to_200=4.0, final_status=200),
        CallMeasure("c3", False, srd=None, final_status=503, reason="final response 503"),
    ]
    agg = aggregate(calls)
    assert agg["calls"] == 4 and agg["failed"] == 1
    assert agg["failures"] == [{"call_id": "c3", "status": 503, "reason": "final response 503"}]
    assert agg["cold"]["srd"]["mean"] == 10.0 and agg["cold"]["srd"]["n"] == 1
    assert agg["warm"]["srd"]["mean"] == 2.0 and agg["warm"]["srd"]["n"] == 2
    assert agg["all"]["invite_to_200"]["mean"] == pytest.approx(26 / 3)
    assert agg["warm"]["sdd"] is None
    assert agg["ser_pct"] == 75.0
