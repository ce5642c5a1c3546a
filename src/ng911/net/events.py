"""What the observer hook receives: every message in and out, every TLS handshake, every
connection opened, refused or closed. `ng911.observe` builds traces and ladders from these.

`wire_bytes` of a MessageEvent: for TLS, the bytes of the TLS records that carried the
message (measured below the TLS layer, on the ciphertext, so record headers, AEAD tags and
padding are counted); for UDP and TCP it equals `sip_bytes` (IP, UDP and TCP headers are
NOT counted on any transport).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MessageEvent:
    ts: float  # time.time()
    mono: float  # time.perf_counter(), for sub-millisecond intervals
    element: str
    direction: str  # "in" | "out"
    transport: str  # "udp" | "tcp" | "tls"
    local: tuple[str, int]
    remote: tuple[str, int]
    sip_bytes: int
    wire_bytes: int
    data: bytes
    call_id: str | None
    first_line: str
    connection_id: int | None = None


@dataclass(frozen=True, slots=True)
class HandshakeEvent:
    ts: float
    mono: float
    element: str
    local: tuple[str, int]
    remote: tuple[str, int]
    role: str  # "client" | "server"
    resumed: bool
    duration: float  # seconds, TCP connected -> handshake finished (or failed)
    version: str
    cipher: str
    peer_identities: tuple[str, ...]
    ok: bool
    error: str | None
    connection_id: int | None = None
    bytes_out: int = 0  # handshake bytes we sent
    bytes_in: int = 0  # handshake bytes we received


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    ts: float
    mono: float
    element: str
    transport: str
    local: tuple[str, int]
    remote: tuple[str, int]
    what: str  # "open" | "close" | "refused"
    reason: str | None
    connection_id: int | None = None


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One chunk of bytes written to a TCP or TLS socket, exactly as it left.

    A TLS hop's capture must hold the TLS records as they crossed the wire (handshake,
    application data, alerts: ciphertext), and only the connection sees them, since TLS runs
    over memory BIOs here. Emitted only while an observer is attached; only "out" (each
    byte is reported once, by its sender).
    """

    ts: float
    mono: float
    element: str
    transport: str  # "tcp" | "tls"
    connection_id: int
    direction: str  # "out"
    local: tuple[str, int]
    remote: tuple[str, int]
    data: bytes


NetEvent = MessageEvent | HandshakeEvent | ConnectionEvent | WireEvent
