"""From one scenario's trace to the JSON-ready results the report and the terminal print.

Everything here is computed from the message trace (`ng911.observe.calls.Trace`,
`ng911.observe.output`), i.e. from what the transports reported, not from what elements say
about themselves: the numbers in `results.json` can be recomputed from the per-hop JSON-lines
logs written beside it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ng911.observe import output
from ng911.observe.calls import Call, Trace
from ng911.observe.hops import HOPS
from ng911.observe.stats import (
    METRICS,
    CallMeasure,
    Summary,
    aggregate,
    diff_summary,
    summarize,
)
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


@dataclass(frozen=True, slots=True)
class PlacedCall:
    """What the runner knows of a call it placed: which repeat of the run, cold or warm."""

    call_id: str
    repeat: int = 1
    cold: bool = False


# Columns of a per-call record (`calls.csv`, `results.json` "call_records"), in order.
# Times in ms; a segment is None when the call's event chain was incomplete (or it failed).
CALL_COLUMNS: tuple[str, ...] = (
    "scenario",
    "repeat",
    "call_id",
    "cold",
    "start",
    "start_unix",
    "ok",
    "status",
    "srd_ms",
    "invite_to_200_ms",
    "sdd_ms",
    *(f"{seg}_ms" for seg in SEGMENTS),
)


def pick_ladder_call(
    trace: Trace, measures: Mapping[str, Any], *, cold: bool = False
) -> Call | None:
    """The call drawn as a ladder: the warm (or, `cold=True`, cold) call with the median SRD
    (a typical one); for warm, the first call when there is no warm call."""
    calls = trace.calls()
    if not calls:
        return None
    picked = []
    for i, c in enumerate(calls):
        m = measures.get(c.key)
        if m is not None and m.ok and m.cold == cold and m.srd is not None:
            picked.append((m.srd, i))
    if not picked:
        return None if cold else calls[0]
    picked.sort()
    return calls[picked[(len(picked) - 1) // 2][1]]


def _ladder(
    trace: Trace, call: Call | None, by_key: Mapping[str, CallMeasure]
) -> dict[str, Any] | None:
    if call is None:
        return None
    lm = by_key.get(call.key)
    return {
        "call_id": call.key,
        "cold": bool(lm.cold) if lm is not None else None,
        "srd": lm.srd if lm is not None else None,
        "arrows": [a.to_json() for a in output.ladder(trace, call)],
    }


def call_record(
    scenario: str,
    trace: Trace,
    call: Call,
    m: CallMeasure,
    repeat: int = 1,
) -> dict[str, Any]:
    """One call's row: identity, when, outcome, delays and its SRD split (ms)."""
    inv = trace.initial_invite(call)
    ts = inv.ts if inv is not None else None
    b = trace.breakdown(call) if m.ok else None
    rec: dict[str, Any] = {
        "scenario": scenario,
        "repeat": repeat,
        "call_id": m.call_id,
        "cold": m.cold,
        "start": dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")
        if ts
        else None,
        "start_unix": ts,
        "ok": m.ok,
        "status": m.final_status,
        "srd_ms": m.srd,
        "invite_to_200_ms": m.invite_to_200,
        "sdd_ms": m.sdd,
    }
    for seg in SEGMENTS:
        rec[f"{seg}_ms"] = None if b is None else b.get(seg, 0.0)
    return rec


def scenario_results(
    scenario: Scenario,
    trace: Trace,
    *,
    cold_calls: int = 1,
    failures: Mapping[str, str] | None = None,
    placed: int | None = None,
    placed_calls: Mapping[str, PlacedCall] | None = None,
) -> dict[str, Any]:
    """Measure one scenario's run.

    `failures`: calls the caller itself reported as failed (Call-ID → reason), merged with
    what the trace shows. `placed`: how many calls the runner placed; calls that never
    produced an INVITE on the wire count as failed. `placed_calls`: the runner's record of
    each call (Call-ID → repeat, cold); without it the first `cold_calls` are the cold ones.
    """
    trace.finalize()
    calls = trace.calls()
    if placed_calls is not None:
        # the runner's own list: cold or warm as it placed them; a call it never got an
        # answer for (cut short by Ctrl-C) is not measured
        calls = [c for c in calls if (c.call_ids & placed_calls.keys())]
        measures = [
            trace.measure(c, cold=placed_calls[_placed_id(c, placed_calls)].cold) for c in calls
        ]
    else:
        measures = [trace.measure(c, cold=i < cold_calls) for i, c in enumerate(calls)]
    if failures:
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

    unpaired = [r for r in trace.messages if r.direction == "out" and r.partner is None]
    ladder = _ladder(trace, pick_ladder_call(trace, by_key), by_key)
    ladder_cold = _ladder(trace, pick_ladder_call(trace, by_key, cold=True), by_key)
    records = [
        call_record(
            scenario.name,
            trace,
            c,
            m,
            placed_calls[_placed_id(c, placed_calls)].repeat if placed_calls else 1,
        )
        for c, m in zip(calls, measures, strict=True)
    ]
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
        "ladder_cold": ladder_cold,
        "call_records": records,
        "messages": len(trace.messages),
        "unpaired_messages": len(unpaired),
        # which (the first few): a message one element sent that its peer never logged
        "unpaired": [
            f"{r.element} -> {r.peer or '?'} {r.transport}: {r.first_line[:80]} ({r.call_id})"
            for r in unpaired[:UNPAIRED_SHOWN]
        ],
    }


UNPAIRED_SHOWN = 5  # unpaired messages named in a scenario's results


def _placed_id(call: Call, placed: Mapping[str, PlacedCall]) -> str:
    return next(cid for cid in sorted(call.call_ids) if cid in placed)


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
