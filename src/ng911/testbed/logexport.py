"""A run's i3 LogEvents out of the logger's store: `logevents.jsonl` and `logevents.html`.

After a scenario's chain has stopped, every LogEvent its Logging Service stored
(`ng911.i3log.store`, the plan's `logevents.sqlite`) is read back, its JWS verified again
(`ng911.i3log.jws.Verifier` against the run's CA: what an auditor reading the store would
do), and written to the scenario's directory:

    logevents.jsonl   one LogEvent a line: the indexed members, the verified payload (or the
                      verification error) and the JWS as stored
    logevents.html    static (no script): one section per call, anchored by its SIP Call-ID
                      (`call_anchor`), the NENA CallId(s) in its heading, one row per
                      LogEvent (time, element, type, what it says, verified)

The results entry (`results.json` → scenario → `logevents`) has the file names, the count of
LogEvents by type and how many verified; the report links each call it shows to its section
(`ng911.testbed.report.logevents_link`).
"""

from __future__ import annotations

import collections
import html
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ng911.i3log.errors import I3LogError
from ng911.i3log.jws import Verifier
from ng911.i3log.store import Query, SqliteStore, StoredEvent

__all__ = ["call_anchor", "export_logevents", "read_store"]

JSONL = "logevents.jsonl"
PAGE = "logevents.html"
PAGE_SIZE = 1000  # rows per store query while reading
NO_CALL = "(no call)"  # the group of LogEvents without a SIP Call-ID (state changes)


def call_anchor(call_id_sip: str) -> str:
    """The HTML id of a call's section: `call-` + the SIP Call-ID, characters outside
    [A-Za-z0-9._-] as `_` (a fragment any browser follows, no escaping needed)."""
    return "call-" + re.sub(r"[^A-Za-z0-9._-]", "_", call_id_sip)


async def read_store(path: Path) -> list[StoredEvent]:
    """Every LogEvent of a SQLite store, in (timestamp, arrival) order."""
    store = await SqliteStore(str(path)).open()
    out: list[StoredEvent] = []
    try:
        while True:
            rows, _total = await store.query(Query(limit=PAGE_SIZE, offset=len(out)))
            out.extend(rows)
            if len(rows) < PAGE_SIZE:
                return out
    finally:
        await store.close()


def _verified(ev: StoredEvent, verifier: Verifier) -> tuple[dict[str, Any] | None, str | None]:
    try:
        payload = json.loads(verifier.verify(ev.jws).payload)
    except (I3LogError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return (payload, None) if isinstance(payload, dict) else (None, "payload is not an object")


def _line(ev: StoredEvent, payload: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    try:
        jws: Any = json.loads(ev.jws)
    except ValueError:
        jws = ev.jws
    return {
        "id": ev.id,
        "logEventType": ev.log_event_type,
        "timestamp": ev.timestamp,
        "elementId": ev.element_id,
        "agencyId": ev.agency_id,
        "callId": ev.call_id,
        "incidentId": ev.incident_id,
        "callIdSip": ev.call_id_sip,
        "verified": error is None,
        "error": error,
        "payload": payload,
        "jws": jws,
    }


async def export_logevents(
    store: Path, out_dir: Path, ca_files: Sequence[str | Path], *, run_dir: Path
) -> dict[str, Any] | None:
    """Write `out_dir`/logevents.jsonl and logevents.html from `store`; the results entry
    (paths relative to `run_dir`), or None when the run had no logger store."""
    if not store.exists():
        return None
    events = await read_store(store)
    verifier = Verifier.from_files(list(ca_files))
    lines = [_line(ev, *_verified(ev, verifier)) for ev in events]
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl, page = out_dir / JSONL, out_dir / PAGE
    with jsonl.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    page.write_text(render_page(lines, title=out_dir.name), encoding="utf-8")
    by_type = collections.Counter(line["logEventType"] for line in lines)
    return {
        "jsonl": str(jsonl.relative_to(run_dir)),
        "html": str(page.relative_to(run_dir)),
        "store": _relative(store, run_dir),
        "count": len(lines),
        "verified": sum(1 for line in lines if line["verified"]),
        "by_type": dict(sorted(by_type.items())),
        # calls: SIP Call-IDs with a CallStart (the others are i3 state subscriptions)
        "calls": len({x["callIdSip"] for x in lines if x["logEventType"] == "CallStartLogEvent"}),
    }


def _relative(path: Path, base: Path) -> str:
    p, b = path.resolve(), base.resolve()
    return str(p.relative_to(b)) if p.is_relative_to(b) else str(p)


# ------------------------------------------------------------------------------ the page


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def summary(payload: Mapping[str, Any] | None) -> str:
    """One line of what a LogEvent says (its type's members that matter to a reader)."""
    if payload is None:
        return ""
    kind = payload.get("logEventType", "")
    if kind == "CallSignalingMessageLogEvent":
        first = str(payload.get("text", "")).split("\r\n", 1)[0].split("\n", 1)[0]
        return f"{payload.get('direction', '')}: {first[:120]}"
    if kind == "RouteLogEvent":
        parts = (payload.get("recipientUri"), payload.get("ruleId"), payload.get("cause"))
        return " · ".join(str(p) for p in parts if p)
    if kind == "LostQueryLogEvent":
        return f"query {payload.get('queryId', '')}: {payload.get('queryAdapter', '')}"[:160]
    if kind == "LostResponseLogEvent":
        return f"response {payload.get('responseId', '')}: {payload.get('responseStatus', '')}"
    if kind == "ServiceStateChangeLogEvent":
        return f"{payload.get('affectedServiceIdentifier', '')} → {payload.get('newState', '')}"
    return str(payload.get("direction", ""))


def _groups(lines: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, list[Mapping[str, Any]]]]:
    """(SIP Call-ID, its LogEvents) in order of each call's first LogEvent; no-call last."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for line in lines:
        groups.setdefault(line["callIdSip"] or NO_CALL, []).append(line)
    rest = groups.pop(NO_CALL, None)
    yield from groups.items()
    if rest:
        yield NO_CALL, rest


def render_page(lines: Sequence[Mapping[str, Any]], *, title: str = "") -> str:
    """logevents.html: a section per call (module docstring); no script."""
    verified = sum(1 for line in lines if line["verified"])
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>i3 LogEvents {_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>i3 LogEvents: {_e(title)}</h1>",
        f"<p class=note>{len(lines)} LogEvents, {verified} with a verified signature "
        f"(JWS, x5c chaining to the run's CA). Every one in full: <a href={JSONL}>{JSONL}</a>."
        "</p>",
    ]
    for cid, group in _groups(lines):
        nena = sorted({str(x["callId"]) for x in group if x["callId"]})
        incidents = sorted({str(x["incidentId"]) for x in group if x["incidentId"]})
        anchor = "no-call" if cid == NO_CALL else call_anchor(cid)
        parts.append(f'<h2 id="{_e(anchor)}">Call-ID <code>{_e(cid)}</code></h2>')
        ids = [f"CallId <code>{_e(n)}</code>" for n in nena]
        ids += [f"IncidentId <code>{_e(n)}</code>" for n in incidents]
        if ids:
            parts.append("<p class=note>" + " · ".join(ids) + "</p>")
        parts.append(
            "<table><tr><th>timestamp</th><th>element</th><th>LogEvent</th>"
            "<th>what</th><th>signature</th></tr>"
        )
        for x in group:
            ok = "<td class=ok>verified</td>"
            if not x["verified"]:
                ok = f"<td class=bad>{_e(x['error'])}</td>"
            parts.append(
                f"<tr><td>{_e(x['timestamp'])}</td><td>{_e(x['elementId'])}</td>"
                f"<td>{_e(str(x['logEventType']).removesuffix('LogEvent'))}</td>"
                f"<td class=w>{_e(summary(x['payload']))}</td>{ok}</tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


_CSS = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:2em;max-width:80em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #d0d7de;padding:2px 6px;text-align:left;vertical-align:top}"
    "td.w{font-family:monospace;font-size:12px}.ok{color:#1a7f37}.bad{color:#cf222e}"
    ".note{color:#57606a}h2{font-size:15px;margin-top:1.5em}:target{background:#fff8c5}"
)
