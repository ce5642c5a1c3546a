"""Both stores (SQLite, PostgreSQL) behave alike: the same tests run against each."""

from __future__ import annotations

import asyncio
import itertools

from ng911.i3log.events import IndexedEvent
from ng911.i3log.store import Query, event_id_for, is_dsn

_N = itertools.count()


def _jws() -> str:
    """A distinct stand-in for a JWS text (the id is named by the text)."""
    return f'{{"n": {next(_N)}}}'


def _ev(kind: str, ts: float, call: str | None, incident: str | None = None) -> IndexedEvent:
    return IndexedEvent(kind, f"t{ts}", ts, "esrp.example", "example", call, incident, "sip-1")


async def test_add_get_query(store):
    ids = []
    for i in range(5):
        call = "urn:emergency:uid:callid:a:x" if i < 3 else "urn:emergency:uid:callid:b:x"
        ids.append(
            await store.add(
                _ev("CallSignalingMessageLogEvent", 1000.0 + i, call, "inc"), f'{{"n": {i}}}'
            )
        )
    assert len(set(ids)) == 5
    got = await store.get(ids[1])
    assert got is not None and got.jws == '{"n": 1}' and got.ts == 1001.0
    assert got.call_id == "urn:emergency:uid:callid:a:x" and got.call_id_sip == "sip-1"
    assert await store.get("no-such-id") is None

    rows, total = await store.query(Query(call_id="urn:emergency:uid:callid:a:x"))
    assert total == 3 and [r.id for r in rows] == ids[:3]  # in timestamp order
    rows, total = await store.query(Query(incident_id="inc", limit=2, offset=2))
    assert total == 5 and [r.id for r in rows] == ids[2:4]  # a page
    rows, total = await store.query(Query(start=1001.0, end=1003.0))
    assert total == 3 and [r.ts for r in rows] == [1001.0, 1002.0, 1003.0]
    rows, total = await store.query(Query(log_event_type="CallStartLogEvent"))
    assert (rows, total) == ([], 0)


async def test_concurrent_adds_all_land(store):
    ids = await asyncio.gather(
        *(store.add(_ev("RouteLogEvent", 2000.0 + i, "c"), _jws()) for i in range(50))
    )
    rows, total = await store.query(Query(call_id="c", limit=100))
    assert total == 50 and {r.id for r in rows} == set(ids)


async def test_hostile_filter_values_are_parameters_not_sql(store):
    await store.add(_ev("RouteLogEvent", 1.0, "c"), _jws())
    rows, total = await store.query(Query(call_id="c' OR '1'='1"))
    assert (rows, total) == ([], 0)


def test_store_target_kind():
    assert is_dsn("postgresql://u@h/db") and is_dsn("host=/tmp port=5432 dbname=x")
    assert not is_dsn("logevents.sqlite") and not is_dsn("/var/lib/ng911/log.sqlite")


async def test_concurrent_adds_are_group_committed(store):
    """Adds that arrive while a batch is being written go in together (fewer commits)."""
    ids = await asyncio.gather(
        *(store.add(_ev("RouteLogEvent", 3000.0 + i, "g"), _jws()) for i in range(200))
    )
    rows, total = await store.query(Query(call_id="g", limit=500))
    assert total == 200 and {r.id for r in rows} == set(ids)
    assert store.commits.rows == 200 and store.commits.batches < 50, (
        store.commits.batches,
        store.commits.rows,
    )


async def test_a_bad_row_in_a_batch_fails_only_its_own_add(store):
    good = [_ev("RouteLogEvent", 4000.0 + i, "b") for i in range(20)]
    bad = IndexedEvent("RouteLogEvent", "t", 1.0, None, "x", "b", None, None)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(store.add(e, _jws()) for e in good[:10]),
        store.add(bad, _jws()),  # element_id NOT NULL: the database refuses this row
        *(store.add(e, _jws()) for e in good[10:]),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and results.index(failed[0]) == 10
    _, total = await store.query(Query(call_id="b", limit=100))
    assert total == 20


async def test_a_cancelled_add_is_still_written_and_close_waits_for_it(store):
    """A POST whose client went away mid-insert: the row lands anyway, and close() waits."""
    tasks = [
        asyncio.ensure_future(store.add(_ev("RouteLogEvent", 5000.0 + i, "x"), _jws()))
        for i in range(30)
    ]
    await asyncio.sleep(0)
    tasks[5].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await store.commits.wait()
    _, total = await store.query(Query(call_id="x", limit=100))
    assert total == 30


async def test_a_repeated_jws_is_stored_once_under_the_same_id(store):
    """At-least-once delivery: a sender repeats a POST whose answer it lost. The same text
    is the same LogEvent: one row, and the repeat answered with the first one's id, also
    when both are in one group-committed batch."""
    text = '{"payload": "x", "signature": "s"}'
    first = await store.add(_ev("RouteLogEvent", 6000.0, "r"), text)
    again = await store.add(_ev("RouteLogEvent", 6000.0, "r"), text)
    together = await asyncio.gather(
        *(store.add(_ev("RouteLogEvent", 6001.0, "r"), '{"n": "batch"}') for _ in range(5)),
        store.add(_ev("RouteLogEvent", 6002.0, "r"), '{"n": "other"}'),
    )
    assert first == again == event_id_for(text)
    assert len(set(together)) == 2
    rows, total = await store.query(Query(call_id="r", limit=100))
    assert total == 3 and sorted(r.id for r in rows) == sorted({first, *together})
