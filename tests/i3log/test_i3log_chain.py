"""A chain whose elements log to the plan's Logging Service: one call, read back over HTTP;
and a chain whose logger is down (`logger_down`) loses no call."""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

import aiohttp

from ng911.i3log.jws import Verifier
from ng911.net.events import MessageEvent
from ng911.node.build import element_ids, log_sender
from ng911.sip.parse import parse_message
from ng911.testbed.launcher import RunningChain, open_chain

MANHATTAN = (40.7580, -73.9855)


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


async def test_one_call_is_logged_signed_and_retrievable():
    chain = await open_chain(logger=True, logger_defer=False, hangup_after=0.05)
    try:
        assert chain.plan.logger is not None and chain.logger_server is not None
        url = chain.plan.logger.url
        verifier = Verifier.from_files(list(chain.plan.logger.signer_ca))
        assert log_sender(chain.caller) is None  # the caller's phone logs nowhere
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200
        await asyncio.wait_for(rec.ended.wait(), 10)
        await asyncio.sleep(0.3)  # the BYE's 200 reaches every element
        assert await chain.flush_logs(10)
        route = chain.esrp.log.find("route", call_id=rec.call_id)[0]
        emergency_call_id = route["ids"][0]
        by_call = await _get(url, callId=emergency_call_id)
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
        # the agency of a PSAP is its own domain (the plan's agency_of)
        assert {p["agencyId"] for p in payloads if p["elementId"] == psap} == {psap}
        # the VSP never learns the emergency CallId (the ESRP mints it): by SIP Call-ID
        vsp_events = await _get(url, callIdSip=rec.call_id, elementId=ids[chain.vsp.name])
        vsp_kinds = collections.Counter(
            json.loads(verifier.verify(c["logEvent"]).payload)["logEventType"]
            for c in vsp_events["logEventContainers"]
        )
        assert vsp_kinds["CallSignalingMessageLogEvent"] == _call_messages(
            chain, chain.vsp.name, rec.call_id
        )
        assert vsp_kinds["CallStartLogEvent"] == vsp_kinds["CallEndLogEvent"] == 1
    finally:
        await chain.close()
    assert not chain.errors, chain.errors


async def test_calls_complete_while_the_logger_is_down():
    """`logger_down`: every element names the planned logger, which never starts; calls
    are answered as without a logger, LogEvents are dropped and counted, memory bounded."""
    chain = await open_chain(logger=True, logger_down=True, logger_defer=False, hangup_after=0.01)
    try:
        assert chain.logger_server is None and chain.plan.logger is not None
        senders = [log_sender(el) for el in chain.elements.values()]
        live = [s for s in senders if s is not None]
        assert len(live) == len(chain.elements) - 1  # all but the caller
        for sender in live:
            sender.max_queue = 20  # so that drops show within a few calls
            sender.timeout = 0.2
        recs = [await asyncio.wait_for(chain.place_call(*MANHATTAN), 10) for _ in range(3)]
        assert [r.status for r in recs] == [200, 200, 200]  # as a chain without a logger
        for sender in live:
            assert sender.pending <= 2 * sender.max_queue  # memory bounded
            assert sender.sent == 0
        assert any(s.dropped for s in live)
        stats = chain.logger_stats()
        assert sum(s["dropped"] + s["failed"] + s["retried"] for s in stats.values()) > 0
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors
