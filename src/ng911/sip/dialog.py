"""SIP dialogs (RFC 3261 §12): the state two UAs share between INVITE and BYE.

A dialog is identified by Call-ID, local tag and remote tag, and remembers what every request
inside it needs: the local and remote sequence numbers, the local and remote URIs (From and To),
the remote target (the peer's Contact) and the route set (the Record-Route of the request or
response that created it). `Dialog.create_request` builds BYE, re-INVITE, INFO... from that state,
with loose routing or the strict-routing fallback (§12.2.1.1); `create_ack` builds the ACK for a
2xx (§13.2.2.4), which belongs to the dialog, not to a transaction; `receive_request` validates
an in-dialog request (§12.2.2); `AckWait` retransmits a UAS's 2xx until its ACK arrives
(§13.3.1.4).

Sans-I/O: nothing here sends. A request built here goes into a client transaction
(`ng911.sip.transaction`) like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from ng911.sip.errors import SipError
from ng911.sip.headers import Via, new_branch
from ng911.sip.message import Headers, Request, Response
from ng911.sip.transaction import (
    Action,
    CancelTimer,
    Send,
    StartTimer,
    Terminated,
    Timeout,
    TimerConfig,
)
from ng911.sip.uri import URI, NameAddr, SipURI, Value, parse_name_addr

#: Requests whose Contact replaces the remote target (RFC 3261 §12.2; UPDATE RFC 3311 §5.2;
#: SUBSCRIBE/NOTIFY RFC 6665 §4.1.2.1; REFER RFC 3515).
TARGET_REFRESH_METHODS: Final = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})

# RFC 3261 §19.1.1 table 1: URI components not allowed in a Request-URI.
_NOT_IN_REQUEST_URI: Final = ("method",)


class DialogError(SipError):
    """An in-dialog request or dialog-creating message that the dialog cannot accept.

    `status` is the response a UAS sends: 500 for a request out of order (§12.2.2), 481 for a
    request of another dialog (§12.2.2), 400 when a dialog-creating message lacks what it must
    carry (a Contact, §8.1.1.8; a To tag on a response).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class DialogState(StrEnum):
    EARLY = "early"  # created by a 1xx with a To tag (§12.1)
    CONFIRMED = "confirmed"  # created or confirmed by a 2xx
    TERMINATED = "terminated"


class DialogId(Value):
    """RFC 3261 §12: Call-ID, local tag, remote tag, seen from our side."""

    __slots__ = ("call_id", "local_tag", "remote_tag")
    _FIELDS = ("call_id", "local_tag", "remote_tag")

    def __init__(self, call_id: str, local_tag: str, remote_tag: str) -> None:
        self.call_id: Final = call_id
        self.local_tag: Final = local_tag
        self.remote_tag: Final = remote_tag

    def _fields(self) -> tuple[object, ...]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @staticmethod
    def of_received_request(request: Request) -> DialogId:
        """The id of the dialog an incoming request belongs to (our tag is in To, §12.2.2)."""
        return DialogId(request.call_id, request.to_addr.tag or "", request.from_addr.tag or "")

    @staticmethod
    def of_received_response(response: Response) -> DialogId:
        """The id of the dialog a response to our request belongs to (our tag is in From)."""
        return DialogId(response.call_id, response.from_addr.tag or "", response.to_addr.tag or "")


def _contact(message: Request | Response) -> URI | None:
    """The URI of the first Contact, or None when there is none (or it is `*`)."""
    values = message.headers.get_all("Contact")
    if not values or values[0].strip() == "*":
        return None
    return parse_name_addr(values[0]).uri


def _record_route(message: Request | Response) -> list[NameAddr]:
    return message.record_routes


def _is_sips(uri: URI) -> bool:
    return isinstance(uri, SipURI) and uri.secure


def _without_tag(addr: NameAddr) -> NameAddr:
    return addr.without_params("tag")


@dataclass(slots=True, eq=False)
class Dialog:
    """The dialog state of RFC 3261 §12.1, plus what is needed to build requests in it.

    Mutable: sequence numbers advance and target refreshes replace the remote target.
    `local_target` is our own Contact (sent in target-refresh requests such as re-INVITE);
    `via` is a template of our Via (its branch is replaced for every request).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: URI
    route_set: tuple[NameAddr, ...] = ()
    local_seq: int | None = None
    remote_seq: int | None = None
    secure: bool = False
    is_uac: bool = True
    state: DialogState = DialogState.CONFIRMED
    local_target: URI | None = None
    via: Via | None = field(default=None)

    # -- creation --------------------------------------------------------------------------

    @classmethod
    def uac_from_response(
        cls, invite: Request, response: Response, *, over_tls: bool = True
    ) -> Dialog:
        """The UAC side (§12.1.2), from a 101-199 with a To tag (early) or a 2xx (confirmed).

        The route set is the response's Record-Route in reverse order; the remote target is
        its Contact. A 1xx without Contact falls back to the Request-URI (RFC 3261 requires
        the Contact, but many 180s in the wild lack it); a 2xx without one is refused.
        The secure flag needs a sips: Request-URI *and* the request sent over TLS
        (`over_tls`, which the sans-I/O core cannot see for itself).
        """
        if not 101 <= response.status <= 299:
            raise DialogError(f"a {response.status} response does not create a dialog")
        if response.call_id != invite.call_id or response.cseq.seq != invite.cseq.seq:
            raise DialogError("response does not belong to this request", 400)
        remote_tag = response.to_addr.tag
        early = response.status < 200
        if remote_tag is None and early:
            raise DialogError("a provisional response without To tag creates no dialog")
        local_tag = invite.from_addr.tag
        if local_tag is None:
            raise DialogError("our request has no From tag")
        target = _contact(response)
        if target is None:
            if not early:
                raise DialogError("2xx without Contact: no remote target (RFC 3261 §12.1.2)")
            target = invite.uri
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag or "",  # RFC 2543 peers: a null remote tag (§12.1.2)
            local_uri=_without_tag(invite.from_addr),
            remote_uri=_without_tag(response.to_addr),
            remote_target=target,
            route_set=tuple(reversed(_record_route(response))),
            local_seq=invite.cseq.seq,
            remote_seq=None,
            secure=over_tls and _is_sips(invite.uri),
            is_uac=True,
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
            local_target=_contact(invite),
            via=invite.top_via if invite.headers.get("Via") else None,
        )

    @classmethod
    def uas_from_request(
        cls,
        invite: Request,
        local_tag: str,
        *,
        local_target: URI | None = None,
        early: bool = False,
        over_tls: bool = True,
    ) -> Dialog:
        """The UAS side (§12.1.1), when we answer `invite` with a 1xx/2xx carrying `local_tag`.

        The route set is the request's Record-Route in order; the remote target is its Contact
        (required: 400 without it, §8.1.1.8). The local sequence number starts empty; the first
        request we send in the dialog uses 1. Secure: a sips: Request-URI that arrived over TLS.
        """
        target = _contact(invite)
        if target is None:
            raise DialogError("dialog-creating request without Contact (RFC 3261 §8.1.1.8)")
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_addr.tag or "",
            local_uri=_without_tag(invite.to_addr),
            remote_uri=_without_tag(invite.from_addr),
            remote_target=target,
            route_set=tuple(_record_route(invite)),
            local_seq=None,
            remote_seq=invite.cseq.seq,
            secure=over_tls and _is_sips(invite.uri),
            is_uac=False,
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
            local_target=local_target,
        )

    # -- identity --------------------------------------------------------------------------

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @property
    def local_addr(self) -> NameAddr:
        """Our From in requests we send (local URI + local tag)."""
        return self.local_uri.with_params(tag=self.local_tag)

    @property
    def remote_addr(self) -> NameAddr:
        """Our To in requests we send (remote URI + remote tag, none for a null tag)."""
        if not self.remote_tag:
            return self.remote_uri
        return self.remote_uri.with_params(tag=self.remote_tag)

    # -- state changes ---------------------------------------------------------------------

    def confirm(self, response: Response | None = None) -> None:
        """Early -> confirmed. For a UAC, the 2xx refreshes remote target and route set.

        RFC 3261 §12.1.2 builds both from the response that creates the dialog; the 2xx that
        confirms an early dialog may come through a different Record-Route (a forking proxy's
        other branch has a different To tag, hence another dialog), so we take its values.
        """
        if response is not None:
            if response.status // 100 != 2:
                raise DialogError(f"a {response.status} does not confirm a dialog")
            target = _contact(response)
            if target is not None:
                self.remote_target = target
            if self.is_uac:
                self.route_set = tuple(reversed(_record_route(response)))
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def refresh_target(self, message: Request | Response) -> None:
        """Target refresh: a re-INVITE/UPDATE (or its 2xx) with a Contact replaces the target."""
        target = _contact(message)
        if target is not None:
            self.remote_target = target

    def receive_request(self, request: Request) -> None:
        """Validate an in-dialog request and update the dialog (RFC 3261 §12.2.2).

        Raises DialogError(481) for a request of another dialog and DialogError(500) for a
        CSeq lower than the remote sequence number (out of order). ACK and CANCEL carry the
        CSeq number of the INVITE they refer to and are exempt. A target-refresh request with
        a Contact replaces the remote target.
        """
        if DialogId.of_received_request(request) != self.id:
            raise DialogError("request does not match this dialog", 481)
        seq = request.cseq.seq
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq < self.remote_seq:
                raise DialogError(
                    f"CSeq {seq} lower than the remote sequence number {self.remote_seq}", 500
                )
            self.remote_seq = seq
            if request.method in TARGET_REFRESH_METHODS:
                self.refresh_target(request)

    # -- building requests -----------------------------------------------------------------

    def next_hop(self) -> URI:
        """Where a request in this dialog goes first: the top route, else the remote target.

        (RFC 3261 §12.2.1.1 then §8.1.2: the first Route if there is a route set, else the
        Request-URI; with a strict router the Request-URI *is* the first route.)
        """
        if self.route_set:
            return self.route_set[0].uri
        return self.remote_target

    def _target(self) -> tuple[URI, list[str]]:
        """Request-URI and Route values (RFC 3261 §12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0].uri
        if isinstance(first, SipURI) and not first.has_param("lr"):
            # Strict router (RFC 2543): its URI becomes the Request-URI, stripped of what a
            # Request-URI may not carry; the remote target goes last in the Route set.
            ruri = first.without_params(*_NOT_IN_REQUEST_URI).replace(headers=())
            routes = [str(r) for r in self.route_set[1:]]
            routes.append(str(NameAddr(self.remote_target)))
            return ruri, routes
        return self.remote_target, [str(r) for r in self.route_set]

    def _headers(self, method: str, seq: int, via: Via | None) -> tuple[URI, Headers]:
        ruri, routes = self._target()
        headers = Headers()
        template = via or self.via
        if template is not None:
            headers.add("Via", str(template.with_params(branch=new_branch())))
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.local_addr))
        headers.add("To", str(self.remote_addr))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{seq} {method}")
        return ruri, headers

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        via: Via | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A new request in this dialog (RFC 3261 §12.2.1.1): BYE, re-INVITE, INFO, UPDATE...

        Increments the local sequence number (starting at 1 if empty). The Via is `via` (or the
        dialog's template) with a fresh branch; with neither, the caller adds the Via. A
        target-refresh request carries our Contact when `local_target` is known.
        """
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} is not built here: use create_ack / make_cancel", 500)
        if self.state is DialogState.TERMINATED:
            raise DialogError("the dialog is terminated", 481)
        self.local_seq = 1 if self.local_seq is None else self.local_seq + 1
        ruri, headers = self._headers(method, self.local_seq, via)
        if method in TARGET_REFRESH_METHODS and self.local_target is not None:
            headers.add("Contact", str(NameAddr(self.local_target)))
        for name, value in extra:
            headers.add(name, value)
        if body or content_type:
            headers.add("Content-Type", content_type or "application/octet-stream")
        return Request(method, ruri, headers, body)

    def create_ack(
        self,
        invite: Request,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        via: Via | None = None,
    ) -> Request:
        """The ACK for a 2xx to `invite` (RFC 3261 §13.2.2.4).

        Built like any in-dialog request, except: the CSeq number is the INVITE's (method
        ACK), the local sequence number does not advance, and the INVITE's credentials
        (Authorization, Proxy-Authorization) are copied. A new branch: this ACK is its own
        transaction (§17.1.1.3 is only for non-2xx).
        """
        if invite.method != "INVITE":
            raise DialogError(f"ACK acknowledges an INVITE, not {invite.method}", 500)
        ruri, headers = self._headers("ACK", invite.cseq.seq, via)
        for name in ("Authorization", "Proxy-Authorization"):
            for value in invite.headers.get_all(name):
                headers.add(name, value)
        if body or content_type:
            headers.add("Content-Type", content_type or "application/sdp")
        return Request("ACK", ruri, headers, body)


class AckWait:
    """The UAS core's wait for the ACK of its 2xx to an INVITE (RFC 3261 §13.3.1.4).

    The INVITE server transaction sends a 2xx once and leaves retransmission to the UAS core,
    because the 2xx travels end to end and the ACK is its own transaction. This machine
    resends the 2xx at T1, 2*T1, ... capped at T2, until `on_ack` sees the ACK with the same
    CSeq number; after 64*T1 without it, a `Timeout` tells the TU to end the session with a
    BYE. It retransmits even when our own hop is reliable: a later hop may not be.
    Sans-I/O like the transactions: timers "2xx" and "2xx-timeout" are the caller's to run.
    """

    RETRANSMIT: Final = "2xx"
    GIVE_UP: Final = "2xx-timeout"

    def __init__(self, response: Response, *, timers: TimerConfig | None = None) -> None:
        if not (200 <= response.status < 300 and response.cseq.method == "INVITE"):
            raise DialogError("AckWait is for a 2xx to an INVITE", 500)
        self.response = response
        self.timers = timers or TimerConfig()
        self._interval = self.timers.t1
        self.done = False

    def start(self) -> list[Action]:
        """Send the 2xx and start both timers."""
        return [
            Send(self.response),
            StartTimer(self.RETRANSMIT, self._interval),
            StartTimer(self.GIVE_UP, 64 * self.timers.t1),
        ]

    def on_timer(self, name: str) -> list[Action]:
        if self.done:
            return []
        if name == self.RETRANSMIT:
            self._interval = min(2 * self._interval, self.timers.t2)
            return [Send(self.response), StartTimer(self.RETRANSMIT, self._interval)]
        if name == self.GIVE_UP:
            self.done = True
            return [CancelTimer(self.RETRANSMIT), Timeout("no ACK"), Terminated()]
        return []

    def on_ack(self, ack: Request) -> list[Action]:
        """An ACK in this dialog: it ends the wait if it acknowledges this 2xx's CSeq."""
        if self.done or ack.method != "ACK" or ack.cseq.seq != self.response.cseq.seq:
            return []
        self.done = True
        return [CancelTimer(self.RETRANSMIT), CancelTimer(self.GIVE_UP), Terminated()]
