"""SIP transactions: the four RFC 3261 §17 state machines, as readable tables.

A transaction is the request, its retransmissions and its responses (RFC 3261 §17). This module
never sends, sleeps or reads a clock (the sans-I/O rule, like h11): every method takes one event
(the TU starts the transaction, a message arrived, a timer fired, the transport failed) and
returns the list of *actions* the caller must carry out, in order:

- `Send(message)`: hand the message to the transport (the same destination as the request, or
  for a server transaction the address §18.2.2 picks);
- `StartTimer(name, delay)` / `CancelTimer(name)`: the caller owns the clock; when a started
  timer expires, it calls `on_timer(name)`. Starting a running timer restarts it;
- `Deliver(message)`: pass the message up to the transaction user (TU);
- `Timeout(cause)`: Timer B, F or H fired, or the transport failed: the TU treats it as a
  408 (timer) or 503 (transport) response (RFC 3261 §8.1.3.1, §17.1.4, §17.2.4);
- `Linger()`: the transaction entered a wait state ("completed", "confirmed", "accepted" where
  it only absorbs retransmissions) and now holds only the request's essentials
  (`Request.essentials`) and, where it may still resend it, the last response: the TU drops
  the whole request it holds for it too;
- `Terminated()`: the transaction is over; remove it from the `TransactionTable`.

Each machine is a table `(state, event) -> (next state, steps)` (the `*_TABLE` constants below),
read straight off RFC 3261 figures 5-8 as amended by RFC 6026 (the "Accepted" state, timers L and
M: a proxy must forward 2xx retransmissions, so the INVITE transactions stay alive after a 2xx).
A pair that is not in a table is absorbed: nothing happens (for instance a response retransmission
reaching a non-INVITE client transaction in "completed"). A timer that fires after it was
cancelled or its state left is ignored too, so a caller racing a cancellation is harmless.

Reliable transports (TCP, TLS, WS): retransmission timers A, E, G are never started, and the
"0 on reliable" timers D, I, J, K make the machine go straight to "terminated" (RFC 3261 §17,
table 4).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final

from ng911.sip.errors import SipError
from ng911.sip.headers import MAGIC_COOKIE
from ng911.sip.message import Headers, Request, Response, make_response
from ng911.sip.uri import Value

# --------------------------------------------------------------------------------------------
# Errors


class TransactionError(SipError):
    """The caller used the transaction layer wrongly (a bug in the TU, not hostile input).

    `status` is what a UAS answers if such a request made it this far: 500 (RFC 3261 §21.5.1)
    for a programming error, 400 for a request the layer cannot key (no usable Via).
    """

    def __init__(self, reason: str, status: int = 500) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Actions


class MessageAction(Value):
    """What `Send` and `Deliver` share: the message they carry."""

    __slots__ = ("message",)
    _FIELDS = ("message",)

    def __init__(self, message: Request | Response) -> None:
        self.message: Final = message

    def _fields(self) -> tuple[object, ...]:
        return (self.message,)


class Send(MessageAction):
    """Pass `message` to the transport layer (a request, an ACK, or a response)."""

    __slots__ = ()


class StartTimer(Value):
    """Start (or restart) timer `name` ("A".."M"); call `on_timer(name)` after `delay` seconds."""

    __slots__ = ("delay", "name")
    _FIELDS = ("name", "delay")

    def __init__(self, name: str, delay: float) -> None:
        self.name: Final = name
        self.delay: Final = delay

    def _fields(self) -> tuple[object, ...]:
        return (self.name, self.delay)


class CancelTimer(Value):
    """Stop timer `name`; if it fires anyway, `on_timer` ignores it."""

    __slots__ = ("name",)
    _FIELDS = ("name",)

    def __init__(self, name: str) -> None:
        self.name: Final = name

    def _fields(self) -> tuple[object, ...]:
        return (self.name,)


class Deliver(MessageAction):
    """Pass `message` up to the transaction user (responses for a client, requests for a server)."""

    __slots__ = ()


class Timeout(Value):
    """The transaction gave up: `cause` is "timer B", "timer F", "timer H" or "transport error".

    RFC 3261 §8.1.3.1: a UAC treats a timeout as a 408 and a transport error as a 503.
    """

    __slots__ = ("cause",)
    _FIELDS = ("cause",)

    def __init__(self, cause: str) -> None:
        self.cause: Final = cause

    def _fields(self) -> tuple[object, ...]:
        return (self.cause,)

    @property
    def status(self) -> int:
        """The status the TU should act on: 503 for a transport failure, else 408."""
        return 503 if self.cause == "transport error" else 408


class Linger(Value):
    """The transaction entered a wait state: from now on it absorbs retransmissions (and, in
    RFC 6026's "accepted", passes 2xx and ACKs on) and holds only `Request.essentials`; the
    TU may let go of the whole request too. Why: a finished INVITE transaction waits 64*T1 on
    every transport, and the whole request held that long was most of an element's memory
    per call."""

    __slots__ = ()

    def _fields(self) -> tuple[object, ...]:
        return ()


class Terminated(Value):
    """The transaction reached "terminated": drop it from the table."""

    __slots__ = ()

    def _fields(self) -> tuple[object, ...]:
        return ()


Action = Send | StartTimer | CancelTimer | Deliver | Timeout | Linger | Terminated


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 timer values, in seconds (table 4 derives every timer from these).

    `d` is Timer D on unreliable transports ("at least 32 s", §17.1.1.2).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0 or self.d < 0:
            raise ValueError(f"bad SIP timer values: {self!r}")


# --------------------------------------------------------------------------------------------
# States and the tables


class State(StrEnum):
    """Transaction states (RFC 3261 §17, RFC 6026 §7)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


CALLING, TRYING, PROCEEDING = State.CALLING, State.TRYING, State.PROCEEDING
COMPLETED, CONFIRMED, ACCEPTED = State.COMPLETED, State.CONFIRMED, State.ACCEPTED
TERMINATED = State.TERMINATED

# Events: "1xx", "2xx", "3xx-6xx" (a response arrived at a client transaction);
# "request", "ACK" (a retransmission / the ACK arrived at a server transaction);
# "send 1xx", "send 2xx", "send 3xx-6xx" (the TU hands a response to a server transaction);
# "timer X"; "transport error".
#
# Steps, executed left to right:
#   "send request"   (re)transmit the client's request
#   "send ACK"       build (once) and send the ACK for the non-2xx final response (§17.1.1.3)
#   "send"           send the TU's response and remember it as the last one
#   "resend"         retransmit the last response, if there is one
#   "deliver"        pass the event's message to the TU
#   "timeout"        tell the TU the transaction failed (Timeout action)
#   "start X"        start timer X at its initial value (skipped / zero-time, see module doc)
#   "double X"       restart retransmission timer X at twice its last value (E and G cap at T2)
#   "T2 X"           restart timer X at T2 (non-INVITE retransmits in "proceeding", §17.1.2.2)
#   "cancel X"       stop timer X
Steps = tuple[str, ...]
Table = Mapping[tuple[State, str], tuple[State, Steps]]

#: INVITE client transaction: RFC 3261 §17.1.1.2, figure 5; RFC 6026 §7.2, figure 5.
INVITE_CLIENT_TABLE: Final[Table] = {
    (CALLING, "timer A"): (CALLING, ("send request", "double A")),
    (CALLING, "timer B"): (TERMINATED, ("timeout",)),
    (CALLING, "1xx"): (PROCEEDING, ("cancel A", "cancel B", "deliver")),
    (CALLING, "2xx"): (ACCEPTED, ("cancel A", "cancel B", "deliver", "start M")),
    (CALLING, "3xx-6xx"): (COMPLETED, ("cancel A", "cancel B", "send ACK", "deliver", "start D")),
    (CALLING, "transport error"): (TERMINATED, ("timeout",)),
    (PROCEEDING, "1xx"): (PROCEEDING, ("deliver",)),
    (PROCEEDING, "2xx"): (ACCEPTED, ("deliver", "start M")),
    (PROCEEDING, "3xx-6xx"): (COMPLETED, ("send ACK", "deliver", "start D")),
    (COMPLETED, "3xx-6xx"): (COMPLETED, ("send ACK",)),
    (COMPLETED, "transport error"): (TERMINATED, ("timeout",)),
    (COMPLETED, "timer D"): (TERMINATED, ()),
    (ACCEPTED, "2xx"): (ACCEPTED, ("deliver",)),
    (ACCEPTED, "timer M"): (TERMINATED, ()),
}

#: Non-INVITE client transaction: RFC 3261 §17.1.2.2, figure 6.
NON_INVITE_CLIENT_TABLE: Final[Table] = {
    (TRYING, "timer E"): (TRYING, ("send request", "double E")),
    (TRYING, "timer F"): (TERMINATED, ("timeout",)),
    (TRYING, "1xx"): (PROCEEDING, ("deliver",)),
    (TRYING, "2xx"): (COMPLETED, ("cancel E", "cancel F", "deliver", "start K")),
    (TRYING, "3xx-6xx"): (COMPLETED, ("cancel E", "cancel F", "deliver", "start K")),
    (TRYING, "transport error"): (TERMINATED, ("timeout",)),
    (PROCEEDING, "timer E"): (PROCEEDING, ("send request", "T2 E")),
    (PROCEEDING, "timer F"): (TERMINATED, ("timeout",)),
    (PROCEEDING, "1xx"): (PROCEEDING, ("deliver",)),
    (PROCEEDING, "2xx"): (COMPLETED, ("cancel E", "cancel F", "deliver", "start K")),
    (PROCEEDING, "3xx-6xx"): (COMPLETED, ("cancel E", "cancel F", "deliver", "start K")),
    (PROCEEDING, "transport error"): (TERMINATED, ("timeout",)),
    (COMPLETED, "timer K"): (TERMINATED, ()),
}

#: INVITE server transaction: RFC 3261 §17.2.1, figure 7; RFC 6026 §7.1, figure 7.
INVITE_SERVER_TABLE: Final[Table] = {
    (PROCEEDING, "request"): (PROCEEDING, ("resend",)),
    (PROCEEDING, "send 1xx"): (PROCEEDING, ("send",)),
    (PROCEEDING, "send 2xx"): (ACCEPTED, ("send", "start L")),
    (PROCEEDING, "send 3xx-6xx"): (COMPLETED, ("send", "start G", "start H")),
    (PROCEEDING, "transport error"): (TERMINATED, ("timeout",)),
    (COMPLETED, "request"): (COMPLETED, ("resend",)),
    (COMPLETED, "timer G"): (COMPLETED, ("resend", "double G")),
    (COMPLETED, "timer H"): (TERMINATED, ("timeout",)),
    (COMPLETED, "ACK"): (CONFIRMED, ("cancel G", "cancel H", "start I")),
    (COMPLETED, "transport error"): (TERMINATED, ("timeout",)),
    (CONFIRMED, "timer I"): (TERMINATED, ()),
    # RFC 6026 §7.1: INVITE retransmissions are absorbed (no row), 2xx retransmissions from
    # the TU (a proxy forwarding them) go out, an ACK (a same-branch RFC 2543 ACK) goes up.
    (ACCEPTED, "send 2xx"): (ACCEPTED, ("send",)),
    (ACCEPTED, "ACK"): (ACCEPTED, ("deliver",)),
    (ACCEPTED, "transport error"): (ACCEPTED, ("timeout",)),
    (ACCEPTED, "timer L"): (TERMINATED, ()),
}

#: Non-INVITE server transaction: RFC 3261 §17.2.2, figure 8.
NON_INVITE_SERVER_TABLE: Final[Table] = {
    (TRYING, "send 1xx"): (PROCEEDING, ("send",)),
    (TRYING, "send 2xx"): (COMPLETED, ("send", "start J")),
    (TRYING, "send 3xx-6xx"): (COMPLETED, ("send", "start J")),
    (PROCEEDING, "request"): (PROCEEDING, ("resend",)),
    (PROCEEDING, "send 1xx"): (PROCEEDING, ("send",)),
    (PROCEEDING, "send 2xx"): (COMPLETED, ("send", "start J")),
    (PROCEEDING, "send 3xx-6xx"): (COMPLETED, ("send", "start J")),
    (PROCEEDING, "transport error"): (TERMINATED, ("timeout",)),
    (COMPLETED, "request"): (COMPLETED, ("resend",)),
    (COMPLETED, "transport error"): (TERMINATED, ("timeout",)),
    (COMPLETED, "timer J"): (TERMINATED, ()),
}

_TIMER_VERBS: Final = frozenset({"start", "double", "T2", "cancel"})
# Retransmission timers: never started on a reliable transport (§17.1.1.2, §17.1.2.2, §17.2.1).
_RETRANSMIT_TIMERS: Final = frozenset("AEG")
# Wait timers that are zero on a reliable transport: the machine terminates at once instead.
_ZERO_ON_RELIABLE: Final = frozenset("DIJK")


def response_class(status: int) -> str:
    """The event name of a status code: "1xx", "2xx" or "3xx-6xx"."""
    if status < 200:
        return "1xx"
    if status < 300:
        return "2xx"
    return "3xx-6xx"


# --------------------------------------------------------------------------------------------
# Keys


class TransactionKey(Value):
    """What identifies a transaction in the table.

    Client side (RFC 3261 §17.1.3): the branch of the top Via and the CSeq method; `sent_by` is
    None. Server side (§17.2.3): branch, sent-by of the top Via, and the method, with ACK
    folded into INVITE so that the ACK for a non-2xx response finds its INVITE transaction.
    """

    __slots__ = ("_hash", "branch", "method", "sent_by")
    _FIELDS = ("branch", "method", "sent_by")

    def __init__(self, branch: str, method: str, sent_by: str | None = None) -> None:
        self.branch: Final = branch
        self.method: Final = method
        self.sent_by: Final = sent_by
        # hashed ~5 times per message (the table, the runtime's contexts): once is enough
        self._hash: Final = hash((branch, method, sent_by))

    def _fields(self) -> tuple[object, ...]:
        return (self.branch, self.method, self.sent_by)

    # A dict key hashed and compared several times per message (table, runtime contexts):
    # written out rather than through `_fields()`, one call fewer in the pure build.
    def __eq__(self, other: object) -> bool:
        if type(other) is not TransactionKey or not isinstance(other, TransactionKey):
            return NotImplemented
        return (
            self.branch == other.branch
            and self.method == other.method
            and self.sent_by == other.sent_by
        )

    def __hash__(self) -> int:
        return self._hash

    @property
    def is_server(self) -> bool:
        return self.sent_by is not None


def _branch_or_fallback(request: Request) -> str:
    """The top Via branch, or the RFC 2543 matching tuple when it lacks the magic cookie.

    RFC 3261 §17.2.3 (last paragraphs): an RFC 2543 client is recognised by a branch that does
    not start with "z9hG4bK"; its request is matched on Request-URI, From tag, Call-ID, CSeq
    number and top Via. The To tag is left out so that the ACK (which carries the tag of the
    response) still matches; the CSeq method is in the key already.
    """
    branch = request.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return branch
    top_via = request.headers.get_all("Via")[:1]
    return "rfc2543|" + "|".join(
        (
            str(request.uri),
            request.from_addr.tag or "",
            request.call_id,
            str(request.cseq.seq),
            top_via[0] if top_via else "",
        )
    )


def _sent_by(request: Request) -> str:
    via = request.top_via
    host = via.host.lower()
    return f"{host}:{via.port}" if via.port is not None else host


def client_key(message: Request | Response) -> TransactionKey:
    """The client-side key of a request we send or of a response to it (§17.1.3)."""
    branch = message.branch
    if not branch:
        raise TransactionError("message has no Via branch: cannot match a client transaction", 400)
    return TransactionKey(branch, message.cseq.method)


def server_key(request: Request, *, method: str | None = None) -> TransactionKey:
    """The server-side key of a received request (§17.2.3); ACK keys as INVITE.

    `method` overrides the request's method (`cancel_target` asks for "INVITE").
    """
    m = method or request.method
    if m == "ACK":
        m = "INVITE"
    return TransactionKey(_branch_or_fallback(request), m, _sent_by(request))


# --------------------------------------------------------------------------------------------
# The machines


class _Machine:
    """Runs one of the tables: the shared interpreter of steps."""

    # one per transaction, thousands live at once: no per-instance __dict__
    __slots__ = (
        "_last_interval",
        "_running",
        "_started",
        "last_response",
        "reliable",
        "request",
        "state",
        "timers",
    )

    TABLE: ClassVar[Table]
    ENTRY: ClassVar[Steps]
    INITIAL: ClassVar[State]
    # the wait states: entering one sheds the request to its essentials (`Linger`)
    LINGER: ClassVar[frozenset[State]]
    # whether "resend" can still happen in a wait state (the last response is kept then)
    RESENDS_WHILE_LINGERING: ClassVar[bool] = False

    def __init__(self, request: Request, *, reliable: bool, timers: TimerConfig) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self.state: State = self.INITIAL
        self.last_response: Response | None = None
        self._running: dict[str, float] = {}  # timer name -> current interval
        self._last_interval: dict[str, float] = {}  # kept after firing, for "double"
        self._started = False

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    @property
    def terminated(self) -> bool:
        return self.state is TERMINATED

    def running_timers(self) -> Mapping[str, float]:
        """Timers this transaction believes are running, with their current interval."""
        return dict(self._running)

    # -- the interpreter -------------------------------------------------------------------

    def _start(self) -> list[Action]:
        if self._started:
            raise TransactionError(f"{type(self).__name__} already started")
        self._started = True
        return self._run(self.state, self.ENTRY, self.request, event="start")

    def _event(self, event: str, message: Request | Response | None) -> list[Action]:
        row = self.TABLE.get((self.state, event))
        if row is None:
            return []  # absorbed: see the module docstring
        next_state, steps = row
        return self._run(next_state, steps, message, event=event)

    def _run(
        self, next_state: State, steps: Steps, message: Request | Response | None, *, event: str
    ) -> list[Action]:
        out: list[Action] = []
        for step in steps:
            verb, _, timer = step.partition(" ")
            if verb in _TIMER_VERBS:
                if self._timer_step(verb, timer, out):
                    next_state = TERMINATED  # a zero-time wait timer: §17 table 4
            else:
                self._step(step, message, event, out)
        entered = next_state is not self.state
        self.state = next_state
        if entered and next_state in self.LINGER:
            self._linger(out)
        elif next_state is TERMINATED:
            out.extend(CancelTimer(name) for name in sorted(self._running))
            self._running.clear()
            out.append(Terminated())
        return out

    def _linger(self, out: list[Action]) -> None:
        self.request = self.request.essentials()
        if not self.RESENDS_WHILE_LINGERING:
            self.last_response = None
        out.append(Linger())

    def _timer_step(self, verb: str, name: str, out: list[Action]) -> bool:
        """Apply a timer step; True when it means "terminate now" (a zero wait timer)."""
        t = self.timers
        if verb == "cancel":
            if self._running.pop(name, None) is not None:
                out.append(CancelTimer(name))
            return False
        if name in _RETRANSMIT_TIMERS and self.reliable:
            return False
        if verb == "double":
            delay = 2 * self._last_interval.get(name, t.t1 / 2)
            if name != "A":  # RFC 3261 §17.1.2.2 (E), §17.2.1 (G): capped at T2; A is not
                delay = min(delay, t.t2)
        elif verb == "T2":
            delay = t.t2
        else:
            delay = self._initial_delay(name)
            if delay == 0:
                return True
        self._running[name] = self._last_interval[name] = delay
        out.append(StartTimer(name, delay))
        return False

    def _initial_delay(self, name: str) -> float:
        """RFC 3261 §17 table 4 (and RFC 6026 §8 for L and M)."""
        t = self.timers
        if name in _RETRANSMIT_TIMERS:
            return t.t1
        if name in _ZERO_ON_RELIABLE and self.reliable:
            return 0.0
        if name == "D":
            return t.d
        if name in ("I", "K"):
            return t.t4
        return 64 * t.t1  # B, F, H, J, L, M

    def _step(
        self, step: str, message: Request | Response | None, event: str, out: list[Action]
    ) -> None:
        if step == "deliver":
            if message is not None:
                out.append(Deliver(message))
        elif step == "timeout":
            out.append(Timeout(event))
        else:
            self._message_step(step, message, out)

    def _message_step(
        self, step: str, message: Request | Response | None, out: list[Action]
    ) -> None:
        raise AssertionError(f"unknown step {step!r} in {type(self).__name__}")  # pragma: no cover

    def on_timer(self, name: str) -> list[Action]:
        """Timer `name` fired. Stale or unknown timers are ignored."""
        if self._running.pop(name, None) is None:
            return []
        return self._event(f"timer {name}", None)

    def on_transport_error(self) -> list[Action]:
        """The transport could not send our last message (RFC 3261 §17.1.4, §17.2.4)."""
        return self._event("transport error", None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state.value}>"


class ClientTransaction(_Machine):
    """A client transaction (RFC 3261 §17.1): created by the TU for a request it sends.

    Use `client_transaction()` to get the INVITE or non-INVITE variant.
    """

    __slots__ = ("ack", "key")

    def __init__(self, request: Request, *, reliable: bool, timers: TimerConfig) -> None:
        if request.method == "ACK":
            raise TransactionError("ACK has no client transaction (RFC 3261 §17)")
        super().__init__(request, reliable=reliable, timers=timers)
        self.key = client_key(request)
        self.ack: Request | None = None

    def start(self) -> list[Action]:
        """Send the request and start the timers: the first actions of every transaction."""
        return self._start()

    def abandon(self) -> list[Action]:
        """The TU gives the transaction up (RFC 3261 §9.1: an INVITE that got no final
        answer 64*T1 after its CANCEL is destroyed): its timers stop and it terminates.
        Nothing is sent; a response arriving later matches nothing."""
        if self.state is TERMINATED:
            return []
        return self._run(TERMINATED, (), None, event="abandon")

    def on_response(self, response: Response) -> list[Action]:
        """A response matched this transaction (see `TransactionTable.match_response`)."""
        if response.status < 100:
            return []
        return self._event(response_class(response.status), response)

    def _message_step(
        self, step: str, message: Request | Response | None, out: list[Action]
    ) -> None:
        if step == "send request":
            out.append(Send(self.request))
        elif step == "send ACK" and isinstance(message, Response):
            if self.ack is None:
                self.ack = make_ack_for_non2xx(self.request, message)
            out.append(Send(self.ack))
        else:  # pragma: no cover - the tables only use the steps above
            super()._message_step(step, message, out)

    def _event(self, event: str, message: Request | Response | None) -> list[Action]:
        if (
            isinstance(message, Response)
            and message.status >= 200
            and self.state not in self.LINGER
        ):
            self.last_response = message
        return super()._event(event, message)


class InviteClientTransaction(ClientTransaction):
    __slots__ = ()
    TABLE = INVITE_CLIENT_TABLE
    ENTRY = ("send request", "start A", "start B")
    INITIAL = CALLING
    LINGER = frozenset({COMPLETED, ACCEPTED})


class NonInviteClientTransaction(ClientTransaction):
    __slots__ = ()
    TABLE = NON_INVITE_CLIENT_TABLE
    ENTRY = ("send request", "start E", "start F")
    INITIAL = TRYING
    LINGER = frozenset({COMPLETED})


class ServerTransaction(_Machine):
    """A server transaction (RFC 3261 §17.2): created by the core for each new request.

    `start()` delivers the request to the TU. The TU answers through `send_response`; request
    retransmissions go to `on_request` and are absorbed (the last response is resent).
    """

    __slots__ = ("key",)

    def __init__(self, request: Request, *, reliable: bool, timers: TimerConfig) -> None:
        if request.method == "ACK":
            raise TransactionError("ACK has no server transaction of its own (RFC 3261 §17.2.3)")
        super().__init__(request, reliable=reliable, timers=timers)
        self.key = server_key(request)

    def start(self) -> list[Action]:
        """Enter the initial state; passes the request to the TU."""
        return self._start()

    def on_request(self, request: Request) -> list[Action]:
        """A retransmission of the request, or the ACK, matched this transaction."""
        return self._event("ACK" if request.method == "ACK" else "request", request)

    def send_response(self, response: Response) -> list[Action]:
        """The TU's response. Responses the state does not allow are discarded (§17.2.2)."""
        if response.cseq.method != self.request.method:
            raise TransactionError(
                f"{response.cseq.method} response handed to a {self.request.method} transaction"
            )
        return self._event("send " + response_class(response.status), response)

    def send_trying(self) -> list[Action]:
        """Send 100 Trying (§17.2.1: the TU decides, by whether it answers within 200 ms)."""
        return self.send_response(make_trying(self.request))

    def _message_step(
        self, step: str, message: Request | Response | None, out: list[Action]
    ) -> None:
        if step == "send" and isinstance(message, Response):
            if self.state not in self.LINGER:  # "accepted" resends nothing itself
                self.last_response = message
            out.append(Send(message))
        elif step == "resend":
            if self.last_response is not None:
                out.append(Send(self.last_response))
        else:  # pragma: no cover - the tables only use the steps above
            super()._message_step(step, message, out)


class InviteServerTransaction(ServerTransaction):
    __slots__ = ()
    TABLE = INVITE_SERVER_TABLE
    ENTRY = ("deliver",)
    INITIAL = PROCEEDING
    # not "completed": it resends the final answer until the ACK (Timer G, H)
    LINGER = frozenset({CONFIRMED, ACCEPTED})


class NonInviteServerTransaction(ServerTransaction):
    __slots__ = ()
    TABLE = NON_INVITE_SERVER_TABLE
    ENTRY = ("deliver",)
    INITIAL = TRYING
    LINGER = frozenset({COMPLETED})
    RESENDS_WHILE_LINGERING = True  # a retransmitted request gets the final answer again


def client_transaction(
    request: Request, *, reliable: bool, timers: TimerConfig | None = None
) -> ClientTransaction:
    """A new client transaction for `request` (which must carry its top Via with a branch)."""
    # each class named in its own call: a call through a variable holding the class is a
    # generic Python call whose keywords __init__ parses by name, under mypyc too
    if request.method == "INVITE":
        return InviteClientTransaction(request, reliable=reliable, timers=timers or TimerConfig())
    return NonInviteClientTransaction(request, reliable=reliable, timers=timers or TimerConfig())


def server_transaction(
    request: Request, *, reliable: bool, timers: TimerConfig | None = None
) -> ServerTransaction:
    """A new server transaction for a received `request` (not an ACK)."""
    # each class named in its own call: a call through a variable holding the class is a
    # generic Python call whose keywords __init__ parses by name, under mypyc too
    if request.method == "INVITE":
        return InviteServerTransaction(request, reliable=reliable, timers=timers or TimerConfig())
    return NonInviteServerTransaction(request, reliable=reliable, timers=timers or TimerConfig())


# --------------------------------------------------------------------------------------------
# The table


class TransactionTable:
    """Client and server transactions by key, and the RFC 3261 matching rules.

    Responses match client transactions (§17.1.3), requests match server transactions
    (§17.2.3: an ACK for a non-2xx response matches its INVITE), a CANCEL finds the INVITE it
    cancels with `cancel_target` (§9.2). A None from a match is the caller's cue: a response for
    no transaction goes to the core (a proxy forwards it statelessly, §16.7; a UA drops it), an
    unmatched ACK is an ACK for a 2xx (the dialog's business, §13.2.2.4), an unmatched request
    starts a new server transaction.
    """

    def __init__(self) -> None:
        self._by_key: dict[TransactionKey, ClientTransaction | ServerTransaction] = {}

    def add(self, tx: ClientTransaction | ServerTransaction) -> None:
        if tx.key in self._by_key:
            raise TransactionError(f"a transaction with key {tx.key} exists already")
        self._by_key[tx.key] = tx

    def remove(self, tx: ClientTransaction | ServerTransaction | TransactionKey) -> None:
        """Forget a transaction (after its Terminated action); unknown keys are ignored."""
        key = tx if isinstance(tx, TransactionKey) else tx.key
        self._by_key.pop(key, None)

    def get(self, key: TransactionKey) -> ClientTransaction | ServerTransaction | None:
        return self._by_key.get(key)

    def match_response(self, response: Response) -> ClientTransaction | None:
        """RFC 3261 §17.1.3: top Via branch and CSeq method."""
        branch = response.branch
        if not branch:
            return None
        tx = self._by_key.get(TransactionKey(branch, response.cseq.method))
        return tx if isinstance(tx, ClientTransaction) else None

    def match_request(self, request: Request) -> ServerTransaction | None:
        """RFC 3261 §17.2.3: branch, sent-by and method (ACK matching INVITE)."""
        tx = self._by_key.get(server_key(request))
        if not isinstance(tx, ServerTransaction):
            return None
        if request.method == "ACK" and not tx.is_invite:
            return None  # pragma: no cover - an ACK keys as INVITE, so tx is an INVITE one
        return tx

    def cancel_target(self, cancel: Request) -> ServerTransaction | None:
        """RFC 3261 §9.2: the INVITE server transaction a CANCEL refers to, if any.

        Matching is that of §17.2.3 with the method taken as INVITE: the CANCEL carries the
        INVITE's top Via (§9.1), so branch and sent-by are those of the INVITE.
        """
        if cancel.method != "CANCEL":
            return None
        tx = self._by_key.get(server_key(cancel, method="INVITE"))
        return tx if isinstance(tx, ServerTransaction) else None

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[ClientTransaction | ServerTransaction]:
        return iter(list(self._by_key.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._by_key


# --------------------------------------------------------------------------------------------
# Messages the transaction layer builds


def _same_hop(invite: Request, method: str, to: str) -> Request:
    """An ACK or CANCEL that follows `invite` hop by hop: its Request-URI, top Via (so it
    matches the same server transaction), Route headers, From, Call-ID and CSeq number."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", _required(invite, "From"))
    headers.add("To", to)
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.seq} {method}")
    return Request(method, invite.uri, headers)


def make_ack_for_non2xx(invite: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a 300-699 response (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, the To of the response (with
    its tag), one Via equal to the INVITE's top Via (so it matches the same server transaction),
    and the INVITE's Route headers.
    """
    return _same_hop(invite, "ACK", _required(response, "To"))


def make_cancel(invite: Request, *, reason: str | None = None) -> Request:
    """A CANCEL for `invite` (RFC 3261 §9.1).

    Request-URI, Call-ID, To, From and CSeq number equal the INVITE's (method CANCEL), one Via
    equal to the INVITE's top Via, the INVITE's Route headers. `reason` adds a Reason header
    (RFC 3326), e.g. 'SIP;cause=200;text="Call completed elsewhere"'.
    """
    if invite.method != "INVITE":
        raise TransactionError(f"only an INVITE can be cancelled, not {invite.method}")
    cancel = _same_hop(invite, "CANCEL", _required(invite, "To"))
    if reason is not None:
        cancel.headers.add("Reason", reason)
    return cancel


def make_trying(request: Request) -> Response:
    """100 Trying for `request`: no To tag (§17.2.1); make_response echoes Timestamp (§8.2.6.1)."""
    return make_response(request, 100)


def _required(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise TransactionError(f"{name} header missing", 400)
    return value
