"""Both stores (SQLite, PostgreSQL) behave alike: the same tests run against each."""

from __future__ import annotations

import asyncio

from ng911.i3log.events import IndexedEvent
from ng911.i3log.store import Query, is_dsn


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
        *(store.add(_ev("RouteLogEvent", 2000.0 + i, "c"), "{}") for i in range(50))
    )
    rows, total = await store.query(Query(call_id="c", limit=100))
    assert total == 50 and {r.id for r in rows} == set(ids)


async def test_hostile_filter_values_are_parameters_not_sql(store):
    await store.add(_ev("RouteLogEvent", 1.0, "c"), "{}")
    rows, total = await store.query(Query(call_id="c' OR '1'='1"))
    assert (rows, total) == ([], 0)


def test_store_target_kind():
    assert is_dsn("postgresql://u@h/db") and is_dsn("host=/tmp port=5432 dbname=x")
    assert not is_dsn("logevents.sqlite") and not is_dsn("/var/lib/ng911/log.sqlite")
