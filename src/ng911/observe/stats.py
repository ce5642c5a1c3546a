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
import random
import statistics
import zlib
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


def diff_summary(s: Summary, base: Summary) -> dict[str, dict[str, Any]]:
    """Differences of mean, p50, p95, p99 from the baseline's (the mean's with its 95% CI)."""
    out = {
        k: dict(diff(getattr(s, k), getattr(base, k)).to_dict())
        for k in ("mean", "p50", "p95", "p99")
    }
    ci = mean_diff_ci95(s, base)
    out["mean"]["ci95_ms"] = ci
    # a flag in plain words beside the number: the interval includes zero
    out["mean"]["within_noise"] = ci is not None and abs(out["mean"]["ms"] or 0.0) <= ci
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


# ------------------------------------------------------------------------------ bootstrap
#
# Latency samples are skewed (a long right tail: a GC pause, a scheduler hiccup), so a normal
# interval on the mean (Welch, above) is optimistic for the tail and says nothing about the
# median. The percentile bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap",
# 1993, ch. 13) makes no assumption about the shape: resample each side with replacement,
# recompute the statistic, and read the interval off the 2.5th and 97.5th percentiles of the
# resampled differences. Pure Python and bounded: `BOOTSTRAP_RESAMPLES` resamples of each side
# (one sort and one sum each), seeded from a fixed seed and the cell's name, so the same data
# give the same interval on every machine and in every order of computation.

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 911
BOOTSTRAP_METHOD = (
    f"percentile bootstrap, {BOOTSTRAP_RESAMPLES} resamples of each side independently, "
    f"seeded (Python random.Random, seed {BOOTSTRAP_SEED} + CRC-32 of the cell's name)"
)


def _rng(key: str, seed: int) -> random.Random:
    return random.Random(seed ^ zlib.crc32(key.encode("utf-8")))


@dataclass(frozen=True, slots=True)
class Replicates:
    """The medians and means of `len(medians)` bootstrap resamples of one sample."""

    n: int
    median: float  # of the sample itself
    mean: float
    medians: tuple[float, ...]
    means: tuple[float, ...]


def replicates(
    values: Sequence[float],
    *,
    key: str = "",
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Replicates | None:
    """Bootstrap replicates of the median and the mean of `values` (None when empty).

    `key` names the sample (e.g. "tls-all/warm/hop2") and seeds its generator, so a sample's
    replicates do not depend on what else was computed before it.
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return None
    resamples = max(1, min(int(resamples), 100_000))
    choices = _rng(key, seed).choices
    mid = n // 2
    medians: list[float] = []
    means: list[float] = []
    for _ in range(resamples):
        r = choices(xs, k=n)
        r.sort()
        medians.append(r[mid] if n % 2 else (r[mid - 1] + r[mid]) / 2.0)
        means.append(sum(r) / n)
    return Replicates(n, percentile(xs, 50), math.fsum(xs) / n, tuple(medians), tuple(means))


@dataclass(frozen=True, slots=True)
class Interval:
    """A difference (value − baseline, ms) and its 95% bootstrap confidence interval."""

    ms: float
    lo: float
    hi: float

    @property
    def within_noise(self) -> bool:
        """The interval includes zero: this run cannot tell the difference from no effect."""
        return self.lo <= 0.0 <= self.hi

    def to_dict(self) -> dict[str, float | bool]:
        return {"ms": self.ms, "lo": self.lo, "hi": self.hi, "within_noise": self.within_noise}


def _interval(est: float, a: Sequence[float], b: Sequence[float], level: float) -> Interval:
    diffs = sorted(x - y for x, y in zip(a, b, strict=True))
    tail = (1.0 - level) / 2.0 * 100.0
    return Interval(est, percentile(diffs, tail), percentile(diffs, 100.0 - tail))


def bootstrap_diff(
    value: Replicates, baseline: Replicates, *, level: float = 0.95
) -> dict[str, Interval]:
    """Median and mean differences (value − baseline) with percentile-bootstrap intervals.

    The two samples are independent (different calls), so their replicates are paired in
    order: replicate i of the difference is value's replicate i minus baseline's.
    """
    k = min(len(value.medians), len(baseline.medians))
    return {
        "median": _interval(
            value.median - baseline.median, value.medians[:k], baseline.medians[:k], level
        ),
        "mean": _interval(value.mean - baseline.mean, value.means[:k], baseline.means[:k], level),
    }
