"""Structured log lines: one JSON object per event (Kamailio-style: which element, which
peer, why), so operators can grep and machines can parse.

Fields often carry what a peer sent (a reason from the parser quoting a header, a first
line, the names in a certificate). An attacker must not be able to fill the log with
kilobytes per line or forge lines with CR/LF and terminal escapes, so every string field is
cut to `MAX_FIELD` characters (saying how many were cut) and its control characters are
escaped (`clean`), before JSON encoding.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

logger = logging.getLogger("ng911.net")

MAX_FIELD = 200  # characters of one string field in a log line


def _escape_char(c: str) -> str:
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def _unsafe(c: str) -> bool:
    o = ord(c)
    # C0 and C1 controls, DEL, the Unicode line/paragraph separators, bidi overrides
    return o < 0x20 or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029) or 0x202A <= o <= 0x202E


def clean(value: str, limit: int = MAX_FIELD) -> str:
    """`value` safe to log: at most `limit` characters of it, control characters escaped
    (`\\x0d`), and a `...[+N chars]` marker when it was cut."""
    cut = len(value) - limit if len(value) > limit else 0
    head = value[:limit] if cut else value
    if any(_unsafe(c) for c in head):
        head = "".join(_escape_char(c) if _unsafe(c) else c for c in head)
        if len(head) > limit:  # escapes lengthen it: keep the line bounded all the same
            cut += len(head) - limit
            head = head[:limit]
    return f"{head}...[+{cut} chars]" if cut else head


def clean_value(value: Any, limit: int = MAX_FIELD) -> Any:
    """`clean` for a log field of any type: strings and bytes (as text), one level into
    lists, tuples and sets; numbers, booleans and None pass."""
    if isinstance(value, str):
        return clean(value, limit)
    if isinstance(value, bytes | bytearray):
        text = clean(bytes(value[:limit]).decode("latin-1"), limit)
        return f"{text}...[+{len(value) - limit} bytes]" if len(value) > limit else text
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        out = [clean_value(v, limit) for v in items[:20]]
        if len(items) > 20:
            out.append(f"...[+{len(items) - 20} items]")
        return out
    return clean(str(value), limit)


def log_event(level: int, event: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        record = {"ts": round(time.time(), 6), "event": event}
        record.update((k, clean_value(v)) for k, v in fields.items())
        logger.log(level, json.dumps(record, default=str, sort_keys=False))


class LogBudget:
    """At most `per_second` lines of one event a second; the ones over it are counted, and
    the next line let through says how many were left out (`suppressed`). A flood of refused
    connections or failed handshakes costs the log a few lines a second, not one a packet."""

    __slots__ = ("_suppressed", "_used", "_window", "per_second")

    def __init__(self, per_second: int = 20) -> None:
        self.per_second = per_second
        self._window = -1
        self._used = 0
        self._suppressed = 0

    def take(self, now: float) -> int | None:
        """None: leave this line out. Else the count of lines left out since the last one."""
        window = int(now)
        if window != self._window:
            self._window, self._used = window, 0
        if self._used >= self.per_second:
            self._suppressed += 1
            return None
        self._used += 1
        left_out, self._suppressed = self._suppressed, 0
        return left_out


def log_limited(budget: LogBudget, level: int, event: str, **fields: Any) -> None:
    """`log_event` within `budget` (with `suppressed=N` when lines were left out)."""
    if not logger.isEnabledFor(level):
        return
    left_out = budget.take(time.monotonic())
    if left_out is None:
        return
    if left_out:
        fields["suppressed"] = left_out
    log_event(level, event, **fields)
