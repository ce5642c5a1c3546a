"""Where the `ng911.*` loggers of an element process write: the element's own log."""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["route_logs", "unroute_logs"]


class _ElementLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that drops records once the element closed its log file (its
    last connections close after it), instead of printing a logging error."""

    saved: tuple[bool, int, int] = (True, logging.NOTSET, logging.NOTSET)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self.stream, "closed", False):
            return
        super().emit(record)

    def flush(self) -> None:
        if not getattr(self.stream, "closed", False):
            super().flush()


def route_logs(stream: Any) -> logging.Handler:
    """Send every `ng911.*` logger of this process (the transport's `ng911.net` events,
    handler failures) to the element's own log: `stream` is its `log_file` when set, else
    stderr (None: --quiet, only warnings and errors, on stderr). Without this they went to
    Python's last-resort handler, i.e. stderr, whatever `log_file` said.

    The element's own events (`EventLog`) write to that stream themselves; `ng911.elements`
    is kept at WARNING so they are not written twice. Undo with `unroute_logs`.
    """
    handler = _ElementLogHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))  # the lines are JSON already
    root = logging.getLogger("ng911")
    elements = logging.getLogger("ng911.elements")
    handler.saved = (root.propagate, root.level, elements.level)
    root.addHandler(handler)
    root.propagate = False
    root.setLevel(logging.INFO if stream is not None else logging.WARNING)
    elements.setLevel(logging.WARNING)
    return handler


def unroute_logs(handler: logging.Handler) -> None:
    """Detach what `route_logs` attached (the element's log file is about to close)."""
    root = logging.getLogger("ng911")
    root.removeHandler(handler)
    if isinstance(handler, _ElementLogHandler):
        root.propagate, level, elements_level = handler.saved
        root.setLevel(level)
        logging.getLogger("ng911.elements").setLevel(elements_level)
    handler.flush()
