"""Typed errors of the test PKI.

A PKI error is an operator's mistake (a missing CA directory, an unknown key type) or a
peer presenting a certificate we cannot read; none maps to a SIP status by itself, the
transport layer turns a failed identity check into a refused connection and a log line.
"""

from __future__ import annotations

from ng911.errors import Ng911Error


class PkiError(Ng911Error):
    """Something about CAs, certificates or keys is wrong."""


class CertificateError(PkiError):
    """A certificate could not be read, or carries no usable identity."""
