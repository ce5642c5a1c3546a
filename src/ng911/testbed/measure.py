"""From one scenario's trace to the JSON-ready results the report and the terminal print.

Everything here is computed from the message trace (`ng911.observe.calls.Trace`,
`ng911.observe.output`), i.e. from what the transports reported, not from what elements say
about themselves: the numbers in `results.json` can be recomputed from the per-hop JSON-lines
logs written beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ng911.observe import output
from ng911.observe.calls import Call, Trace
from ng911.observe.hops import HOPS
from ng911.observe.stats import METRICS, Summary, aggregate, diff_summary, summarize
from ng911.testbed.scenarios import BASELINE, Scenario

# Segments of the SRD breakdown, in the order a call crosses them (stacked bar order).
SEGMENTS: tuple[str, ...] = (
    "hop1",
    "vsp",
    "hop2",
    "esrp",
    "lost",
    "hop3",
    "psap",
    "hop4",
    "calltaker",
    "handshake",
    "other",
)


def _mean_dict(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    keys = {k for r in rows for k in r}
    return {k: math.fsum(r.get(k, 0.0) for r in rows) / len(rows) for k in keys}


def pick_ladder_call(trace: Trace, measures: Mapping[str, Any]) -> Call | None:
    """The call drawn as a ladder: the warm call with the median SRD (a typical one),
    or the first call when there is no warm call."""
    calls = trace.calls()
    if not calls:
        return None
    warm = []
    for i, c in enumerate(calls):
        m = measures.get(c.key)
        if m is not None and m.ok and not m.cold and m.srd is not None:
            warm.append((m.srd, i))
    if not warm:
        return calls[0]
    warm.sort()
    return calls[warm[(len(warm) - 1) // 2][1]]


def scenario_results(
    scenario: Scenario,
    trace: Trace,
    *,
    cold_calls: int = 1,
    failures: Mapping[str, str] | None = None,
    placed: int | None = None,
) -> dict[str, Any]:
    """Measure one scenario's run.

    `failures`: calls the caller itself reported as failed (Call-ID → reason), merged with
    what the trace shows. `placed`: how many calls the runner placed; calls that never
    produced an INVITE on the wire count as failed.
    """
    trace.finalize()
    calls = trace.calls()
    measures = [trace.measure(c, cold=i < cold_calls) for i, c in enumerate(calls)]
    if failures:
        import dataclasses

        measures = [
            dataclasses.replace(m, ok=False, reason=failures[m.call_id])
            if m.call_id in failures
            else m
            for m in measures
        ]
    agg = aggregate(measures)
    missing = max(0, (placed or 0) - len(measures))
    if missing:
        agg["failed"] = int(agg["failed"]) + missing
        agg["calls"] = int(agg["calls"]) + missing
        agg["failures"] = [
            *agg["failures"],
            {"call_id": None, "status": None, "reason": f"{missing} call(s) never sent"},
        ]
    by_key = {c.key: m for c, m in zip(calls, measures, strict=True)}

    breakdowns: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    for c, m in zip(calls, measures, strict=True):
        if not m.ok:
            continue
        b = trace.breakdown(c)
        if b is not None:
            breakdowns["cold" if m.cold else "warm"].append(b)

    processing: dict[str, dict[str, Any]] = {}
    for role, kinds in trace.processing().items():
        processing[role] = {}
        for kind, vals in sorted(kinds.items()):
            s = summarize(vals)
            processing[role][kind] = s.to_dict() if s is not None else None

    ladder_call = pick_ladder_call(trace, by_key)
    ladder: dict[str, Any] | None = None
    if ladder_call is not None:
        lm = by_key.get(ladder_call.key)
        ladder = {
            "call_id": ladder_call.key,
            "cold": bool(lm.cold) if lm is not None else None,
            "srd": lm.srd if lm is not None else None,
            "arrows": [a.to_json() for a in output.ladder(trace, ladder_call)],
        }
    lost = output.lost_summary(trace)
    srd_samples = sorted(m.srd for m in measures if m.ok and m.srd is not None and not m.cold)
    answer_samples = sorted(
        m.invite_to_200 for m in measures if m.ok and m.invite_to_200 is not None and not m.cold
    )
    return {
        "name": scenario.name,
        "description": scenario.description,
        "summary": scenario.summary(),
        "transports": scenario.transports,
        "lost_transport": scenario.lost,
        "lost_mutual": scenario.lost_mutual,
        "encrypted": {h: scenario.encrypted(h) for h in HOPS},
        "observed_transports": output.hop_transports(trace),
        **agg,
        "srd_samples": srd_samples,
        "invite_to_200_samples": answer_samples,
        "breakdown": {k: _mean_dict(v) for k, v in breakdowns.items()},
        "breakdown_calls": {k: len(v) for k, v in breakdowns.items()},
        "handshakes": output.handshake_stats(trace),
        "bytes": output.hop_bytes(trace),
        "processing": processing,
        "lost": lost.to_dict() if lost is not None else None,
        "lost_queries": len(trace.lost_queries),
        "lost_cached": sum(1 for q in trace.lost_queries if getattr(q, "cached", False)),
        "ladder": ladder,
        "messages": len(trace.messages),
        "unpaired_messages": sum(
            1 for r in trace.messages if r.direction == "out" and r.partner is None
        ),
    }


def add_baseline_diffs(scenarios: dict[str, dict[str, Any]], baseline: str = BASELINE) -> None:
    """Each scenario's difference from the baseline (mean/p50/p95/p99, ms and %), in place.

    Warm calls are compared with warm calls and cold with cold; nothing when the baseline was
    not run.
    """
    base = scenarios.get(baseline)
    for name, res in scenarios.items():
        d: dict[str, Any] = {}
        if base is not None and name != baseline:
            for group in ("warm", "cold", "all"):
                g: dict[str, Any] = {}
                for metric in METRICS:
                    s, b = res[group].get(metric), base[group].get(metric)
                    if s is not None and b is not None:
                        g[metric] = diff_summary(Summary.from_dict(s), Summary.from_dict(b))
                d[group] = g
            d["baseline"] = baseline
        res["diff"] = d
