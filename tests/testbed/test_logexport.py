"""A run's LogEvents exported from the logger's store: verified again, grouped by call."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ng911.i3log.events import (
    CallSignalingMessageLogEvent,
    CallStartLogEvent,
    ServiceStateChangeLogEvent,
    parse_payload,
    rfc3339,
)
from ng911.i3log.jws import Signer
from ng911.i3log.store import SqliteStore
from ng911.pki.testpki import build_test_pki
from ng911.testbed.logexport import call_anchor, export_logevents

SIP_CID = "a1b2c3@caller.vsp.example"
NENA = "urn:emergency:uid:callid:0123456789abcdef:esrp.esinet.example"


async def test_export_verifies_each_event_and_groups_them_by_call(tmp_path: Path):
    pki = build_test_pki(tmp_path / "pki")
    c = pki.cert("esrp")
    signer = Signer.from_files(c.chain_path, c.key_path)
    common = {
        "timestamp": rfc3339(time.time()),
        "element_id": "esrp.esinet.example",
        "agency_id": "esinet.example",
    }
    events = [
        CallStartLogEvent(**common, call_id=NENA, call_id_sip=SIP_CID),
        CallSignalingMessageLogEvent(
            **common, call_id=NENA, call_id_sip=SIP_CID, text="INVITE urn:service:sos SIP/2.0\r\n"
        ),
        ServiceStateChangeLogEvent(**common, new_state="Normal", affected_service_identifier="x"),
    ]
    run_dir = tmp_path / "run"
    store_path = run_dir / "plain" / "logevents.sqlite"
    store_path.parent.mkdir(parents=True)
    store = await SqliteStore(str(store_path)).open()
    for ev in events:
        jws = signer.sign(ev)
        await store.add(parse_payload(ev.to_bytes()), json.dumps(jws))
    # a stored JWS whose payload was altered afterwards: exported, marked unverified
    bad = signer.sign(events[0])
    bad["signature"] = bad["signature"][::-1]
    await store.add(parse_payload(events[0].to_bytes()), json.dumps(bad))
    await store.close()

    entry = await export_logevents(store_path, run_dir / "plain", pki.ca_files(), run_dir=run_dir)
    assert entry is not None
    assert entry["count"] == 4 and entry["verified"] == 3 and entry["calls"] == 1
    assert entry["by_type"] == {
        "CallSignalingMessageLogEvent": 1,
        "CallStartLogEvent": 2,
        "ServiceStateChangeLogEvent": 1,
    }
    assert entry["jsonl"] == "plain/logevents.jsonl" and entry["html"] == "plain/logevents.html"
    lines = [json.loads(x) for x in (run_dir / entry["jsonl"]).read_text().splitlines()]
    assert [x["verified"] for x in lines].count(False) == 1
    good = next(x for x in lines if x["logEventType"] == "CallSignalingMessageLogEvent")
    assert good["payload"]["text"].startswith("INVITE") and set(good["jws"]) == {
        "protected",
        "payload",
        "signature",
    }
    page = (run_dir / entry["html"]).read_text()
    assert f'id="{call_anchor(SIP_CID)}"' in page and NENA in page
    assert "INVITE urn:service:sos SIP/2.0" in page and "does not verify" in page
    assert 'id="no-call"' in page  # the state change: no SIP Call-ID
    assert "<script" not in page


async def test_no_store_no_entry(tmp_path: Path):
    assert await export_logevents(tmp_path / "none.sqlite", tmp_path, [], run_dir=tmp_path) is None
