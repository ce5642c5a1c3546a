"""Issue 11 item 9: `--events` streams to disk, so memory stays flat and SIGTERM is quick.

Before, the recorder kept every event in memory until the element stopped (1.2 GB after a
long flood, 17 s to write at SIGTERM, past the testbed's 10 s kill). Here a psapd child with
`--events` takes a bounded flood of 20,000 OPTIONS over UDP: its event file grows while the
flood runs, its RSS grows no more than the same child's without `--events` (plus a margin far
below what keeping the events would take), and SIGTERM ends it in about a second with a
complete, readable file.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from events_stream_helpers import flood, free_udp_port, psap_config, rss_mb, start_psap

from ng911.observe.eventlog import read_events

COUNT = 20_000
STOP_WITHIN = 5.0  # seconds; ~0.1 s measured, generous for a loaded machine


async def flooded(tmp: Path, events: bool) -> dict[str, float | int | list[int]]:
    """Start a psapd (with or without --events), flood it, stop it; what was seen."""
    port = free_udp_port()
    ev = tmp / "psap.jsonl"
    proc = await start_psap(psap_config(tmp, port), ev if events else None)
    sizes: list[int] = []
    try:
        await asyncio.sleep(0.5)
        rss0 = rss_mb(proc.pid)

        async def sample() -> None:
            while True:
                await asyncio.sleep(0.5)
                sizes.append(ev.stat().st_size if ev.exists() else 0)

        sampler = asyncio.ensure_future(sample())
        try:
            answers = await flood(port, COUNT, per_burst=100, pause=0.03)
        finally:
            sampler.cancel()
        growth = rss_mb(proc.pid) - rss0
    finally:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30.0)
        stop = time.monotonic() - t0
    assert proc.returncode == 0, err.decode()[-2000:]
    return {"answers": answers, "growth": growth, "stop": stop, "sizes": sizes}


@pytest.mark.slow
async def test_events_stream_to_disk_under_a_flood(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "events").mkdir()
    plain = await flooded(tmp_path / "plain", events=False)
    rec = await flooded(tmp_path / "events", events=True)
    assert isinstance(rec["answers"], int) and rec["answers"] > COUNT // 4

    # the file grew while the flood ran (streamed, not written at stop)
    sizes = rec["sizes"]
    assert isinstance(sizes, list) and len(sizes) >= 3
    assert sizes[len(sizes) // 2] > 0 and sizes[-1] > sizes[0], sizes

    # SIGTERM: only what is pending is left to write
    assert rec["stop"] < STOP_WITHIN, f"stopped after {rec['stop']:.1f} s"
    ef = read_events(tmp_path / "events" / "psap.jsonl")
    assert ef.complete and ef.element == "psap-flood"
    assert len(ef.events) + ef.dropped >= rec["answers"]

    # memory: what keeping the events would take (their bytes alone) vs what streaming took,
    # beyond the same child's growth without --events (scaled by the answers each gave)
    kept_mb = sum(len(getattr(e, "data", b"")) for e in ef.events) / 2**20
    assert kept_mb > 20, f"the flood should make {kept_mb:.0f} MB of events"
    assert isinstance(plain["growth"], float) and isinstance(rec["growth"], float)
    assert isinstance(plain["answers"], int) and plain["answers"] > 0
    baseline = plain["growth"] * rec["answers"] / plain["answers"]
    extra = rec["growth"] - baseline
    assert extra < kept_mb / 2, (
        f"RSS grew {rec['growth']:.0f} MB with --events, {baseline:.0f} MB without; "
        f"keeping the events would add {kept_mb:.0f} MB"
    )
