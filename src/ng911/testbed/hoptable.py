"""The per-hop table, the spread between repeated runs, and the comparison of two runs.

All three are computed from the per-call records (`measure.call_record`: each call's SRD
split into hop transit and element time), never from means of means, so `results.json` alone
(or two of them) is enough: `ng911 testbed report` and `ng911 testbed compare` recompute
nothing from the traces.

Differences carry a 95% percentile-bootstrap interval of the median and of the mean
(`ng911.observe.stats.bootstrap_diff`: latency is skewed, so no normal approximation), and a
plain-words flag when the interval includes zero ("within noise"): the run cannot tell that
difference from no difference.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ng911.observe.stats import (
    BOOTSTRAP_METHOD,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    Replicates,
    bootstrap_diff,
    replicates,
)
from ng911.testbed.measure import SEGMENTS
from ng911.testbed.scenarios import BASELINE

# Rows of the per-hop table, in the order a call crosses them, then the SRD they add up to.
ROWS: tuple[str, ...] = (*(seg for seg in SEGMENTS if seg != "other"), "srd")
ROW_KIND: dict[str, str] = {
    **{h: "transit" for h in ("hop1", "hop2", "hop3", "hop4")},
    **{e: "element" for e in ("vsp", "esrp", "psap", "calltaker")},
    "lost": "LoST query",
    "handshake": "connection set-up, TLS handshakes",
    "srd": "total (SRD)",
}
GROUPS: tuple[str, ...] = ("warm", "cold")
NOISE = "within noise"


def samples(records: Iterable[Mapping[str, Any]], row: str, group: str) -> list[float]:
    """One row's values over the successful calls of a group (warm or cold)."""
    col = f"{row}_ms"
    cold = group == "cold"
    out: list[float] = []
    for r in records:
        v = r.get(col)
        if r.get("ok") and bool(r.get("cold")) == cold and isinstance(v, int | float):
            out.append(float(v))
    return out


class _Cache:
    """Bootstrap replicates by (label, row, group): the baseline's are computed once and
    serve every scenario's difference."""

    def __init__(self, resamples: int) -> None:
        self.resamples = resamples
        self._reps: dict[tuple[str, str, str], Replicates | None] = {}

    def get(self, label: str, records: Sequence[Mapping[str, Any]], row: str, group: str) -> Any:
        key = (label, row, group)
        if key not in self._reps:
            self._reps[key] = replicates(
                samples(records, row, group),
                key=f"{label}/{group}/{row}",
                resamples=self.resamples,
            )
        return self._reps[key]


def _cell(rep: Replicates | None, base: Replicates | None) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "n": 0 if rep is None else rep.n,
        "median": None if rep is None else rep.median,
        "mean": None if rep is None else rep.mean,
        "diff": None,
    }
    if rep is not None and base is not None and rep.n >= 2 and base.n >= 2:
        cell["diff"] = {k: v.to_dict() for k, v in bootstrap_diff(rep, base).items()}
    return cell


def hop_table(
    scenarios: Mapping[str, Mapping[str, Any]],
    baseline: str = BASELINE,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """For each scenario, row (hop transit, element time, LoST, handshakes, SRD) and group
    (warm, cold): n, median, mean, and the difference from the baseline's same row and group
    with 95% bootstrap intervals of the median and the mean."""
    cache = _Cache(resamples)
    base = scenarios.get(baseline)
    base_recs: list[Mapping[str, Any]] = list(base.get("call_records") or []) if base else []
    rows: list[dict[str, Any]] = []
    for name, res in scenarios.items():
        recs = list(res.get("call_records") or [])
        for group in GROUPS:
            for row in ROWS:
                rep = cache.get(name, recs, row, group)
                if rep is None:
                    continue
                ref = None
                if base is not None and name != baseline:
                    ref = cache.get(baseline, base_recs, row, group)
                rows.append({"scenario": name, "row": row, "group": group, **_cell(rep, ref)})
    return {
        "baseline": baseline if base is not None else None,
        "level": 0.95,
        "method": BOOTSTRAP_METHOD,
        "resamples": resamples,
        "seed": BOOTSTRAP_SEED,
        "rows": rows,
    }


def between_runs(records: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The warm SRD's median and mean in each repeat of the run, and their spread."""
    by: dict[int, list[float]] = {}
    for r in records:
        v = r.get("srd_ms")
        if r.get("ok") and not r.get("cold") and isinstance(v, int | float):
            by.setdefault(int(r.get("repeat") or 1), []).append(float(v))
    if not by:
        return None
    reps = sorted(by)
    p50 = [statistics.median(by[k]) for k in reps]
    mean = [math.fsum(by[k]) / len(by[k]) for k in reps]
    return {
        "repeats": reps,
        "calls": [len(by[k]) for k in reps],
        "srd_p50": p50,
        "srd_mean": mean,
        "p50_range_ms": max(p50) - min(p50),
        "p50_stdev_ms": statistics.stdev(p50) if len(p50) > 1 else 0.0,
    }


def compare(
    runs: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """Each later run against the first: every scenario they share, every row and group,
    the difference (run − first) with its bootstrap intervals."""
    cache = _Cache(resamples)
    first = runs[0].get("scenarios") or {}
    out_rows: list[dict[str, Any]] = []
    for label, run in zip(labels[1:], runs[1:], strict=True):
        other = run.get("scenarios") or {}
        for name in [n for n in first if n in other]:
            a = list(first[name].get("call_records") or [])
            b = list(other[name].get("call_records") or [])
            for group in GROUPS:
                for row in ROWS:
                    ra = cache.get(f"{labels[0]}|{name}", a, row, group)
                    rb = cache.get(f"{label}|{name}", b, row, group)
                    if ra is None or rb is None:
                        continue
                    cell = _cell(rb, ra)
                    out_rows.append(
                        {
                            "run": label,
                            "scenario": name,
                            "row": row,
                            "group": group,
                            "n": [ra.n, rb.n],
                            "median": [ra.median, rb.median],
                            "mean": [ra.mean, rb.mean],
                            "diff": cell["diff"],
                        }
                    )
    return {
        "reference": labels[0],
        "runs": list(labels),
        "method": BOOTSTRAP_METHOD,
        "rows": out_rows,
    }


def noise_word(diff: Mapping[str, Any] | None) -> str:
    """ "within noise" when the interval includes zero, else ""."""
    return NOISE if diff and diff.get("within_noise") else ""
