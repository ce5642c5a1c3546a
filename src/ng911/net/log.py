"""Structured log lines: one JSON object per event (Kamailio-style: which element, which
peer, why), so operators can grep and machines can parse."""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger("ng911.net")


def log_event(level: int, event: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        record = {"event": event, **fields}
        logger.log(level, json.dumps(record, default=str, sort_keys=False))
