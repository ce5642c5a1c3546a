"""A PSAP's call-taker events in a chain that logs to a running Logging Service: the call
taker registering (AgentStateChange Available) and answering (CallStateChange callAnswered
under the call's emergency CallId), signed by psapd, read back over HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from ng911.i3log.jws import Verifier
from ng911.i3log.server import LoggingServer, serve_logging
from ng911.i3log.store import SqliteStore
from ng911.node.build import close_element, element_ids, log_sender
from ng911.testbed.launcher import open_chain, wait_registered

MANHATTAN = (40.7580, -73.9855)


async def _payloads(url: str, verifier: Verifier, **params: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(url + "LogEvents", params={**params, "limit": "50"}) as r,
    ):
        assert r.status == 200, await r.text()
        body = await r.json()
    return [json.loads(verifier.verify(c["logEvent"]).payload) for c in body["logEventContainers"]]


async def test_a_psap_logs_its_call_takers_and_their_answers(tmp_path: Path):
    store = await SqliteStore(str(tmp_path / "log.sqlite")).open()
    server = LoggingServer(store, verifier=None)  # type: ignore[arg-type]  # set below
    running = await serve_logging(server)
    chain = await open_chain(settings={"psap": {"logger": running.url}}, hangup_after=0.05)
    try:
        cas = sorted({ca for cfg in chain.plan.configs.values() for ca in cfg.tls.ca})
        verifier = server.verifier = Verifier.from_files(cas)
        await wait_registered(chain)
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200 and chain.psap_of(rec) == "psap-manhattan"
        await asyncio.wait_for(rec.ended.wait(), 10)
        emergency_call_id = chain.esrp.log.find("route", call_id=rec.call_id)[0]["ids"][0]
        psap_id = element_ids(chain.plan.configs["psap-manhattan"])[0]
        taker = chain.psaps["psap-manhattan"].log.find("call_answered")[0]["taker"]
    finally:
        for el in list(chain.elements.values()):
            if log_sender(el) is not None:
                await close_element(el, drain=10)
        await chain.close()
    try:
        answered = await _payloads(
            running.url, verifier, callId=emergency_call_id, logEventType="CallStateChangeLogEvent"
        )
        assert len(answered) == 1
        a = answered[0]
        assert (a["state"], a["direction"], a["elementId"]) == ("callAnswered", "incoming", psap_id)
        assert a["agencyAgentId"] == taker and a["callIdSip"] == rec.call_id
        agents = await _payloads(
            running.url, verifier, elementId=psap_id, logEventType="AgentStateChangeLogEvent"
        )
        assert [(p["primaryAgentState"], p["agencyAgentId"]) for p in agents] == [
            ("Available", taker)
        ]  # registered once; its refreshes and the closing chain change nothing logged
    finally:
        await running.close()
        await store.close()
