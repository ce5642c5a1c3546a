"""The element side: a bounded queue, retries with backoff, never a cost to the caller."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import aiohttp

from ng911.i3log.events import CallSignalingMessageLogEvent, rfc3339
from ng911.i3log.jws import Signer
from ng911.i3log.sender import LogSender, endpoint
from ng911.i3log.server import LoggingServer, serve_logging
from ng911.i3log.store import Query, SqliteStore
from ng911.pki.testpki import ElementSpec, build_test_pki


def _ev(i: int) -> CallSignalingMessageLogEvent:
    return CallSignalingMessageLogEvent(
        timestamp=rfc3339(time.time()),
        element_id="esrp.esinet.example",
        agency_id="esinet.example",
        call_id_sip=f"call-{i // 10}",
        text=f"BYE sip:x SIP/2.0\r\nCSeq: {i} BYE\r\n\r\n",
        direction="outgoing",
    )


def refused_url() -> str:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_endpoint():
    assert endpoint("https://l.example/") == "https://l.example/LogEvents"
    assert endpoint("https://l.example/Logging/v1") == "https://l.example/Logging/v1/LogEvents"
    assert endpoint("http://l/LogEvents") == "http://l/LogEvents"


async def test_sender_delivers_everything_to_a_running_logger(logger, signer):
    server, running = logger
    sender = LogSender(running.url, signer)
    for i in range(40):
        sender.submit(_ev(i))
    await sender.close(drain=20)
    assert sender.stats()["sent"] == 40, sender.stats()
    assert (sender.failed, sender.dropped, sender.refused) == (0, 0, 0)
    assert server.stored == 40
    async with (
        aiohttp.ClientSession() as s,
        s.get(running.url + "LogEventIds", params={"callIdSip": "call-0"}) as r,
    ):
        assert (await r.json())["totalCount"] == 10


async def test_a_logger_that_is_down_costs_submit_nothing(signer):
    sender = LogSender(refused_url(), signer, max_queue=50, retries=2, backoff=0.01, timeout=0.5)
    t0 = time.perf_counter()
    for i in range(5000):
        sender.submit(_ev(i))  # never blocks, never raises
    assert time.perf_counter() - t0 < 5  # generous: only appends (no timing claim beyond "fast")
    assert sender.pending <= 2 * sender.max_queue  # memory bounded
    assert sender.dropped >= 5000 - 2 * sender.max_queue
    for _ in range(200):  # bounded wait for the first failures
        if sender.failed:
            break
        await asyncio.sleep(0.05)
    await sender.close(drain=0)
    stats = sender.stats()
    assert stats["failed"] >= 1 and stats["retried"] >= 2 and stats["sent"] == 0, stats


async def test_refused_events_are_counted_not_retried(logger, tmp_path: Path):
    _server, running = logger
    rogue = build_test_pki(
        tmp_path, cas=("rogue2",), elements=[ElementSpec("eve", "rogue2", ("e.example",))]
    )
    c = rogue.cert("eve")
    sender = LogSender(running.url, Signer.from_files(c.chain_path, c.key_path), retries=3)
    for i in range(3):
        sender.submit(_ev(i))
    await sender.close(drain=10)
    assert sender.refused == 3 and sender.retried == 0 and sender.sent == 0


async def test_mapper_errors_are_counted_and_nothing_else_breaks(logger, signer):
    _server, running = logger

    class Broken:
        def map(self, item: object) -> None:
            raise RuntimeError("bug")

        def flush(self) -> None:
            pass

    sender = LogSender(running.url, signer, mapper=Broken())
    sender.submit({"what": "route"})
    sender.submit(_ev(1))
    await sender.close(drain=10)
    assert sender.unmapped == 1 and sender.sent == 1
    json.dumps(sender.stats())


class _SlowFirstWrite(SqliteStore):
    """A logger's disk that stalls once (a loaded host): the first batch is written only
    after the sender has given up waiting for its answer."""

    stall = 0.6

    async def _write_rows(self, rows: list[list[object]]) -> None:
        if self.stall:
            stall, self.stall = self.stall, 0.0
            await asyncio.sleep(stall)
        await super()._write_rows(rows)


async def test_a_post_retried_after_a_lost_answer_is_stored_once(verifier, signer, tmp_path):
    """The sender times out (0.2 s) on a POST the logger does store (0.6 s later) and sends
    it again: at-least-once delivery must not mean a LogEvent twice in the log. (Failed
    before the ids were named by the JWS: a run's logger held 721 LogEvents for 698 sent.)"""
    store = await _SlowFirstWrite(str(tmp_path / "log.sqlite")).open()
    running = await serve_logging(LoggingServer(store, verifier))
    try:
        sender = LogSender(running.url, signer, timeout=0.2, backoff=0.8, retries=3)
        for i in range(3):
            sender.submit(_ev(i))
        await sender.close(drain=20)
        assert sender.sent == 3 and sender.retried >= 1 and sender.failed == 0, sender.stats()
        rows, total = await store.query(Query(call_id_sip="call-0", limit=10))
        assert total == 3, [r.id for r in rows]
        assert len({r.jws for r in rows}) == 3
    finally:
        await running.close()
        await store.close()
