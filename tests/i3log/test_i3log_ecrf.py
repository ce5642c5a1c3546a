"""The ECRF's own LogEvents: a LoST server started from a `[lost]` table with `logger` logs
each query it answers as a LostQuery/LostResponse pair (queryId = responseId, the LoST XML
in the adapters), signed with its certificate; a malformed query is logged as one."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

import aiohttp
import pytest

from ng911.elements.config import ConfigError
from ng911.i3log.jws import Verifier
from ng911.location.geodetic import Point
from ng911.lost.client import LostClient
from ng911.lost.events import LostServedEvent
from ng911.lost.protocol import NS_LOST
from ng911.node.logevents import MAX_ADAPTER
from ng911.node.serve import start_lost

BOUNDARIES = str(resources.files("ng911") / "data" / "nyc-boroughs.geojson")
MANHATTAN = "sip:psap-manhattan@manhattan.psap.example"
CALL_ID = "urn:emergency:uid:callid:0123456789abcdef:esrp.esinet.example"
INCIDENT_ID = "urn:emergency:uid:incidentid:0123456789abcdef:esrp.esinet.example"


def lost_table(pki, logger_url: str, **extra: Any) -> dict[str, Any]:
    c = pki.cert("lost")
    return {
        "name": "lost",
        "domain": "lost.esinet.example",
        "boundaries": BOUNDARIES,
        "uris": {"manhattan": [MANHATTAN]},
        "logger": logger_url,
        "logger_cert": str(c.chain_path),
        "logger_key": str(c.key_path),
        **extra,
    }


async def logged(url: str, n: int, **params: str) -> list[dict[str, Any]]:
    """The LogEvent containers of the Logging Service at `url`, once there are `n` (bounded
    wait: the sender posts in the background)."""
    body: dict[str, Any] = {}
    async with aiohttp.ClientSession() as s:
        for _ in range(100):
            async with s.get(url + "LogEvents", params={**params, "limit": "50"}) as r:
                assert r.status == 200, await r.text()
                body = await r.json()
            if len(body["logEventContainers"]) >= n:
                break
            await asyncio.sleep(0.1)
    return list(body["logEventContainers"])


async def test_an_ecrf_logs_the_queries_it_answers(pki, logger, verifier: Verifier):
    _server, running = logger
    lost = await start_lost(lost_table(pki, running.url))
    client = LostClient(lost.url)
    try:
        res = await client.find_service(
            Point(40.7831, -73.9712), "urn:service:sos", call_id=CALL_ID, incident_id=INCIDENT_ID
        )
        assert MANHATTAN in res.uris
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                lost.url,
                data=b"<findService xmlns='nope'>",
                headers={"Content-Type": "application/lost+xml"},
            ) as r,
        ):
            assert r.status == 200 and b"badRequest" in await r.read()
        containers = await logged(running.url, 4, elementId="lost.esinet.example")
    finally:
        await client.close()
        await lost.close()
    payloads = [json.loads(verifier.verify(c["logEvent"]).payload) for c in containers]
    assert len(payloads) == 4
    assert {p["agencyId"] for p in payloads} == {"esinet.example"}
    queries = {p["queryId"]: p for p in payloads if p["logEventType"] == "LostQueryLogEvent"}
    answers = {p["responseId"]: p for p in payloads if p["logEventType"] == "LostResponseLogEvent"}
    assert len(queries) == len(answers) == 2 and queries.keys() == answers.keys()

    good = next(q for q in queries.values() if "malformedQuery" not in q)
    assert good["direction"] == "incoming" and good["callId"] == CALL_ID
    assert good["incidentId"] == INCIDENT_ID and good["ipAddressPort"].startswith("127.0.0.1:")
    assert "<findService" in good["queryAdapter"] and NS_LOST in good["queryAdapter"]
    answer = answers[good["queryId"]]
    assert answer["direction"] == "outgoing" and answer["responseStatus"] == "ok"
    assert (
        "findServiceResponse" in answer["responseAdapter"]
        and MANHATTAN in answer["responseAdapter"]
    )

    bad = next(q for q in queries.values() if "malformedQuery" in q)
    assert bad["queryAdapter"] == "<findService xmlns='nope'>" and "callId" not in bad
    assert answers[bad["queryId"]]["responseStatus"] == "badRequest"


async def test_a_non_lost_body_and_a_large_query_are_logged_bounded(pki, logger, verifier):
    _server, running = logger
    lost = await start_lost(lost_table(pki, running.url, max_body=256 * 1024))
    try:
        big = b"<x>" + b"a" * (2 * MAX_ADAPTER) + b"</x>"
        async with aiohttp.ClientSession() as s:
            async with s.post(lost.url, data=b"hello", headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 415
            async with s.post(lost.url, data=big, headers={"Content-Type": "text/xml"}) as r:
                assert r.status == 200
        containers = await logged(running.url, 4, elementId="lost.esinet.example")
    finally:
        await lost.close()
    payloads = [json.loads(verifier.verify(c["logEvent"]).payload) for c in containers]
    answers = {p["responseId"]: p for p in payloads if p["logEventType"] == "LostResponseLogEvent"}
    queries = [p for p in payloads if p["logEventType"] == "LostQueryLogEvent"]
    plain = next(q for q in queries if q["queryAdapter"] == "hello")
    assert plain["malformedQuery"] and answers[plain["queryId"]]["responseStatus"] == "http 415"
    cut = next(q for q in queries if q["queryAdapter"].startswith("<x>"))
    assert len(cut["queryAdapter"]) < MAX_ADAPTER + 100 and "characters cut" in cut["queryAdapter"]
    assert cut["malformedQuery"]


async def test_an_observer_that_raises_costs_the_client_nothing(pki):
    from ng911.lost.embedded import EmbeddedStore
    from ng911.lost.server import ServerConfig, make_app, serve
    from ng911.lost.store import MappingConfig

    seen: list[LostServedEvent] = []

    def broken(ev: LostServedEvent) -> None:
        raise RuntimeError("observer bug")

    store = EmbeddedStore.from_geojson(
        BOUNDARIES, MappingConfig(domain="lost.esinet.example", uris={"manhattan": (MANHATTAN,)})
    )
    app = make_app(store, ServerConfig(observers=(broken, seen.append)))
    lost = await serve(app)
    client = LostClient(lost.url)
    try:
        res = await client.find_service(Point(40.7831, -73.9712), "urn:service:sos")
        assert MANHATTAN in res.uris
    finally:
        await client.close()
        await lost.close()
    assert len(seen) == 1 and seen[0].status == 200 and b"findServiceResponse" in seen[0].response


def test_a_logger_without_a_signing_key_is_a_config_error(tmp_path):
    table = {"name": "ecrf", "boundaries": BOUNDARIES, "logger": "http://127.0.0.1:9/"}
    with pytest.raises(ConfigError, match=r"\[ecrf\]: logger needs cert and key"):
        asyncio.run(start_lost(table))
