"""The Logging Service over HTTP(S): POST verified LogEvents, retrieve them, refuse the bad."""

from __future__ import annotations

import json
import ssl
import time

import aiohttp
import pytest

from ng911.i3log.events import CallSignalingMessageLogEvent, RouteLogEvent, rfc3339
from ng911.i3log.jws import Signer, Verifier
from ng911.i3log.server import LoggingServer, serve_logging
from ng911.i3log.store import SqliteStore
from ng911.pki.testpki import TestPki

CALL = "urn:emergency:uid:callid:0123456789abcdef:esrp.esinet.example"
INCIDENT = "urn:emergency:uid:incidentid:0123456789abcdef:esrp.esinet.example"


def _msg(i: int, call: str = CALL, ts: float | None = None) -> CallSignalingMessageLogEvent:
    return CallSignalingMessageLogEvent(
        timestamp=rfc3339(ts if ts is not None else time.time()),
        element_id="esrp.esinet.example",
        agency_id="esinet.example",
        call_id=call,
        incident_id=INCIDENT,
        call_id_sip=f"sip-{call[-5:]}",
        text=f"INVITE urn:service:sos SIP/2.0\r\nCSeq: {i} INVITE\r\n\r\n",
        direction="incoming",
    )


async def _post(session, url, body, **kw):
    async with session.post(url + "LogEvents", data=body, **kw) as r:
        return r.status, await r.json(), r.headers


async def test_post_then_get_by_id_call_and_time(logger, signer):
    server, running = logger
    async with aiohttp.ClientSession() as s:
        t0 = time.time()
        posted = []
        for i in range(3):
            jws = json.dumps(signer.sign(_msg(i, ts=t0 + i)))
            status, body, headers = await _post(s, running.url, jws)
            assert status == 201, body
            assert headers["Location"] == f"/LogEvents/{body['id']}"
            assert body["logEventId"] == body["id"]
            posted.append((body["id"], jws))
        await _post(s, running.url, json.dumps(signer.sign(_msg(9, call=CALL + "x"))))

        async with s.get(running.url + f"LogEvents/{posted[1][0]}") as r:
            assert r.status == 200
            assert await r.text() == posted[1][1]  # the JWS as received, byte for byte
        async with s.get(running.url + "LogEvents", params={"callId": CALL}) as r:
            got = await r.json()
        assert got["count"] == got["totalCount"] == 3
        assert [c["logEventId"] for c in got["logEventContainers"]] == [p[0] for p in posted]
        # what comes back still verifies
        first = got["logEventContainers"][0]["logEvent"]
        assert b"CallSignalingMessageLogEvent" in server.verifier.verify(first).payload
        async with s.get(running.url + "LogEventIds", params={"incidentId": INCIDENT}) as r:
            ids = await r.json()
        assert ids["totalCount"] == 4 and len(ids["logEventIds"]) == 4
        window = {"startTime": rfc3339(t0 + 0.5), "endTime": rfc3339(t0 + 2.5)}
        async with s.get(running.url + "LogEvents", params=window) as r:
            got = await r.json()
        assert [c["logEventId"] for c in got["logEventContainers"]] == [p[0] for p in posted[1:]]
        # the brief's spelling: start/end as RFC 3339
        async with s.get(
            running.url + "LogEventIds",
            params={"start": window["startTime"], "end": window["endTime"]},
        ) as r:
            assert (await r.json())["logEventIds"] == [p[0] for p in posted[1:]]
        async with s.get(
            running.url + "LogEventIds", params={"callId": CALL, "limit": "2", "start": "2"}
        ) as r:
            page = await r.json()
        assert page["count"] == 2 and page["totalCount"] == 3
        assert page["logEventIds"] == [p[0] for p in posted[1:]]
        async with s.get(running.url + "LogEvents/nope") as r:
            assert r.status == 404 and (await r.json())["reason"] == "Not Found"
        async with s.get(running.url + "Versions") as r:
            assert (await r.json())["versions"][0]["major"] == 1
    assert server.stored == 4


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"startTime": "yesterday"}, 465),
        ({"startTime": "2026-01-02T00:00:00Z", "endTime": "2026-01-01T00:00:00Z"}, 466),
        ({"limit": "0"}, 454),
        ({"limit": "100000"}, 454),
        ({"limit": "ten"}, 454),
        ({"start": "0"}, 454),
        ({"colour": "blue"}, 454),
    ],
)
async def test_bad_retrieval_parameters_are_400_with_reason(logger, params, code):
    _server, running = logger
    async with (
        aiohttp.ClientSession() as s,
        s.get(running.url + "LogEvents", params=params) as r,
    ):
        assert r.status == 400
        body = await r.json()
    assert body["code"] == code and body["detail"]


async def test_refusals_are_400_with_i3_codes(logger, signer, pki: TestPki, tmp_path):
    server, running = logger
    good = signer.sign(_msg(1))
    tampered = dict(good, signature=good["signature"][:-4] + "AAAA")
    unknown_type = signer.sign(
        {
            "logEventType": "NoSuchLogEvent",
            "timestamp": rfc3339(time.time()),
            "elementId": "e",
            "agencyId": "a",
        }
    )
    not_json_payload = signer.sign(b"hello")
    cases = [
        (b"not a jws", 434),
        (json.dumps(tampered).encode(), 434),
        (json.dumps(unknown_type).encode(), 460),
        (json.dumps(not_json_payload).encode(), 460),
        (b"\xff\xfe", 460),
    ]
    async with aiohttp.ClientSession() as s:
        for body, code in cases:
            status, answer, _ = await _post(s, running.url, body)
            assert status == 400, answer
            assert answer["code"] == code and answer["reason"] and answer["detail"]
        async with s.post(
            running.url + "LogEvents", data=b"{}", headers={"Content-Type": "text/xml"}
        ) as r:
            assert r.status == 415
    assert server.stored == 0
    assert server.refused == {434: 2, 460: 3}


async def test_too_large_body_is_413(logger, signer):
    _server, running = logger
    big = RouteLogEvent(
        timestamp=rfc3339(time.time()),
        element_id="e",
        agency_id="a",
        recipient_uri="sip:x",
        rule_id="r",
        policy_owner="o",
        policy_type="t",
        cause="x" * 100_000,
    )
    async with aiohttp.ClientSession() as s:
        status, body, _ = await _post(s, running.url, json.dumps(signer.sign(big)))
    assert status == 413 and body["code"] == 461


async def test_mutual_tls(pki: TestPki, tmp_path):
    store = await SqliteStore(str(tmp_path / "m.sqlite")).open()
    server = LoggingServer(store, Verifier.from_files(pki.ca_files()))
    ctx = pki.server_context("lost", require_client_cert=True)  # any ESInet certificate
    running = await serve_logging(server, ssl_context=ctx)
    c = pki.cert("esrp")
    jws = json.dumps(Signer.from_files(c.chain_path, c.key_path).sign(_msg(1)))
    try:
        assert running.url.startswith("https://")
        client = pki.client_context("esrp")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as s:
            status, body, _ = await _post(s, running.url, jws)
            assert status == 201, body
        anonymous = pki.client_context(None)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=anonymous)) as s:
            with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                await _post(s, running.url, jws)
    finally:
        await running.close()
        await store.close()
