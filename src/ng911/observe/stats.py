"""Statistics of call set-up: mean and percentiles, and differences from the baseline.

Names follow RFC 6076 ("Basic Telephony SIP End-to-End Performance Metrics") where it has one:

- **SRD, Session Request Delay** (RFC 6076 §4.2): INVITE sent → first non-100 provisional
  response (180/183) received, at the caller. For a successful call without provisional
  responses, §4.2.1 takes the 200 instead, and so do we.
- **INVITE→200**: INVITE sent → 200 received. RFC 6076 has no metric for it (its SRD stops at
  the first provisional); we call it `invite_to_200` and say so in every table.
- **SDD, Session Disconnect Delay** (RFC 6076 §4.3): BYE sent → its 200 received.
- **SER, Session Establishment Ratio** (RFC 6076 §4.5): INVITEs answered 200 / (INVITEs − those
  answered with a 3xx), in percent.

Percentiles use linear interpolation between closest ranks: for n sorted values and q in
[0, 100], h = (n − 1)·q/100 and the result is x[⌊h⌋] + (h − ⌊h⌋)(x[⌊h⌋+1] − x[⌊h⌋]). That is
Hyndman & Fan's type 7, numpy's default `linear` method, Excel's PERCENTILE.INC and Python's
`statistics.quantiles(method="inclusive")`; with few calls p99 is close to the maximum.
All times here are milliseconds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

PERCENTILE_METHOD = "linear interpolation between closest ranks (Hyndman-Fan type 7, numpy default)"

METRICS: dict[str, str] = {
    "srd": "SRD (RFC 6076 §4.2): INVITE → first 180/183",
    "invite_to_200": "INVITE → 200 (no RFC 6076 name)",
    "sdd": "SDD (RFC 6076 §4.3): BYE → 200",
}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 ≤ q ≤ 100) of `values`, type-7 linear interpolation."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"percentile {q} outside [0, 100]")
    xs = sorted(values)
    h = (len(xs) - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


@dataclass(frozen=True, slots=True)
class Summary:
    """n, mean, p50, p95, p99, min, max and sample standard deviation (milliseconds)."""

    n: int
    mean: float
    p50: float
    p95: float
    p99: float
    min: float
    max: float
    stdev: float = 0.0  # sample (n − 1) standard deviation; 0 for one value

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, float | int]) -> Summary:
        return cls(
            n=int(d["n"]),
            mean=float(d["mean"]),
            p50=float(d["p50"]),
            p95=float(d["p95"]),
            p99=float(d["p99"]),
            min=float(d["min"]),
            max=float(d["max"]),
            stdev=float(d.get("stdev", 0.0)),
        )


def summarize(values: Iterable[float]) -> Summary | None:
    """The Summary of `values`, or None for an empty sample (a table prints "—")."""
    xs = [float(v) for v in values]
    if not xs:
        return None
    return Summary(
        n=len(xs),
        mean=math.fsum(xs) / len(xs),
        p50=percentile(xs, 50),
        p95=percentile(xs, 95),
        p99=percentile(xs, 99),
        min=min(xs),
        max=max(xs),
        stdev=statistics.stdev(xs) if len(xs) > 1 else 0.0,
    )


@dataclass(frozen=True, slots=True)
class Diff:
    """A value's difference from the baseline's: in ms, and in % of the baseline."""

    ms: float
    pct: float | None  # None when the baseline is 0

    def to_dict(self) -> dict[str, float | None]:
        return {"ms": self.ms, "pct": self.pct}


def diff(value: float, baseline: float) -> Diff:
    return Diff(value - baseline, None if baseline == 0 else (value - baseline) / baseline * 100.0)


def mean_diff_ci95(s: Summary, base: Summary) -> float | None:
    """Half-width of the 95% confidence interval of the difference of two means (Welch's
    normal approximation, 1.96·√(s₁²/n₁ + s₂²/n₂)); None with fewer than 2 values a side.

    Differences smaller than this are within the run's noise: say so rather than rank them.
    """
    if s.n < 2 or base.n < 2:
        return None
    return 1.96 * math.sqrt(s.stdev**2 / s.n + base.stdev**2 / base.n)


def diff_summary(s: Summary, base: Summary) -> dict[str, dict[str, float | None]]:
    """Differences of mean, p50, p95, p99 from the baseline's (the mean's with its 95% CI)."""
    out = {
        k: diff(getattr(s, k), getattr(base, k)).to_dict() for k in ("mean", "p50", "p95", "p99")
    }
    out["mean"]["ci95_ms"] = mean_diff_ci95(s, base)
    return out


@dataclass(frozen=True, slots=True)
class CallMeasure:
    """One call's outcome and delays (ms), as measured at the caller from the message trace."""

    call_id: str
    ok: bool
    srd: float | None = None
    invite_to_200: float | None = None
    sdd: float | None = None
    cold: bool = False
    final_status: int | None = None
    reason: str | None = None  # why it failed, for the report


def session_establishment_ratio(calls: Sequence[CallMeasure]) -> float | None:
    """RFC 6076 §4.5 SER in percent: 200-answered INVITEs / (INVITEs − 3xx-answered)."""
    redirected = sum(1 for c in calls if c.final_status is not None and 300 <= c.final_status < 400)
    denom = len(calls) - redirected
    if denom <= 0:
        return None
    answered = sum(1 for c in calls if c.final_status is not None and 200 <= c.final_status < 300)
    return answered / denom * 100.0


def aggregate(calls: Sequence[CallMeasure]) -> dict[str, Any]:
    """Per-scenario aggregates: counts, SER, and each metric's summary for all/cold/warm calls.

    Cold calls (the first of a run: fresh connections, full TLS handshakes) and warm calls
    (steady state, connections and sessions reused) are summarised apart, because one cold
    call's handshakes would otherwise hide in the p99 of the warm ones.
    """
    out: dict[str, Any] = {
        "calls": len(calls),
        "failed": sum(1 for c in calls if not c.ok),
        "ser_pct": session_establishment_ratio(calls),
        "failures": [
            {"call_id": c.call_id, "status": c.final_status, "reason": c.reason}
            for c in calls
            if not c.ok
        ],
    }
    for group, sel in (
        ("all", calls),
        ("cold", [c for c in calls if c.cold]),
        ("warm", [c for c in calls if not c.cold]),
    ):
        g: dict[str, Any] = {}
        for metric in METRICS:
            vals = [getattr(c, metric) for c in sel if c.ok and getattr(c, metric) is not None]
            s = summarize(vals)
            g[metric] = s.to_dict() if s is not None else None
        out[group] = g
    return out
