"""The one base of every error ng911 raises on purpose.

Each subsystem derives its own typed errors from `Ng911Error` (STYLE rule 4), and each such
error knows how it is answered on the wire: a SIP status code, a LoST error element, or a log
line naming the peer. Callers that must never crash (a proxy reading hostile input) catch
`Ng911Error` and answer with what the error carries.
"""

from __future__ import annotations


class Ng911Error(Exception):
    """Base class of all deliberate ng911 errors."""
