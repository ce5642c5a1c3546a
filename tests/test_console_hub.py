"""The hub's viewers: frames batched over a linger (one stream write for many), the linger
cut short by a half-full queue or by close, and the drop/sent totals kept when viewers go."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ng911.console.hub import Hub


def make_hub(**kw: Any) -> Hub:
    return Hub(lambda ev: {"type": "msg", "n": ev}, **kw)


async def test_frames_within_the_linger_come_in_one_batch() -> None:
    hub = make_hub(linger=0.2)
    v = hub.join()

    async def trickle() -> None:
        for i in range(5):
            hub.publish({"type": "msg", "n": i})
            await asyncio.sleep(0.01)

    task = asyncio.create_task(trickle())
    batch = await v.next_batch(5.0)
    await task
    assert len(batch) == 5 and v.batches == 1
    # without a linger the first frame goes alone
    hub.publish({"type": "msg"})
    asyncio.get_running_loop().call_later(0.05, hub.publish, {"type": "msg"})
    assert len(await v.next_batch(5.0, linger=0)) == 1


async def test_a_half_full_queue_or_close_ends_the_linger() -> None:
    hub = make_hub(linger=30.0, viewer_size=8)
    v = hub.join()
    for i in range(4):  # half of 8: no lingering at all
        hub.publish({"type": "msg", "n": i})
    batch = await asyncio.wait_for(v.next_batch(5.0), 2.0)
    assert len(batch) == 4
    hub.publish({"type": "msg"})
    asyncio.get_running_loop().call_later(0.05, lambda: [hub.publish({}) for _ in range(3)])
    assert len(await asyncio.wait_for(v.next_batch(5.0), 2.0)) == 4  # woken at 4 of 8
    hub.publish({"type": "msg"})
    asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(hub.close()))
    assert len(await asyncio.wait_for(v.next_batch(5.0), 2.0)) == 1


async def test_totals_keep_the_viewers_that_left() -> None:
    hub = make_hub(viewer_size=2, linger=0)
    a, b = hub.join(), hub.join()
    for i in range(5):
        hub.publish({"type": "msg", "n": i})
    assert await b.next_batch(1.0) and a.dropped == 3
    hub.leave(a)
    hub.leave(a)  # twice: counted once
    stats = hub.stats()
    assert stats["viewer_dropped"] == b.dropped  # a's left with it
    assert stats["viewer_dropped_total"] == 3 + b.dropped
    assert stats["viewer_sent_total"] == 2 and stats["viewer_batches_total"] == 1


async def test_a_connecting_viewer_catches_up_on_the_kept_texts() -> None:
    """Each frame is encoded once, when published: catching up re-encodes nothing, and the
    texts are the newest `last` kept frames after `since`, oldest first."""
    hub = make_hub(keep=10)
    for i in range(15):
        hub.publish({"type": "msg", "n": i})
    hub.publish({"type": "state"}, keep=False)  # a snapshot is not kept
    texts = hub.texts_since(0, 4)
    assert [json.loads(t)["id"] for t in texts] == [12, 13, 14, 15]
    assert len(hub.texts_since(0, 100)) == 10  # only what is kept
    assert hub.texts_since(14, 100) == [texts[-1]]
    found = hub.lookup(15)
    assert found is not None and found[0]["n"] == 14
