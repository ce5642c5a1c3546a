"""`--events` recording cost: the observer call on the hot path, the writer, the stop.

What an element pays per observed event (`ng911.observe.eventlog.EventRecorder.__call__`, on
the measured path of every message), what the writer thread spends per event encoding and
writing it, how long `close` (SIGTERM) takes with the buffer full, and the RSS after a long
run of events (flat: bounded buffer). Events are 1 KB SIP messages, as in a flood.

    .venv/bin/python bench/eventlog.py [--events N]

Writes bench/results/eventlog.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from ng911.net.events import MessageEvent
from ng911.observe.eventlog import EventRecorder, event_line, read_events

DATA = b"OPTIONS sip:x SIP/2.0\r\n" + b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n" * 20


def event(i: int) -> MessageEvent:
    return MessageEvent(
        1.5, 2.5, "vsp", "in", "udp", ("127.0.0.2", 5060), ("127.0.0.3", 40000),
        len(DATA), len(DATA), DATA, f"call-{i}", "OPTIONS sip:x SIP/2.0", 7,
    )  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    args = ap.parse_args()
    n = args.events
    evs = [event(i % 1000) for i in range(1000)]
    out: dict[str, Any] = {"events": n}
    with tempfile.TemporaryDirectory() as d:
        # the hot path, paced so that the writer keeps up (no drop): 1,000-event bursts
        rec = EventRecorder(Path(d) / "paced.jsonl", interval=0.05)
        spent = 0.0
        for _ in range(n // 1000):
            t0 = time.perf_counter()
            for ev in evs:
                rec(ev)
            spent += time.perf_counter() - t0
            while rec.pending:
                time.sleep(0.001)
        out["hot_path_us"] = spent / n * 1e6
        t0 = time.perf_counter()
        rec.close(element="bench")
        out["close_empty_ms"] = (time.perf_counter() - t0) * 1e3
        out["dropped_paced"] = rec.dropped
        # the writer's own cost: encode (+ write) per event, in this thread
        t0 = time.perf_counter()
        for i in range(n // 10):
            event_line(evs[i % 1000])
        out["encode_us"] = (time.perf_counter() - t0) / (n // 10) * 1e6
        # a flood: as fast as the loop can call it; the buffer fills, drops are counted,
        # RSS stays flat, and close writes at most `max_pending` events
        rss0 = rss_mb()
        rec = EventRecorder(Path(d) / "flood.jsonl")
        t0 = time.perf_counter()
        for i in range(n * 5):
            rec(evs[i % 1000])
        out["flood_hot_path_us"] = (time.perf_counter() - t0) / (n * 5) * 1e6
        out["flood_rss_growth_mb"] = rss_mb() - rss0
        t0 = time.perf_counter()
        rec.close(element="bench")
        out["close_full_ms"] = (time.perf_counter() - t0) * 1e3
        ef = read_events(Path(d) / "flood.jsonl")
        out["flood_written"] = len(ef.events)
        out["flood_dropped"] = ef.dropped
    for k, v in out.items():
        print(f"{k:>22}  {v:.3f}" if isinstance(v, float) else f"{k:>22}  {v}")
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    (res / "eventlog.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
