"""What the analysed trace gives out: ladder arrows, per-hop figures and the per-hop logs.

Functions of a `Trace` (`ng911.observe.calls`), as `ng911.observe.pcap` is for captures, so
the trace itself stays recording (`records.py`) plus call analysis (`calls.py`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from ng911.observe.calls import Call, Trace
from ng911.observe.eventlog import event_line
from ng911.observe.hops import HOPS
from ng911.observe.records import SECURE_TRANSPORTS
from ng911.observe.stats import Summary, summarize


@dataclass(slots=True)
class Arrow:
    """One message on a ladder diagram (times in ms from the call's first INVITE)."""

    src: str  # column (role)
    dst: str
    label: str
    t_send: float
    t_recv: float | None
    hop: str | None
    transport: str
    encrypted: bool
    sip_bytes: int
    wire_bytes: int
    kind: str = "message"  # "message", "lost", or "handshake" (a TLS handshake: t_send..t_recv)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ladder(trace: Trace, call: Call, *, include_retransmissions: bool = True) -> list[Arrow]:
    """The arrows of one call's ladder diagram, LoST queries included, in send order."""
    inv = trace.initial_invite(call)
    t0 = inv.mono if inv is not None else (call.records[0].mono if call.records else 0.0)
    arrows: list[Arrow] = []
    for r in call.records:
        if r.direction != "out" or (r.retransmission and not include_retransmissions):
            continue
        recv = trace.messages[r.partner].mono if r.partner is not None else None
        arrows.append(
            Arrow(
                src=trace.role(r.element) or r.element,
                dst=(trace.role(r.peer) or r.peer or "?"),
                label=r.label() + (" (retransmission)" if r.retransmission else ""),
                t_send=(r.mono - t0) * 1000.0,
                t_recv=(recv - t0) * 1000.0 if recv is not None else None,
                hop=r.hop,
                transport=r.transport,
                encrypted=r.encrypted,
                sip_bytes=r.sip_bytes,
                wire_bytes=r.wire_bytes,
            )
        )
    end = call.records[-1].mono if call.records else t0
    ecids = {r.emergency_call_id for r in call.records if r.emergency_call_id}
    for q in trace.lost_queries:
        qcid = getattr(q, "call_id", None)
        start = float(q.mono)
        if getattr(q, "cached", False):
            continue  # answered from the ESRP's cache: nothing crossed
        if qcid is not None and qcid not in call.call_ids and qcid.lower() not in ecids:
            continue
        if qcid is None and not (t0 <= start <= end):
            continue
        transport = str(getattr(q, "transport", "http"))
        src = trace.role(str(q.element)) or str(q.element)
        enc = transport in SECURE_TRANSPORTS
        rq, rs = int(getattr(q, "request_bytes", 0)), int(getattr(q, "response_bytes", 0))
        t_send = (start - t0) * 1000.0
        t_back = (start + float(q.duration) - t0) * 1000.0
        arrows.append(
            Arrow(
                src,
                "lost",
                "LoST findService",
                t_send,
                t_send,
                None,
                transport,
                enc,
                rq,
                rq,
                "lost",
            )
        )
        label = "LoST response" if getattr(q, "ok", True) else "LoST error"
        arrows.append(
            Arrow("lost", src, label, t_back, t_back, None, transport, enc, rs, rs, "lost")
        )
    arrows.extend(_handshake_arrows(trace, call, t0, end))
    arrows.sort(key=lambda a: a.t_send)
    return arrows


def _handshake_arrows(trace: Trace, call: Call, t0: float, end: float) -> list[Arrow]:
    """The TLS handshakes the call waited for: client handshakes that finished between the
    start of the call's set-up (its caller's connection included) and its last message, on
    an element the call crossed. A cold call's ladder shows each hop it opened."""
    inv = trace.initial_invite(call)
    start = trace.setup_start(inv) if inv is not None else t0
    elements = {r.element for r in call.records}
    out: list[Arrow] = []
    for h in trace.handshakes:
        if h.role != "client" or h.element not in elements or not start <= h.mono <= end:
            continue
        began = h.mono - h.duration
        what = "resumed" if h.resumed else "full"
        out.append(
            Arrow(
                src=trace.role(h.element) or h.element,
                dst=trace.role(h.peer) or h.peer or "?",
                label=f"TLS handshake ({what}{', failed' if not h.ok else ''}) "
                f"{h.duration * 1000.0:.2f} ms",
                t_send=(began - t0) * 1000.0,
                t_recv=(h.mono - t0) * 1000.0,
                hop=h.hop,
                transport="tls",
                encrypted=True,
                sip_bytes=0,
                wire_bytes=0,
                kind="handshake",
            )
        )
    return out


def hop_bytes(trace: Trace) -> dict[str, dict[str, float | int]]:
    """Per hop: messages, mean SIP bytes and mean wire bytes per message, totals.

    Counted on the sending side only, so each message crossing the hop counts once.
    `wire_total` adds every wire chunk of the hop when the transport reported them
    (TLS handshakes and alerts included), otherwise it is the sum of per-message wire bytes.
    """
    trace.finalize()
    acc: dict[str, dict[str, float | int]] = {}
    for m in trace.messages:
        if m.direction != "out":
            continue
        a = acc.setdefault(m.hop or "other", {"messages": 0, "sip_total": 0, "wire_msg_total": 0})
        a["messages"] += 1
        a["sip_total"] += m.sip_bytes
        a["wire_msg_total"] += m.wire_bytes
    chunks: dict[str, int] = defaultdict(int)
    for w in trace.wires:
        if w.direction == "out":
            chunks[w.hop or "other"] += len(w.data)
    for hop, a in acc.items():
        n = int(a["messages"]) or 1
        a["sip_mean"] = a["sip_total"] / n
        a["wire_mean"] = a["wire_msg_total"] / n
        a["wire_total"] = chunks.get(hop, int(a["wire_msg_total"]))
        a["overhead_pct"] = (
            (a["wire_mean"] - a["sip_mean"]) / a["sip_mean"] * 100.0 if a["sip_mean"] else 0.0
        )
    return acc


def handshake_stats(trace: Trace) -> dict[str, dict[str, Any]]:
    """Per hop: TLS handshakes seen by the client side, full vs resumed, mean times (ms)."""
    trace.finalize()
    out: dict[str, dict[str, Any]] = {}
    for hop in (*HOPS, "other"):
        hs = [h for h in trace.handshakes if (h.hop or "other") == hop and h.role == "client"]
        if not hs:
            continue
        full = [h.duration * 1000.0 for h in hs if h.ok and not h.resumed]
        resumed = [h.duration * 1000.0 for h in hs if h.ok and h.resumed]
        out[hop] = {
            "handshakes": len(hs),
            "full": len(full),
            "resumed": len(resumed),
            "failed": sum(1 for h in hs if not h.ok),
            "full_mean_ms": sum(full) / len(full) if full else None,
            "resumed_mean_ms": sum(resumed) / len(resumed) if resumed else None,
            "versions": sorted({h.version for h in hs if h.ok}),
            "ciphers": sorted({h.cipher for h in hs if h.ok}),
            "errors": sorted({h.error for h in hs if h.error}),
        }
    return out


def lost_summary(trace: Trace) -> Summary | None:
    """LoST query times (ms) as the querying element saw them (cache hits left out)."""
    return summarize(
        float(q.duration) * 1000.0
        for q in trace.lost_queries
        if q.ok and not getattr(q, "cached", False)
    )


def hop_transports(trace: Trace) -> dict[str, str]:
    """The transport each hop actually used (from the messages: the ground truth)."""
    trace.finalize()
    seen: dict[str, set[str]] = defaultdict(set)
    for m in trace.messages:
        if m.hop is not None:
            seen[m.hop].add(m.transport)
    return {h: ",".join(sorted(t)) for h, t in seen.items()}


def write_logs(trace: Trace, out_dir: Path) -> dict[str, Path]:
    """One JSON-lines file per hop (`hop1.jsonl`...; `other.jsonl`), plus `lost.jsonl`.

    Every message event is one line with its hop, both ends, clocks, sizes and text, so a
    reader can recompute any figure of the report from these files alone. `lost.jsonl` holds
    the LoST query events as event files do (`ng911.observe.eventlog`).
    """
    trace.finalize()
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    with ExitStack() as stack:
        handles: dict[str, TextIO] = {}

        def write(name: str, line: str) -> None:
            if name not in handles:
                files[name] = out_dir / f"{name}.jsonl"
                handles[name] = stack.enter_context(files[name].open("w", encoding="utf-8"))
            handles[name].write(line + "\n")

        for m in sorted(trace.messages, key=lambda r: r.mono):
            write(m.hop or "other", json.dumps(m.to_json()))
        for q in trace.lost_queries:
            line = event_line(q)
            if line is not None:
                write("lost", line)
    return files
