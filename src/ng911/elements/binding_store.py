"""psapd's call-taker registrations on disk (SQLite), so that a restart loses none.

Why: a psapd that restarts with an empty registrar has no call taker to offer calls to
until each taker's registration refresh comes (up to `register_expires`, an hour by
default); it answers 480 meanwhile. The bindings (RFC 3261 §10.3) are small and change
only on REGISTER, so they are written through on each one and read back at start,
expired ones dropped. SQLite gives atomic updates (a crash mid-write leaves the old rows)
without a server; WAL with synchronous=NORMAL keeps a REGISTER's write to about a
millisecond. The source host of each binding is kept too: psapd only lets the host that
registered an AOR change its binding until it expires (see `Psapd.on_request`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ng911.elements.registrar import Binding
from ng911.errors import Ng911Error
from ng911.sip.uri import parse_uri

__all__ = ["BindingStore", "StoredBinding"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires_at REAL NOT NULL,
    source_host TEXT NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    PRIMARY KEY (aor, contact)
)
"""


@dataclass(frozen=True, slots=True)
class StoredBinding:
    binding: Binding
    source_host: str


class BindingStore:
    """One SQLite file of registrar bindings (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p
        self._db = sqlite3.connect(str(p), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    def save(self, aor: str, bindings: list[Binding], source_host: str) -> None:
        """Replace the bindings of `aor` with `bindings` (none: the AOR is gone)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM bindings WHERE aor = ?", (aor,))
            self._db.executemany(
                "INSERT INTO bindings VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (aor, str(b.contact), b.expires_at, source_host, b.call_id, b.cseq)
                    for b in bindings
                ],
            )

    def load(self, now: float) -> list[StoredBinding]:
        """The unexpired bindings (expired ones are deleted); unreadable rows are skipped."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
            rows = self._db.execute(
                "SELECT aor, contact, expires_at, source_host, call_id, cseq FROM bindings"
            ).fetchall()
        out: list[StoredBinding] = []
        for aor, contact, expires_at, host, call_id, cseq in rows:
            try:
                uri = parse_uri(str(contact))
            except Ng911Error:
                continue
            b = Binding(str(aor), uri, float(expires_at), None, str(call_id), int(cseq))
            out.append(StoredBinding(b, str(host)))
        return out

    def close(self) -> None:
        self._db.close()
