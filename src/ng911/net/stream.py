"""One TCP or TLS connection carrying SIP, with TLS done over memory BIOs.

Why not `loop.create_connection(ssl=...)`: asyncio's SSL transport hides the ciphertext.
Driving `ssl.SSLObject` ourselves over a plain TCP transport lets us count the bytes of TLS
records each SIP message costs on the wire (`MessageEvent.wire_bytes`), time the handshake
exactly (TCP connected -> Finished), and see session resumption.

Framing is `ng911.sip.parse.StreamParser` (RFC 3261 §18.3, Content-Length). A parse error
closes the connection after answering 400 when enough of the request was read; complete
messages received before an error or before the peer closes are all delivered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ng911.net.address import Address
from ng911.net.admission import peer_allowed
from ng911.net.errors import IdentityMismatch, TlsError, TransportError
from ng911.net.events import HandshakeEvent, WireEvent
from ng911.net.log import log_event, log_limited
from ng911.pki.errors import CertificateError
from ng911.pki.tls import describe, matches_domain, peer_identities
from ng911.sip.errors import SipParseError
from ng911.sip.message import Request, Response, make_response
from ng911.sip.parse import StreamParser

if TYPE_CHECKING:
    from ng911.net.transport import SipTransportLayer, _Listener

_ids = itertools.count(1)


def _addr(transport: asyncio.BaseTransport, which: str, kind: str) -> Address:
    info = transport.get_extra_info(which)
    host, port = (info[0], info[1]) if info else ("?", 0)
    return Address(kind, host, port)


class StreamConnection(asyncio.Protocol):
    """A SIP connection: framing, optional TLS, byte accounting, identity check."""

    def __init__(
        self,
        layer: SipTransportLayer,
        *,
        kind: str,  # "tcp" | "tls"
        role: str,  # "client" | "server"
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
        expected_identity: str | None = None,
        wildcards: bool = False,
        session_key: tuple[str, int, str | None] | None = None,
        listener: _Listener | None = None,
    ) -> None:
        self.layer = layer
        self.listener = listener  # the listener that accepted it (None: we opened it)
        self.id = next(_ids)
        self.kind = kind
        self.role = role
        self.loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.remote = Address(kind, "?", 0)
        self.local = Address(kind, "?", 0)
        self.identities: frozenset[str] = frozenset()
        # the last identity a request for it was checked against and matched (`_identity_ok`)
        self.matched_identity: str | None = None
        self.closed = False
        self.last_used = self.opened = time.monotonic()
        self.proven = False  # a complete SIP message arrived (ends the first-message timer)
        self.partial_since: float | None = None  # when the message now buffered began
        self.parser = StreamParser(max_size=layer.max_message_size)
        self.expected_identity = expected_identity
        self.wildcards = wildcards
        self.session_key = session_key
        self.aliases: set[tuple[str, str, int]] = set()  # RFC 5923 alias keys in the table
        self.messages_in = 0
        self.messages_out = 0
        # bytes written in this turn of the loop, written to the socket at its end
        # (`SipTransportLayer._release`): one write for all of them
        self._unsent: list[bytes] = []
        self._t0 = time.perf_counter()
        # TLS state
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname
        self._session = session
        self._sslobj: ssl.SSLObject | None = None
        # what reads and writes application data: `_tls_io` below
        self._app: Any = None
        self._in_bio: ssl.MemoryBIO | None = None
        self._out_bio: ssl.MemoryBIO | None = None
        self.handshake_done = kind == "tcp"
        self.resumed = False
        self.hs_bytes_in = 0
        self.hs_bytes_out = 0
        # plaintext segments not yet attributed to a message: (plain bytes, wire bytes)
        self._segments: deque[list[float]] = deque()
        self.other_wire_in = 0  # TLS records that carried no SIP (tickets, alerts, close_notify)
        self.session_saved = False
        # below the write buffer's high-water mark: a bool that every send reads (an Event's
        # is_set() is an interpreted call) and the Event that `drained()` waits on, kept in step
        self._can_write = True
        self._writable = asyncio.Event()
        self._writable.set()
        self.tls_failure: str | None = None  # e.g. the peer's alert after a TLS 1.3 handshake

    # ----------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.remote = _addr(transport, "peername", self.kind)
        self.local = _addr(transport, "sockname", self.kind)
        self._t0 = time.perf_counter()
        self.opened = time.monotonic()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if not self.layer._admit(self):
            return
        if self.kind == "tls":
            assert self._ssl_context is not None
            self._in_bio, self._out_bio = ssl.MemoryBIO(), ssl.MemoryBIO()
            try:
                self._sslobj = self._ssl_context.wrap_bio(
                    self._in_bio,
                    self._out_bio,
                    server_side=self.role == "server",
                    server_hostname=self._server_hostname,
                    session=self._session,
                )
            except (ssl.SSLError, ValueError) as exc:
                self._handshake_failed(str(exc))
                return
            self._app = _tls_io(self._sslobj)
            if self.role == "client":
                self._do_handshake()
        elif not self.ready.done():
            self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_used = now = time.monotonic()
        if self.closed:
            return
        if self._sslobj is None:
            self._feed(data, len(data))
        else:
            assert self._in_bio is not None
            self._in_bio.write(data)
            if not self.handshake_done:
                self._do_handshake()
                if not self.handshake_done or self.closed:
                    return
            self._read_app()
        # a message begun must be finished in time (the sweeper checks): a peer trickling
        # one byte at a time keeps `last_used` fresh, not this
        if self.parser.buffered:
            if self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None

    def pause_writing(self) -> None:
        # asyncio's write buffer passed its high-water mark: senders wait (back-pressure)
        self._can_write = False
        self._writable.clear()

    def resume_writing(self) -> None:
        self._can_write = True
        self._writable.set()

    @property
    def writable(self) -> bool:
        """Below the write buffer's high-water mark: a write now need not wait."""
        return self._can_write

    async def drained(self) -> None:
        """Wait until the transport's write buffer is below its low-water mark."""
        if not self._can_write:
            await self._writable.wait()

    def eof_received(self) -> bool | None:
        if self._in_bio is not None:
            self._in_bio.write_eof()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._can_write = True
        self._writable.set()  # release waiting senders; their next write fails cleanly
        was_closed = self.closed
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(
                TransportError(
                    f"connection to {self.remote} closed before it was ready"
                    + (f": {exc}" if exc else ""),
                    peer=str(self.remote),
                )
            )
            self.ready.exception()  # mark retrieved: nobody may be awaiting a server conn
        leftover = self.parser_buffered()
        if leftover:
            log_event(
                logging.INFO,
                "connection_closed_mid_message",
                element=self.layer.element,
                peer=str(self.remote),
                connection_id=self.id,
                discarded_bytes=leftover,
            )
        self.layer._connection_lost(
            self, None if was_closed else (str(exc) if exc else "peer closed")
        )

    # ----------------------------------------------------------------- TLS
    def _flush(self) -> int:
        """Send what OpenSSL wrote to the outgoing BIO; returns the ciphertext byte count."""
        assert self._out_bio is not None
        out = self._out_bio.read()
        if out and self.transport is not None and not self.transport.is_closing():
            self._send_raw(out)
        return len(out)

    def _send_raw(self, data: bytes) -> None:
        """Write to the socket at the end of this turn of the loop, with whatever else the
        turn writes on this connection (`release`): one write, and the peer woken once, for
        all of them (why: `SipTransportLayer.send_datagram`). With observers attached,
        report the bytes now (`WireEvent`)."""
        assert self.transport is not None
        if self.layer.observers:
            self.layer._emit(
                WireEvent(
                    ts=time.time(),
                    mono=time.perf_counter(),
                    element=self.layer.element,
                    transport=self.kind,
                    connection_id=self.id,
                    direction="out",
                    local=(self.local.host, self.local.port),
                    remote=(self.remote.host, self.remote.port),
                    data=bytes(data),
                )
            )
        unsent = self._unsent
        if not unsent:
            self.layer._hold_stream(self)
        unsent.append(data)

    def release(self) -> None:
        """Write what this turn of the loop held for the socket, in one write."""
        unsent = self._unsent
        if not unsent:
            return
        self._unsent = []
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def _do_handshake(self) -> None:
        assert self._sslobj is not None and self._in_bio is not None
        before = self._in_bio.pending
        try:
            try:
                self._sslobj.do_handshake()
            finally:
                self.hs_bytes_in += before - self._in_bio.pending
        except ssl.SSLWantReadError:
            self.hs_bytes_out += self._flush()
            return
        except ssl.SSLCertVerificationError as exc:
            self.hs_bytes_out += self._flush()  # the alert, so the peer learns why
            self._handshake_failed(exc.verify_message or str(exc))
            return
        except (ssl.SSLError, OSError) as exc:
            self.hs_bytes_out += self._flush()
            self._handshake_failed(getattr(exc, "reason", None) or str(exc))
            return
        self.hs_bytes_out += self._flush()
        self.handshake_done = True
        self.resumed = self._sslobj.session_reused
        self.layer.stats.handshake(self.role, self.resumed)
        try:
            der = self._sslobj.getpeercert(binary_form=True)
            self.identities = frozenset(peer_identities(der))
        except CertificateError as exc:
            self._handshake_failed(str(exc))
            return
        allowed = self.listener.limits.allowed_peers if self.listener is not None else ()
        if allowed and not peer_allowed(self.identities, allowed):
            # RFC 5922 §7.3: a valid certificate, but not of a peer this listener serves;
            # refused before any SIP is read
            have = ", ".join(sorted(self.identities)) or "no certificate"
            self.layer.stats.peers_refused += 1
            self._handshake_failed(
                f"peer not allowed: certificate names {have}; allowed: {', '.join(allowed)}"
            )
            return
        want = self.expected_identity
        if want is not None and not matches_domain(self.identities, want, wildcards=self.wildcards):
            have = ", ".join(sorted(self.identities)) or "none"
            self._handshake_failed(
                f"identity mismatch: expected {want}, certificate names {have} (RFC 5922 §7.2)",
                mismatch=True,
            )
            return
        self._emit_handshake(ok=True, error=None)
        if self.role == "client":
            self.session_saved = self.layer._remember_session(self)
        self.layer._connection_ready(self)
        if not self.ready.done():
            self.ready.set_result(None)

    def _handshake_failed(self, reason: str, *, mismatch: bool = False) -> None:
        self._emit_handshake(ok=False, error=reason)
        log_limited(
            self.layer.log_budgets["tls_refused"],
            logging.WARNING,
            "tls_refused",
            element=self.layer.element,
            listener=str(self.listener.address) if self.listener is not None else None,
            peer=str(self.remote),
            role=self.role,
            expected=self.expected_identity,
            reason=reason,
        )
        err_cls = IdentityMismatch if mismatch else TlsError
        if not self.ready.done():
            self.ready.set_exception(
                err_cls(f"TLS with {self.remote}: {reason}", peer=str(self.remote))
            )
            self.ready.exception()
        self.layer.stats.tls_refused += 1
        self.abort(reason)

    def _emit_handshake(self, *, ok: bool, error: str | None) -> None:
        if not self.layer.observers:
            return

        version, cipher = ("?", "?")
        if ok and self._sslobj is not None:
            version, cipher = describe(self._sslobj)
        self.layer._emit(
            HandshakeEvent(
                ts=time.time(),
                mono=time.perf_counter(),
                element=self.layer.element,
                local=self.local.hostport,
                remote=self.remote.hostport,
                role=self.role,
                resumed=self.resumed,
                duration=time.perf_counter() - self._t0,
                version=version,
                cipher=cipher,
                peer_identities=tuple(sorted(self.identities)),
                ok=ok,
                error=error,
                connection_id=self.id,
                bytes_out=self.hs_bytes_out,
                bytes_in=self.hs_bytes_in,
            )
        )

    def _read_app(self) -> None:
        assert self._sslobj is not None and self._in_bio is not None
        before = self._in_bio.pending
        chunks: list[bytes] = []
        eof = False
        app = self._app
        in_bio = self._in_bio
        while True:
            try:
                chunk = app.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True
                break
            except ssl.SSLError as exc:
                # e.g. an alert after a TLS 1.3 handshake: the server refused our certificate
                reason = getattr(exc, "reason", None) or str(exc)
                consumed = before - self._in_bio.pending
                if chunks:
                    self._feed(b"".join(chunks), consumed)
                self.tls_failure = reason
                log_event(
                    logging.WARNING,
                    "tls_error",
                    element=self.layer.element,
                    peer=str(self.remote),
                    role=self.role,
                    reason=reason,
                )
                self.abort(reason)
                return
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
            # Nothing left to decrypt: stop here rather than read once more for the
            # SSLWantReadError that would say so (an exception per batch, ~1 % of a TLS
            # chain). Python leaves OpenSSL's read-ahead off, so OpenSSL takes from the BIO
            # one record at a time and holds no undecrypted bytes of its own: an empty BIO
            # and no plaintext left of the last record (`pending()`) is all there is.
            if not in_bio.pending and not app.pending():
                break
        self._flush()  # key updates, or a close_notify answer
        consumed = before - self._in_bio.pending
        if chunks:
            self._feed(b"".join(chunks), consumed)
        else:
            self.other_wire_in += consumed
        # TLS 1.3: the session ticket arrives after the handshake, with the first records.
        # Reading `SSLObject.session` costs ~0.2 ms, so only until one is kept.
        if self.role == "client" and not self.session_saved:
            self.session_saved = self.layer._remember_session(self)
        if eof and not self.closed:
            self.close()

    # ----------------------------------------------------------------- framing
    def parser_buffered(self) -> int:
        return self.parser.buffered

    def _attribute(self, plain_len: float) -> int:
        """Wire bytes of the next `plain_len` plaintext bytes (proportional within a batch of
        records; exact when each message travels in its own records, the usual case)."""
        wire = 0.0
        need = plain_len
        while need > 1e-9 and self._segments:
            seg = self._segments[0]
            take = min(need, seg[0])
            part = seg[1] * take / seg[0] if seg[0] else 0.0
            wire += part
            seg[1] -= part
            seg[0] -= take
            need -= take
            if seg[0] <= 1e-9:
                self._segments.popleft()
        return round(wire)

    def _feed(self, plain: bytes, wire: int) -> None:
        observed = bool(self.layer.observers)
        if observed and plain:
            self._segments.append([float(len(plain)), float(wire)])
        data = plain
        while True:
            before = self.parser.buffered + len(data)
            try:
                messages = self.parser.feed(data)
                err: SipParseError | None = None
            except SipParseError as exc:
                messages, err = list(exc.messages), exc
            if messages:
                consumed = before - self.parser.buffered
                self._deliver_batch(messages, consumed if observed else 0)
                if self.closed:
                    return
            if err is None:
                return
            self._parse_error(err)
            if self.closed:
                return
            data = b""  # a non-fatal error: the parser carries on with what it holds

    def _deliver_batch(self, messages: list[Request | Response], consumed: int) -> None:
        if not self.layer.observers:
            for m in messages:
                self.messages_in += 1
                self.layer._received(self, m, None)
            return
        raws = [m.to_bytes() for m in messages]
        total = sum(len(r) for r in raws) or 1
        # scale re-serialised sizes to the bytes the parser actually consumed (compact
        # header forms and keep-alive CRLFs make them differ slightly)
        scale = consumed / total if consumed else 1.0
        for m, raw in zip(messages, raws, strict=True):
            self.messages_in += 1
            plain = len(raw) * scale
            wire = self._attribute(plain) if self.kind == "tls" else round(plain)
            self.layer._received(self, m, (raw, round(plain), wire))
            if self.closed:
                return

    def _parse_error(self, exc: SipParseError) -> None:
        self.layer.stats.parse_errors += 1
        log_limited(
            self.layer.log_budgets["sip_parse_error"],
            logging.WARNING,
            "sip_parse_error",
            element=self.layer.element,
            peer=str(self.remote),
            transport=self.kind,
            status=exc.status,
            reason=exc.reason,
            action="close connection" if self.parser.broken else "answer and continue",
        )
        if exc.partial is not None:
            try:
                resp = make_response(exc.partial, exc.status, _reason_phrase(exc))
                self.write(resp.to_bytes())
            except Exception as inner:  # the partial request may be too broken to answer
                log_event(logging.DEBUG, "parse_error_no_answer", reason=str(inner))
        if self.parser.broken:
            self.close()

    # ----------------------------------------------------------------- sending / closing
    def write(self, data: bytes) -> int:
        """Send one serialised message; returns its wire bytes (TLS records for TLS)."""
        if self.tls_failure is not None:
            raise TlsError(
                f"TLS with {self.remote} failed: {self.tls_failure}", peer=str(self.remote)
            )
        if self.closed or self.transport is None or self.transport.is_closing():
            raise TransportError(
                f"connection {self.id} to {self.remote} is closed", peer=str(self.remote)
            )
        self.last_used = time.monotonic()
        self.messages_out += 1
        if self._sslobj is None:
            self._send_raw(data)
            return len(data)
        try:
            self._app.write(data)
        except ssl.SSLError as exc:
            self.abort(str(exc))
            raise TransportError(f"TLS write to {self.remote} failed: {exc}") from exc
        return self._flush()

    def close(self) -> None:
        """Orderly close: TLS close_notify, then FIN."""
        if self.closed:
            return
        self.closed = True
        if self._sslobj is not None and self.handshake_done:
            try:
                self._sslobj.unwrap()
            except ssl.SSLError:
                pass
            try:
                self._flush()
            except Exception:
                pass
        self.release()  # what was written, then close_notify, then FIN
        if self.transport is not None:
            self.transport.close()

    def abort(self, reason: str) -> None:
        self.closed = True
        self._unsent = []
        if self.transport is not None:
            self.transport.abort()

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "transport": self.kind,
            "role": self.role,
            "local": str(self.local),
            "remote": str(self.remote),
            "identities": sorted(self.identities),
            "resumed": self.resumed,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
        }


def _reason_phrase(exc: SipParseError) -> str | None:
    # a reason phrase must not contain CR/LF; keep it short
    r = exc.reason.replace("\r", " ").replace("\n", " ")
    return r[:100] if r else None


Factory = Callable[[], StreamConnection]


def _tls_io(sslobj: ssl.SSLObject) -> Any:
    """What `read`, `write` and `pending` of application data are called on: the C object
    inside `ssl.SSLObject` (CPython's `_sslobj`, the same methods and arguments), not the
    Python wrapper, whose frame was ~80 calls per call of a TLS chain (~1.5 % of it); the
    wrapper itself where a Python has no such attribute."""
    inner = getattr(sslobj, "_sslobj", None)
    if inner is None or not all(hasattr(inner, m) for m in ("read", "write", "pending")):
        return sslobj
    return inner
