"""An element's event log: one JSON object per event (STYLE: Kamailio-style structured logs).

Not the testbed's recorder of observer events (`observe/eventlog.py`, another thing): this
is what an element says about itself (`element`, `call_id`, `hop`, `what`, ...).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ng911.net.log import MAX_FIELD, clean

__all__ = ["EventLog"]

log = logging.getLogger("ng911.elements")


class EventLog:
    """One JSON object per event (STYLE: Kamailio-style structured logs).

    Lines go to `stream` (a file opened by the element, or stderr when `echo` is set) and,
    when `keep` is set, to the in-memory `records` list the tests and the chain read, and to
    each of `sinks` (callables given each record dict, e.g. the i3 Logging Service's mapper,
    `ng911.node.logevents`); a sink that raises is ignored, never the element's problem.
    """

    def __init__(
        self,
        element: str,
        *,
        stream: TextIO | None = None,
        keep: int = 0,
        echo: bool = False,
    ) -> None:
        self.element = element
        self.stream = stream if stream is not None else (sys.stderr if echo else None)
        self.keep = keep
        self.records: list[dict[str, Any]] = []
        self.sinks: list[Callable[[dict[str, Any]], None]] = []

    @property
    def enabled(self) -> bool:
        """Would a record go anywhere? Hot paths test this before formatting fields."""
        return (
            self.stream is not None
            or bool(self.keep)
            or bool(self.sinks)
            or log.isEnabledFor(logging.INFO)
        )

    def notice(self, what: str, **fields: Any) -> None:
        """An event an operator must see even under `--quiet` (overload begins, sheds, ends):
        logged as any other, and when it would go nowhere visible (no stream), to stderr
        through the `ng911.elements` logger at WARNING, the level `--quiet` keeps."""
        self(what, **fields)
        if self.stream is None and not log.isEnabledFor(logging.INFO):
            log.warning(json.dumps(self._record(what, None, fields), default=str))

    def __call__(self, what: str, *, call_id: str | None = None, **fields: Any) -> None:
        if not self.enabled:
            return
        rec = self._record(what, call_id, fields)
        if self.keep:
            self.records.append(rec)
            if len(self.records) > self.keep:
                del self.records[: len(self.records) - self.keep]
        for sink in self.sinks:
            try:
                sink(rec)
            except Exception:  # a sink never breaks the element (the Logging Service's rule)
                pass
        if self.stream is None and not log.isEnabledFor(logging.INFO):
            return
        line = json.dumps(rec, default=str)
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()
        log.info(line)

    def _record(self, what: str, call_id: str | None, fields: dict[str, Any]) -> dict[str, Any]:
        rec: dict[str, Any] = {"ts": round(time.time(), 6), "element": self.element}
        if call_id is not None:
            rec["call_id"] = call_id
        rec["what"] = what
        for k, v in fields.items():
            # peer-supplied text (first lines, reasons, URIs) is bounded and escaped; the
            # common case, short printable text, costs one C-level check
            if isinstance(v, str) and (len(v) > MAX_FIELD or not v.isprintable()):
                v = clean(v)
            rec[k] = v
        return rec

    def find(self, what: str, **match: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records
            if r["what"] == what and all(r.get(k) == v for k, v in match.items())
        ]
