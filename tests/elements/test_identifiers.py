"""NENA i3 call/incident identifiers in Call-Info."""

import re

from ng911.elements.identifiers import (
    add_missing_ids,
    extract_ids,
    is_valid_id_urn,
    new_id,
    split_call_info,
)

CALLID = "urn:emergency:uid:callid:abcdef0123456789:vsp.example"
INCID = "urn:emergency:uid:incidentid:0123456789abcdef:vsp.example"


def test_new_id_fits_the_rule():
    for _ in range(20):
        assert re.fullmatch(r"[A-Za-z0-9]{10,32}", new_id())


def test_added_when_absent(make_invite):
    req = make_invite()
    ids, notes = add_missing_ids(req, "esrp.esinet.example")
    assert ids.complete
    assert is_valid_id_urn(ids.call_id, "callid")
    assert is_valid_id_urn(ids.incident_id, "incidentid")
    assert ids.call_id.endswith(":esrp.esinet.example")
    values = req.headers.get_all("Call-Info")
    assert values == [
        f"<{ids.call_id}>;purpose=emergency-CallId",
        f"<{ids.incident_id}>;purpose=emergency-IncidentId",
    ]
    assert len(notes) == 2
    # a second element finds them and adds nothing
    again, notes2 = add_missing_ids(req, "psap.example")
    assert again == ids and notes2 == []
    assert req.headers.get_all("Call-Info") == values


def test_present_never_changed_and_short_purposes_accepted(make_invite):
    other = "<http://example.com/card>;purpose=info"
    value = f"{other}, <{CALLID}>;purpose=CallId,<{INCID}>; purpose=IncidentId"
    req = make_invite(extra=(("Call-Info", value),))
    ids, notes = add_missing_ids(req, "esrp.example")
    assert (ids.call_id, ids.incident_id) == (CALLID, INCID)
    assert notes == []
    assert req.headers.get_all("Call-Info") == split_call_info(value)


def test_only_missing_incident_id_is_added(make_invite):
    req = make_invite(extra=(("Call-Info", f"<{CALLID}>;purpose=emergency-CallId"),))
    ids, notes = add_missing_ids(req, "esrp.example")
    assert ids.call_id == CALLID
    assert ids.incident_id is not None and ids.incident_id.startswith(
        "urn:emergency:uid:incidentid:"
    )
    assert len(notes) == 1


def test_malformed_present_id_is_kept_and_noted(make_invite):
    bad = "urn:emergency:uid:callid:short:x"
    req = make_invite(extra=(("Call-Info", f"<{bad}>;purpose=emergency-CallId"),))
    ids, notes = add_missing_ids(req, "esrp.example")
    assert ids.call_id == bad
    assert any("malformed" in n for n in notes)


def test_extract_ignores_garbage_entries(make_invite):
    req = make_invite(extra=(("Call-Info", 'garbage, "quoted, comma", <x>;purpose'),))
    assert extract_ids(req).call_id is None


def test_split_call_info():
    assert split_call_info('<a,b>;x="1,2", <c>') == ['<a,b>;x="1,2"', "<c>"]
    assert split_call_info("") == []
