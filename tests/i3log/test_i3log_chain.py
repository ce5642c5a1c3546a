"""A chain whose elements log to a running Logging Service: one call, read back over HTTP."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
from typing import Any

import aiohttp

from ng911.i3log.jws import Verifier
from ng911.i3log.server import LoggingServer, serve_logging
from ng911.i3log.store import SqliteStore
from ng911.net.events import MessageEvent
from ng911.node.build import close_element, element_ids, log_sender
from ng911.sip.parse import parse_message
from ng911.testbed.launcher import RunningChain, open_chain

MANHATTAN = (40.7580, -73.9855)
LOGGED = ("vsp", "esrp", "psap")


def _ca_files(chain: RunningChain) -> list[str]:
    return sorted({ca for cfg in chain.plan.configs.values() for ca in cfg.tls.ca})


async def _close(chain: RunningChain) -> None:
    """Close every element with its LogSender (node.build.close_element), then the rest."""
    for el in list(chain.elements.values()):
        if log_sender(el) is not None:
            await close_element(el, drain=10)
    await chain.close()


def _call_messages(chain: RunningChain, element: str, sip_call_id: str) -> int:
    """SIP messages of the call `element` saw (in and out), OPTIONS/REGISTER aside."""
    n = 0
    for ev in chain.events:
        if isinstance(ev, MessageEvent) and ev.element == element and ev.call_id == sip_call_id:
            method = parse_message(bytes(ev.data)).cseq.method
            n += method not in ("OPTIONS", "REGISTER")
    return n


async def _get(url: str, **params: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(url + "LogEvents", params={**params, "limit": "1000"}) as r,
    ):
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def test_one_call_is_logged_signed_and_retrievable(tmp_path: Path):
    store = await SqliteStore(str(tmp_path / "log.sqlite")).open()
    server = LoggingServer(store, verifier=None)  # type: ignore[arg-type]  # set below
    running = await serve_logging(server)
    settings = {role: {"logger": running.url} for role in LOGGED}
    chain = await open_chain(settings=settings, hangup_after=0.05)
    try:
        verifier = Verifier.from_files(_ca_files(chain))
        server.verifier = verifier  # the chain's PKI exists once it has started
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200
        await asyncio.wait_for(rec.ended.wait(), 10)
        await asyncio.sleep(0.3)  # the BYE's 200 reaches every element
        route = chain.esrp.log.find("route", call_id=rec.call_id)[0]
        emergency_call_id = route["ids"][0]
    finally:
        await _close(chain)
    try:
        by_call = await _get(running.url, callId=emergency_call_id)
        events = [c["logEvent"] for c in by_call["logEventContainers"]]
        payloads = [json.loads(verifier.verify(e).payload) for e in events]  # all verify
        kinds: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for p in payloads:
            assert p["callId"] == emergency_call_id
            kinds[p["elementId"]][p["logEventType"]] += 1
        ids = {name: element_ids(chain.plan.configs[name])[0] for name in chain.elements}
        esrp, psap = (
            ids[chain.esrp.name],
            ids[next(n for n in chain.psaps if chain.psap_of(rec) == n)],
        )
        assert kinds[esrp]["CallStartLogEvent"] == 1
        assert kinds[esrp]["CallEndLogEvent"] == 1
        assert kinds[esrp]["RouteLogEvent"] == 1
        assert kinds[esrp]["LostQueryLogEvent"] == kinds[esrp]["LostResponseLogEvent"] == 1
        assert kinds[psap]["CallStartLogEvent"] == 1 and kinds[psap]["CallEndLogEvent"] == 1
        query = next(p for p in payloads if p["logEventType"] == "LostQueryLogEvent")
        answer = next(p for p in payloads if p["logEventType"] == "LostResponseLogEvent")
        assert query["queryId"] == answer["responseId"] and answer["responseStatus"] == "ok"
        # every SIP message of the call each element saw is one CallSignalingMessage
        for name in (chain.esrp.name, chain.psap_of(rec)):
            assert name is not None
            sent = kinds[ids[name]]["CallSignalingMessageLogEvent"]
            assert sent == _call_messages(chain, name, rec.call_id) > 0, name
        # the VSP never learns the emergency CallId (the ESRP mints it): by SIP Call-ID
        vsp_events = await _get(running.url, callIdSip=rec.call_id, elementId=ids[chain.vsp.name])
        vsp_kinds = collections.Counter(
            json.loads(verifier.verify(c["logEvent"]).payload)["logEventType"]
            for c in vsp_events["logEventContainers"]
        )
        assert vsp_kinds["CallSignalingMessageLogEvent"] == _call_messages(
            chain, chain.vsp.name, rec.call_id
        )
        assert vsp_kinds["CallStartLogEvent"] == vsp_kinds["CallEndLogEvent"] == 1
    finally:
        await running.close()
        await store.close()


async def test_calls_complete_while_the_logger_refuses_connections():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    chain = await open_chain(settings={r: {"logger": dead} for r in LOGGED}, hangup_after=0.01)
    try:
        senders = [log_sender(el) for el in chain.elements.values()]
        live = [s for s in senders if s is not None]
        assert len(live) >= 3
        for sender in live:
            sender.max_queue = 20  # so that drops show within a few calls
            sender.timeout = 0.2
        recs = [await asyncio.wait_for(chain.place_call(*MANHATTAN), 10) for _ in range(3)]
        assert [r.status for r in recs] == [
            200,
            200,
            200,
        ]  # the outcome a chain without a logger has
        for sender in live:
            assert sender.pending <= 2 * sender.max_queue  # memory bounded
            assert sender.sent == 0
        assert any(s.dropped for s in live)
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await _close(chain)
    assert not errors, errors
