"""The element's transaction timers in one heap behind one loop timer (`TimerHeap`): they fire
in deadline order, never before their time, a cancelled or restarted one never fires, dead
entries are compacted away, and a closing element leaves no loop timer behind."""

import asyncio

from ng911.elements.scheduling import TimerHeap


async def test_timers_fire_in_order_not_early_and_cancelled_ones_never():
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, float]] = []
    t0 = loop.time()
    heap = TimerHeap(lambda owner, name: fired.append((name, loop.time() - t0)))
    heap.start(loop, 0.06, "ctx", "late")
    gone = heap.start(loop, 0.02, "ctx", "cancelled")
    heap.start(loop, 0.03, "ctx", "early")
    heap.start(loop, 0.0, "ctx", "now")
    heap.cancel(gone)
    assert len(heap) == 3
    for _ in range(100):  # bounded: at most 1 s
        if len(fired) == 3:
            break
        await asyncio.sleep(0.01)
    assert [n for n, _ in fired] == ["now", "early", "late"]
    assert fired[1][1] >= 0.03 - TimerHeap.SLACK and fired[2][1] >= 0.06 - TimerHeap.SLACK
    assert len(heap) == 0


async def test_a_timer_started_while_firing_runs_and_an_earlier_one_rearms():
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    heap: TimerHeap

    def fire(owner: object, name: str) -> None:
        fired.append(name)
        if name == "A":  # a retransmission timer restarts itself from its own callback
            heap.start(loop, 0.01, owner, "A2")

    heap = TimerHeap(fire)
    heap.start(loop, 0.5, "ctx", "B")
    heap.start(loop, 0.01, "ctx", "A")
    for _ in range(100):
        if "A2" in fired:
            break
        await asyncio.sleep(0.01)
    assert fired == ["A", "A2"]  # A2 did not wait for B's deadline
    heap.stop()
    await asyncio.sleep(0.02)
    assert fired == ["A", "A2"] and len(heap) == 0


async def test_dead_entries_are_compacted():
    loop = asyncio.get_running_loop()
    heap = TimerHeap(lambda owner, name: None)
    seqs = [heap.start(loop, 30.0, i, "F") for i in range(5000)]
    for s in seqs[:4900]:
        heap.cancel(s)
    assert len(heap) == 100
    assert len(heap._heap) <= 1024 + 2 * 100 + 1  # rebuilt, not 5,000 dead pairs
    heap.stop()
