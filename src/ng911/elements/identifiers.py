"""NENA i3 emergency call and incident identifiers, carried in Call-Info.

Why: every log record, LoST query and PSAP screen of one emergency call ties together by
two identifiers that the first ESInet element mints (NENA-STA-010 §2.1.7, §2.1.8):

    Call-Info: <urn:emergency:uid:callid:ID:element-fqdn>;purpose=emergency-CallId
    Call-Info: <urn:emergency:uid:incidentid:ID:element-fqdn>;purpose=emergency-IncidentId

ID is 10–32 letters and digits, unique per element. When present they are NEVER changed
(downstream elements must see the same identifiers). Older equipment writes
`purpose=CallId` / `purpose=IncidentId`: accepted too. Call-Info is a comma-separated
header (RFC 3261 §20.9), so one header line may hold several entries.
"""

from __future__ import annotations

import re
import secrets
from typing import Final

from ng911.sip.message import Message, Request
from ng911.sip.uri import Value

__all__ = ["EmergencyIds", "add_missing_ids", "extract_ids", "new_id", "split_call_info"]

CALL_ID_PURPOSES = frozenset({"emergency-callid", "callid"})
INCIDENT_ID_PURPOSES = frozenset({"emergency-incidentid", "incidentid"})

_ENTRY = re.compile(r"^\s*<([^>]*)>\s*(.*)$", re.DOTALL)
_ID = re.compile(r"^[A-Za-z0-9]{10,32}$")


def new_id() -> str:
    """32 hex digits: random (128 bits), inside the 10–32 letters-and-digits rule."""
    return secrets.token_hex(16)


def split_call_info(value: str) -> list[str]:
    """Split a Call-Info header value at commas outside `<>` and quotes."""
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(value):
        if quoted:
            if ch == '"' and value[i - 1] != "\\":
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
    tail = value[start:].strip()
    if tail:
        out.append(tail)
    return [e for e in out if e]


def _purpose(params: str) -> str | None:
    for p in params.split(";"):
        name, _, val = p.strip().partition("=")
        if name.strip().lower() == "purpose":
            return val.strip().strip('"').lower()
    return None


class EmergencyIds(Value):
    """The call and incident identifier URNs (None when absent)."""

    __slots__ = ("call_id", "incident_id")
    _FIELDS = ("call_id", "incident_id")

    def __init__(self, call_id: str | None = None, incident_id: str | None = None) -> None:
        self.call_id: Final = call_id
        self.incident_id: Final = incident_id

    def _fields(self) -> tuple[object, ...]:
        return (self.call_id, self.incident_id)

    @property
    def complete(self) -> bool:
        return self.call_id is not None and self.incident_id is not None


def _entries(request: Message) -> list[str]:
    entries: list[str] = []
    for value in request.headers.get_all("Call-Info"):
        entries.extend(split_call_info(value))
    return entries


def extract_ids(request: Message) -> EmergencyIds:
    """The first call and incident identifier of the request (used in the LoST query; a
    response's too, for the observer, which groups every message of a call by them)."""
    call_id: str | None = None
    incident_id: str | None = None
    for entry in _entries(request):
        m = _ENTRY.match(entry)
        if m is None:
            continue
        uri, purpose = m.group(1).strip(), _purpose(m.group(2))
        if purpose in CALL_ID_PURPOSES and call_id is None:
            call_id = uri
        elif purpose in INCIDENT_ID_PURPOSES and incident_id is None:
            incident_id = uri
    return EmergencyIds(call_id, incident_id)


def is_valid_id_urn(uri: str, kind: str) -> bool:
    """`urn:emergency:uid:<kind>:<10–32 alnum>:<fqdn>` (kind "callid" or "incidentid")."""
    parts = uri.split(":", 5)
    return (
        len(parts) == 6
        and parts[0].lower() == "urn"
        and parts[1].lower() == "emergency"
        and parts[2].lower() == "uid"
        and parts[3].lower() == kind
        and bool(_ID.match(parts[4]))
        and bool(parts[5])
    )


def add_missing_ids(request: Request, fqdn: str) -> tuple[EmergencyIds, list[str]]:
    """Add the identifiers that are absent (in place); return all of them and what was added.

    Present identifiers are left untouched, even when malformed: changing them would split
    one call's records in two (the log line says so instead).
    """
    ids = extract_ids(request)
    added: list[str] = []
    found = {"callid": ids.call_id, "incidentid": ids.incident_id}
    for kind, purpose, what in (
        ("callid", "CallId", "call"),
        ("incidentid", "IncidentId", "incident"),
    ):
        value = found[kind]
        if value is None:
            value = found[kind] = f"urn:emergency:uid:{kind}:{new_id()}:{fqdn}"
            request.headers.add("Call-Info", f"<{value}>;purpose=emergency-{purpose}")
            added.append(f"added Call-Info {value}")
        elif not is_valid_id_urn(value, kind):
            added.append(f"kept malformed {what} identifier {value}")
    return EmergencyIds(found["callid"], found["incidentid"]), added
