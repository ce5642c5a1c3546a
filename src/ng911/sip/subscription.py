"""SIP-specific event notification (RFC 6665): subscriptions, both sides, sans-I/O.

Why here, beside `dialog.py`: a subscription is a dialog usage (RFC 5057) with its own
rules (Event packages, Expires, Subscription-State, refreshes, termination), and those rules
are the same whatever the events are about. The element side (`ng911.elements.events`)
owns the clock, the sockets and the bodies; this module decides, from a request or a
response and `now`, what to answer and what state the subscription is in.

Notifier (`Notifier`):
- a SUBSCRIBE without Event is a 400 (RFC 6665 §8.2.1 makes it mandatory), an unknown
  package a 489 with Allow-Events (§4.2.1.1), an Accept without our body type a 406;
- Expires: absent → the package default; under `min_expires` (but not 0) → 423 with
  Min-Expires (§4.2.1.1); above `max_expires` → shortened (the notifier may, never longer);
- a new subscription beyond `max_subscriptions` (or `max_per_source` from one host) → 503
  with Retry-After: a flood of SUBSCRIBEs never grows the table without bound;
- accepted → 200 with the Expires granted, and a NOTIFY at once with the current state
  (§4.2.1.2; 202 is deprecated); Expires: 0 → 200 and a final NOTIFY
  (`terminated;reason=timeout`, §4.2.1.4), also for a "fetch" (Expires: 0 in a new SUBSCRIBE);
- a refresh (in-dialog SUBSCRIBE) goes through `Dialog.receive_request`: 481 for an unknown
  dialog, 500 for a CSeq out of order (RFC 3261 §12.2.2);
- a subscription not refreshed in time ends (`expired`) with a final NOTIFY
  (`terminated;reason=timeout`, §4.2.2);
- at most one NOTIFY in flight per subscription (`notify_done` says whether the state changed
  meanwhile): notifications never overtake each other and a busy resource never queues more
  than one transaction per subscriber; a NOTIFY answered 481 (or 408, or any response RFC 5057
  §5.1 says destroys the usage), or timing out, ends the subscription (§4.2.2).

Subscriber (`ClientSubscription`):
- SUBSCRIBE built fresh (new Call-ID and tag) or as an in-dialog refresh;
- the dialog comes from the 2xx, or from a NOTIFY that overtook it (§4.1.2.4: "NOTIFY may
  arrive before the 200"), and the 2xx then only confirms it;
- refresh before expiry (`refresh_in`), re-subscribe after a terminated or failed
  subscription with exponential backoff (`retry_in`), honouring `retry-after` and the
  reasons after which §4.1.3 says not to retry at once (`noresource`, `rejected`, `invariant`);
- NOTIFY: 481 when no subscription matches, 489 for another package, 400 without a
  readable Subscription-State, 500 out of order; the body is the element's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from ng911.errors import Ng911Error
from ng911.sip.dialog import Dialog, DialogError, DialogId
from ng911.sip.errors import SipParseError
from ng911.sip.headers import Via, new_branch, new_call_id, new_tag
from ng911.sip.message import Request, Response, parse_comma_list
from ng911.sip.uri import URI, NameAddr, bounded_int, parse_header_params

__all__ = [
    "ClientSubscription",
    "EventHeader",
    "Notifier",
    "NotifierPolicy",
    "NotifyCheck",
    "SubscribeAnswer",
    "Subscription",
    "SubscriptionState",
    "accepts_type",
    "parse_event",
    "parse_expires",
    "parse_subscription_state",
]

MAX_EXPIRES = 86400 * 7  # anything longer is not a number we take from a peer
# RFC 5057 §5.1: responses to a NOTIFY that destroy the subscription usage (plus 408 and a
# transaction timeout, RFC 6665 §4.2.2); any other error affects the transaction only
USAGE_ENDING = frozenset({404, 405, 408, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604})
# Subscription-State reasons after which a subscriber should not re-subscribe at once
# (RFC 6665 §4.1.3): wait for retry-after, or back off
NO_QUICK_RETRY = frozenset({"noresource", "rejected", "invariant", "probation", "giveup"})


class SubscriptionError(DialogError):
    """A SUBSCRIBE or NOTIFY refused; `status` is the answer (`DialogError` carries it)."""


@dataclass(frozen=True, slots=True)
class EventHeader:
    """An Event header (RFC 6665 §8.2.1): the package and its optional `id`."""

    package: str
    id: str | None = None

    def __str__(self) -> str:
        return self.package if self.id is None else f"{self.package};id={self.id}"


def parse_event(value: str | None) -> EventHeader:
    """Raises `SubscriptionError(400)` for a missing or unreadable Event header."""
    if value is None or not value.strip():
        raise SubscriptionError("Event header missing (RFC 6665 §8.2.1)", 400)
    pkg, _, rest = value.strip().partition(";")
    pkg = pkg.strip()
    try:
        params = parse_header_params(rest) if rest else ()
    except SipParseError:
        raise SubscriptionError("unreadable Event header", 400) from None
    if not pkg or len(pkg) > 128 or any(c in pkg for c in " \t,<>\"'"):
        raise SubscriptionError("unreadable Event header", 400)
    ident = next((v for n, v in params if n == "id"), None)
    return EventHeader(pkg, ident)


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A Subscription-State header (RFC 6665 §8.2.3)."""

    state: str  # "active" | "pending" | "terminated" | an extension
    expires: int | None = None
    reason: str | None = None
    retry_after: int | None = None

    def __str__(self) -> str:
        out = self.state
        if self.reason is not None:
            out += f";reason={self.reason}"
        if self.expires is not None:
            out += f";expires={self.expires}"
        if self.retry_after is not None:
            out += f";retry-after={self.retry_after}"
        return out


def parse_subscription_state(value: str | None) -> SubscriptionState:
    if value is None or not value.strip():
        raise SubscriptionError("Subscription-State header missing (RFC 6665 §8.2.3)", 400)
    state, _, rest = value.strip().partition(";")
    try:
        params = dict(parse_header_params(rest)) if rest else {}
    except SipParseError:
        raise SubscriptionError("unreadable Subscription-State header", 400) from None
    state = state.strip().lower()
    if not state.isalpha():
        raise SubscriptionError("unreadable Subscription-State header", 400)

    def number(name: str) -> int | None:
        raw = params.get(name)
        if raw is None:
            return None
        n = bounded_int(raw, MAX_EXPIRES)
        if n is None:
            raise SubscriptionError(f"Subscription-State {name} is not a number", 400)
        return n

    reason = params.get("reason")
    return SubscriptionState(
        state, number("expires"), reason.lower() if reason else None, number("retry-after")
    )


def parse_expires(value: str | None) -> int | None:
    if value is None:
        return None
    n = bounded_int(value.strip(), 2**32 - 1)
    if n is None:
        raise SubscriptionError("Expires is not a number of seconds", 400)
    return min(n, MAX_EXPIRES)


def accepts_type(accept: str | None, content_type: str) -> bool:
    """Does an Accept header allow `content_type`? (No header: the package default, ours.)"""
    if accept is None or not accept.strip():
        return True
    major = content_type.split("/", 1)[0]
    for item in parse_comma_list(accept):
        kind = item.split(";", 1)[0].strip().lower()
        if kind in ("*/*", f"{major}/*", content_type) or (
            kind.endswith("+json") and content_type == "application/json"
        ):
            return True
    return False


# ------------------------------------------------------------------------------ notifier


@dataclass(frozen=True, slots=True)
class NotifierPolicy:
    packages: tuple[str, ...]
    content_type: str = "application/json"
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 3600
    max_subscriptions: int = 256
    max_per_source: int = 32
    retry_after: int = 30


@dataclass(eq=False, slots=True)
class Subscription:
    """One subscription this notifier serves (a dialog usage, RFC 5057)."""

    event: EventHeader
    dialog: Dialog
    source: str  # the subscriber's host (the per-source bound)
    expires_at: float
    terminated: str | None = None  # the reason once terminated
    in_flight: bool = False  # a NOTIFY transaction is pending
    dirty: bool = False  # the state changed while one was in flight
    last_body: bytes | None = None

    @property
    def key(self) -> tuple[DialogId, str, str | None]:
        return (self.dialog.id, self.event.package, self.event.id)

    def state_header(self, now: float) -> SubscriptionState:
        if self.terminated is not None:
            return SubscriptionState("terminated", reason=self.terminated)
        return SubscriptionState("active", expires=max(0, round(self.expires_at - now)))


@dataclass(frozen=True, slots=True)
class SubscribeAnswer:
    """What to answer a SUBSCRIBE: `status` with `headers`; with `subscription`, the NOTIFY
    to send right after the 2xx (a final one when `subscription.terminated`)."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    subscription: Subscription | None = None
    to_tag: str | None = None


class Notifier:
    """The subscriptions of one notifier, bounded; see the module docstring for the rules."""

    def __init__(self, policy: NotifierPolicy) -> None:
        self.policy = policy
        self._subs: dict[tuple[DialogId, str, str | None], Subscription] = {}
        self._per_source: dict[str, int] = {}
        self._packages = {p.lower(): p for p in policy.packages}

    def __len__(self) -> int:
        return len(self._subs)

    def subscriptions(self, package: str | None = None) -> list[Subscription]:
        return [s for s in self._subs.values() if package is None or s.event.package == package]

    def on_subscribe(
        self,
        request: Request,
        source: str,
        now: float,
        *,
        local_target: URI | None = None,
        over_tls: bool = False,
    ) -> SubscribeAnswer:
        """Decide on a SUBSCRIBE (new or refresh). Never raises on hostile input: a
        refusal is an answer with its status."""
        p = self.policy
        allow = (("Allow-Events", ", ".join(p.packages)),)
        try:
            event = parse_event(request.headers.get("Event"))
            package = self._packages.get(event.package.lower())
            if package is None:
                return SubscribeAnswer(489, None, allow)
            event = EventHeader(package, event.id)
            if not accepts_type(request.headers.get("Accept"), p.content_type):
                return SubscribeAnswer(406, None, (("Accept", p.content_type),))
            asked = parse_expires(request.headers.get("Expires"))
        except SubscriptionError as exc:
            return SubscribeAnswer(exc.status, exc.reason, allow)
        expires = p.default_expires if asked is None else asked
        if 0 < expires < p.min_expires:
            return SubscribeAnswer(423, None, (("Min-Expires", str(p.min_expires)),))
        expires = min(expires, p.max_expires)
        if request.to_addr.tag is not None:
            return self._refresh(request, event, expires, now)
        if len(self._subs) >= p.max_subscriptions or (
            self._per_source.get(source, 0) >= p.max_per_source
        ):
            return SubscribeAnswer(503, "Too Many Subscriptions", self._retry())
        tag = new_tag()
        try:
            dialog = Dialog.uas_from_request(
                request, tag, local_target=local_target, over_tls=over_tls
            )
        except Ng911Error as exc:
            return SubscribeAnswer(getattr(exc, "status", 400), str(exc)[:100])
        sub = Subscription(event, dialog, source, now + expires)
        expires_hdr = (("Expires", str(expires)),)
        if expires == 0:  # a fetch: one NOTIFY, no subscription kept (§4.4.3)
            sub.terminated = "timeout"
            return SubscribeAnswer(200, None, expires_hdr, sub, tag)
        self._subs[sub.key] = sub
        self._per_source[source] = self._per_source.get(source, 0) + 1
        return SubscribeAnswer(200, None, expires_hdr, sub, tag)

    def _retry(self) -> tuple[tuple[str, str], ...]:
        return (("Retry-After", str(self.policy.retry_after)),)

    def _refresh(
        self, request: Request, event: EventHeader, expires: int, now: float
    ) -> SubscribeAnswer:
        key = (DialogId.of_received_request(request), event.package, event.id)
        sub = self._subs.get(key)
        if sub is None:
            return SubscribeAnswer(481, "Subscription Does Not Exist")
        try:
            sub.dialog.receive_request(request)
        except DialogError as exc:
            return SubscribeAnswer(exc.status, exc.reason)
        expires_hdr = (("Expires", str(expires)),)
        if expires == 0:
            sub.terminated = "timeout"  # unsubscribed: the final NOTIFY says so (§4.2.1.4)
            self.remove(sub)
        else:
            sub.expires_at = now + expires
        sub.last_body = None  # a refresh gets the full state again (§4.2.1.2)
        return SubscribeAnswer(200, None, expires_hdr, sub)

    def remove(self, sub: Subscription) -> None:
        if self._subs.pop(sub.key, None) is not None:
            left = self._per_source.get(sub.source, 1) - 1
            if left > 0:
                self._per_source[sub.source] = left
            else:
                self._per_source.pop(sub.source, None)

    def expired(self, now: float) -> list[Subscription]:
        """Subscriptions whose time is up: terminated (reason timeout) and removed; each
        gets a final NOTIFY from the caller."""
        out = [s for s in self._subs.values() if s.expires_at <= now]
        for s in out:
            s.terminated = "timeout"
            self.remove(s)
        return out

    def terminate_all(self, reason: str = "noresource") -> list[Subscription]:
        """The notifier goes away: every subscription ends (each gets a final NOTIFY)."""
        out = list(self._subs.values())
        for s in out:
            s.terminated = reason
            self.remove(s)
        return out

    def next_expiry(self) -> float | None:
        return min((s.expires_at for s in self._subs.values()), default=None)

    def notify(
        self,
        sub: Subscription,
        body: bytes,
        now: float,
        *,
        via: Via | None = None,
    ) -> Request:
        """The NOTIFY carrying `body` (the whole state) for `sub`; one in flight at a time."""
        sub.in_flight = True
        sub.dirty = False
        sub.last_body = body
        return sub.dialog.create_request(
            "NOTIFY",
            body=body,
            content_type=self.policy.content_type,
            via=via,
            extra=(
                ("Event", str(sub.event)),
                ("Subscription-State", str(sub.state_header(now))),
            ),
        )

    def notify_done(self, sub: Subscription, status: int | None) -> bool:
        """The NOTIFY's final answer (`None`: timed out / transport failure). True when
        another NOTIFY is due: the state changed, or the subscription ended, while this one
        was in flight (a final NOTIFY still goes out)."""
        sub.in_flight = False
        if status is None or status in USAGE_ENDING:
            sub.terminated = sub.terminated or "deactivated"
            self.remove(sub)
            return False
        return sub.dirty


# ------------------------------------------------------------------------------ subscriber


@dataclass(frozen=True, slots=True)
class NotifyCheck:
    """A NOTIFY accepted as far as the subscription goes: its state header and whether it
    ended the subscription. The body is for the caller to read (and maybe refuse)."""

    state: SubscriptionState
    terminated: bool


@dataclass(eq=False, slots=True)
class ClientSubscription:
    """One subscription we hold (or keep trying to hold) at a notifier.

    Its state machine: `idle` (nothing sent) → `trying` (SUBSCRIBE sent) → `active` /
    `pending` (a 2xx or a NOTIFY came) → back to `trying` on each refresh; `terminated`
    when the notifier ends it or a request fails, after which `retry_in` says when to
    start again with a fresh dialog.
    """

    target: URI
    local: NameAddr  # our From, without tag
    event: EventHeader
    expires: int = 600
    retry_min: float = 1.0
    retry_max: float = 60.0
    state: str = "idle"
    dialog: Dialog | None = None
    call_id: str = ""
    local_tag: str = ""
    cseq: int = 0
    expires_at: float = 0.0  # when the notifier's grant runs out
    failures: int = 0  # in a row, for the backoff
    retry_after: float | None = None  # what the notifier asked for, once
    last_reason: str = ""
    request: Request | None = None  # the SUBSCRIBE in flight
    notifies: int = 0

    # ---- building

    def subscribe(
        self,
        *,
        contact: NameAddr,
        via: Via | None,
        accept: str = "application/json",
        expires: int | None = None,
    ) -> Request:
        """The next SUBSCRIBE: a refresh inside the dialog while one stands, else a new
        subscription (new Call-ID and tag: a terminated dialog is never reused, §4.1.2.4).
        `expires=0` unsubscribes."""
        n = self.expires if expires is None else expires
        headers = [
            ("Event", str(self.event)),
            ("Expires", str(n)),
            ("Accept", accept),
            ("Contact", str(contact)),
        ]
        if self.dialog is not None and self.state in ("active", "pending", "trying"):
            req = self.dialog.create_request("SUBSCRIBE", via=via, extra=headers[:3])
            if "Contact" not in req.headers:
                req.headers.add("Contact", str(contact))
        else:
            self.dialog = None
            self.call_id = new_call_id(str(getattr(self.local.uri, "host", "ng911")))
            self.local_tag = new_tag()
            self.cseq = 0
            req = Request(
                "SUBSCRIBE",
                self.target,
                [
                    *([("Via", str(via.with_params(branch=new_branch())))] if via else []),
                    ("Max-Forwards", "70"),
                    ("From", str(self.local.with_params(tag=self.local_tag))),
                    ("To", str(NameAddr(self.target))),
                    ("Call-ID", self.call_id),
                    ("CSeq", f"{self.cseq + 1} SUBSCRIBE"),
                    *headers,
                ],
            )
        self.cseq = req.cseq.seq
        self.request = req
        if self.state != "active":
            self.state = "trying"
        return req

    # ---- answers

    def on_response(self, resp: Response, now: float) -> None:
        """The final answer to our SUBSCRIBE (`on_failure` for a timeout)."""
        req = self.request
        if req is None or resp.cseq.seq != req.cseq.seq or resp.call_id != req.call_id:
            return  # an answer to an older SUBSCRIBE
        self.request = None
        if 200 <= resp.status < 300:
            try:
                granted = parse_expires(resp.headers.get("Expires"))
            except SubscriptionError:
                granted = None
            if granted == 0 or (req.headers.get("Expires") or "").strip() == "0":
                if self.state != "terminated":
                    self.state = "terminating"  # the final NOTIFY is still to come
                return
            self.expires_at = now + (self.expires if granted is None else granted)
            if self.dialog is None:
                try:
                    self.dialog = Dialog.uac_from_response(req, resp)
                except Ng911Error:
                    self._ended("2xx without a usable dialog", now, failure=True)
                    return
            if self.state == "trying":
                self.state = "pending"  # active once a NOTIFY says so (§4.1.2.1)
            self.failures = 0
            return
        if resp.status == 423:
            # §4.1.2.1: ask again at once with the notifier's minimum (it only grows, and
            # is bounded by MAX_EXPIRES: no loop)
            try:
                least = parse_expires(resp.headers.get("Min-Expires"))
            except SubscriptionError:
                least = None
            if least is not None and least > self.expires:
                self.expires = least
                self.retry_after = 0.0
        elif resp.status in (503, 500, 486) and resp.headers.get("Retry-After"):
            ra = bounded_int((resp.headers.get("Retry-After") or "").split(";")[0].strip(), 86400)
            self.retry_after = float(ra) if ra is not None else None
        self._ended(f"SUBSCRIBE answered {resp.status}", now, failure=True)

    def on_failure(self, cause: str, now: float) -> None:
        """The SUBSCRIBE timed out or could not be sent."""
        self.request = None
        self._ended(f"SUBSCRIBE failed: {cause}", now, failure=True)

    def _ended(self, why: str, now: float, *, failure: bool = False) -> None:
        self.state = "terminated"
        self.last_reason = why
        self.dialog = None
        if failure:
            self.failures += 1

    def check_notify(self, notify: Request, now: float) -> NotifyCheck:
        """A NOTIFY matched to us (`matches`); raises `SubscriptionError` with the status
        to answer. Creates the dialog when the NOTIFY overtook the 2xx (§4.1.2.4)."""
        event = parse_event(notify.headers.get("Event"))
        if event.package.lower() != self.event.package.lower() or event.id != self.event.id:
            raise SubscriptionError(f"not subscribed to {event}", 489)
        st = parse_subscription_state(notify.headers.get("Subscription-State"))
        if self.dialog is None:
            if self.state not in ("trying", "pending", "active") or self.request is None:
                raise SubscriptionError("subscription already ended", 481)
            try:
                dialog = Dialog.uas_from_request(notify, self.local_tag)
            except DialogError as exc:
                raise SubscriptionError(exc.reason, exc.status) from None
            dialog.local_seq = self.cseq
            dialog.is_uac = True
            self.dialog = dialog
        else:
            try:
                self.dialog.receive_request(notify)
            except DialogError as exc:
                raise SubscriptionError(exc.reason, exc.status) from None
        self.notifies += 1
        if st.state == "terminated":
            self.retry_after = float(st.retry_after) if st.retry_after is not None else None
            quick = st.reason not in NO_QUICK_RETRY
            self._ended(f"terminated by the notifier ({st.reason or 'no reason'})", now)
            if quick and st.retry_after is None:
                self.retry_after = 0.0 if st.reason in ("deactivated", "timeout") else None
            return NotifyCheck(st, True)
        if st.expires is not None:
            self.expires_at = now + st.expires
        if self.state != "terminated":
            self.state = "active" if st.state == "active" else "pending"
        self.failures = 0
        return NotifyCheck(st, False)

    def matches(self, notify: Request) -> bool:
        """Is this NOTIFY for this subscription (Call-ID and our tag, RFC 6665 §4.1.3)?"""
        return notify.call_id == self.call_id and notify.to_addr.tag == self.local_tag

    # ---- timing

    def refresh_in(self, now: float) -> float:
        """Seconds until the refresh: half the grant when short, else 30 s before it ends."""
        left = self.expires_at - now
        return max(0.0, max(left / 2, left - 30.0))

    def retry_in(self) -> float:
        """Seconds until a new subscription after a termination or failure: what the
        notifier asked for, else exponential backoff from `retry_min` to `retry_max`."""
        if self.retry_after is not None:
            ra, self.retry_after = self.retry_after, None
            return min(ra, self.retry_max)
        n = max(0, self.failures - 1)
        return float(min(self.retry_max, self.retry_min * 2.0 ** min(n, 16)))
