"""An element's i3 state notifications (NENA-STA-010.3 §2.4) over RFC 6665 SUBSCRIBE/NOTIFY.

Why in the common runtime: every i3 element must answer SUBSCRIBEs to its own
emergency-ElementState and emergency-SecurityPosture, and the rules (RFC 6665, as
`ng911.sip.subscription` decides them) do not depend on what the element is. `SipElement`
holds one `StateEvents` (`element.events`) and hands it the SUBSCRIBEs and NOTIFYs addressed
to the element itself; what the element publishes is its `state_packages()` and
`state_body(package)` (psapd adds QueueState and ServiceState).

Notifier: the `Notifier` core answers; this glue sends the immediate NOTIFY after the 2xx,
coalesces changes (`changed(package)`: one NOTIFY per subscriber per `notify_interval`, and
none when the body did not change), keeps one NOTIFY in flight per subscription, ends
subscriptions that were not refreshed (one timer, at the next expiry), and sends final
NOTIFYs when the element closes.

Subscriber: `subscribe(uri, package, on_state)` keeps a subscription up for good: refreshed
before it runs out, started again (new dialog) after it ends or fails, with backoff. Each
NOTIFY's JSON body is parsed into the package's i3 type and handed to `on_state` (None when
the subscription ended: the state is unknown again); a body that cannot be read is answered
400 (415 for another media type) and logged, never raised.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ng911.elements.config import StateConfig
from ng911.elements.contexts import ClientCtx, ServerCtx
from ng911.elements.i3state import ElementState, QueueState, SecurityPosture, ServiceState
from ng911.errors import Ng911Error
from ng911.sip.body import media_type
from ng911.sip.headers import new_branch
from ng911.sip.message import Request, Response
from ng911.sip.subscription import (
    ClientSubscription,
    EventHeader,
    Notifier,
    NotifierPolicy,
    Subscription,
    SubscriptionError,
)
from ng911.sip.uri import URI, NameAddr, SipURI, parse_uri

if TYPE_CHECKING:
    from ng911.elements.runtime import SipElement

__all__ = ["CONTENT_TYPE", "PARSERS", "OnState", "StateEvents", "parse_state"]

CONTENT_TYPE = "application/json"
MAX_BODY = 16384  # an i3 state body is a few hundred bytes
PARSERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "emergency-ElementState": ElementState.from_json,
    "emergency-ServiceState": ServiceState.from_json,
    "emergency-QueueState": QueueState.from_json,
    "emergency-SecurityPosture": SecurityPosture.from_json,
}
# called with the state a NOTIFY carried, or None when the subscription ended
OnState = Callable[[Any], None]


def parse_state(package: str, content_type: str | None, body: bytes) -> Any:
    """A NOTIFY body as the package's i3 type; `SubscriptionError` (415/400) when it is not
    JSON or not the package's object."""
    kind = media_type(content_type or "")
    if kind != CONTENT_TYPE and not (kind.startswith("application/") and kind.endswith("+json")):
        raise SubscriptionError(f"body is {kind or 'missing'}, not {CONTENT_TYPE}", 415)
    if len(body) > MAX_BODY:
        raise SubscriptionError("state body too large", 400)
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return PARSERS[package](data)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise SubscriptionError(f"malformed {package} body: {type(exc).__name__}", 400) from None


def encode(value: Any) -> bytes:
    return json.dumps(value.to_json(), separators=(",", ":")).encode()


class StateEvents:
    """The notifier and the subscriber of one element (see the module docstring)."""

    def __init__(self, element: SipElement, config: StateConfig) -> None:
        self.element = element
        self.config = config
        self.notifier = Notifier(
            NotifierPolicy(
                packages=element.state_packages(),
                content_type=CONTENT_TYPE,
                default_expires=config.default_expires,
                min_expires=config.min_expires,
                max_expires=config.max_expires,
                max_subscriptions=config.max_subscriptions,
                max_per_source=config.max_per_source,
                retry_after=config.retry_after,
            )
        )
        self._dirty: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._sweep: tuple[float, asyncio.TimerHandle] | None = None
        # subscriber side
        self.held: dict[tuple[str, str], ClientSubscription] = {}  # (uri, package) -> sub
        self._handlers: dict[tuple[str, str], OnState] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._closed = False

    # ------------------------------------------------------------------ dispatch

    def handles(self, req: Request) -> bool:
        """Is this SUBSCRIBE/NOTIFY ours to answer (addressed to this element, not one a
        proxy passes on)? NOTIFYs of our own subscriptions always are."""
        if req.method == "NOTIFY" and self._held_for(req) is not None:
            return True
        return "Route" not in req.headers and self.element.is_own(req.uri)

    def on_request(self, ctx: ServerCtx) -> None:
        if ctx.request.method == "SUBSCRIBE":
            self._on_subscribe(ctx)
        else:
            self._on_notify(ctx)

    # ------------------------------------------------------------------ notifier

    def _on_subscribe(self, ctx: ServerCtx) -> None:
        el, req = self.element, ctx.request
        now = el.loop.time()
        secure = isinstance(req.uri, SipURI) and req.uri.secure
        contact = el.own_uri(ctx.source.transport, lr=False, sips=secure)
        answer = self.notifier.on_subscribe(
            req,
            ctx.source.address.host,
            now,
            local_target=contact,
            over_tls=ctx.source.transport == "tls",
        )
        extra = list(answer.headers)
        if 200 <= answer.status < 300:
            extra.append(("Contact", str(NameAddr(contact))))
        ctx.reply(answer.status, answer.reason, to_tag=answer.to_tag, extra=extra)
        sub = answer.subscription
        if sub is None:
            el.log(
                "subscribe_refused",
                call_id=req.call_id,
                hop=str(ctx.source.address),
                event=req.headers.get("Event"),
                status=answer.status,
                subscriptions=len(self.notifier),
            )
            return
        el.log(
            "subscribed" if sub.terminated is None else "unsubscribed",
            call_id=req.call_id,
            hop=str(ctx.source.address),
            event=str(sub.event),
            expires=dict(answer.headers).get("Expires"),
        )
        self._send_notify(sub)
        self._arm_sweep()

    def changed(self, package: str | None = None) -> None:
        """The element's state for `package` (None: all) may have changed: NOTIFY the
        subscribers whose last body differs, within `notify_interval` (coalesced)."""
        self._dirty.update(self.notifier.policy.packages if package is None else (package,))
        if self._flush is None and not self._closed and len(self.notifier):
            self._flush = self.element.call_later(self.config.notify_interval, self._flush_now)

    def _flush_now(self) -> None:
        self._flush = None
        dirty, self._dirty = self._dirty, set()
        for package in dirty:
            subs = self.notifier.subscriptions(package)
            if not subs:
                continue
            body = self._body(package)
            for sub in subs:
                if body is not None and body != sub.last_body:
                    self._send_notify(sub, body)

    def _body(self, package: str) -> bytes | None:
        value = self.element.state_body(package)
        return None if value is None else encode(value)

    def _send_notify(self, sub: Subscription, body: bytes | None = None) -> None:
        """One NOTIFY for `sub` now, or once the one in flight is answered."""
        if sub.in_flight:
            sub.dirty = True
            return
        el = self.element
        if body is None:
            body = self._body(sub.event.package) or b"{}"
        try:
            dest, name = el.locate(sub.dialog.next_hop())
            via = el.via_value(dest.transport, new_branch())
            notify = self.notifier.notify(sub, body, el.loop.time(), via=via)
        except Ng911Error as exc:
            el.log("notify_failed", call_id=sub.dialog.call_id, error=str(exc)[:200])
            self.notifier.notify_done(sub, None)
            return

        def done(status: int | None) -> None:
            if status is None or status >= 300:
                el.log(
                    "notify_refused", call_id=notify.call_id, event=str(sub.event), status=status
                )
            if self.notifier.notify_done(sub, status):
                self._send_notify(sub)

        def on_response(ctx: ClientCtx, resp: Response) -> None:
            if resp.status >= 200:
                done(resp.status)

        el.send_request(
            notify,
            dest,
            server_name=name,
            on_response=on_response,
            on_failure=lambda ctx, status, cause: done(None),
        )

    def _arm_sweep(self) -> None:
        """One timer, at the next subscription's expiry."""
        at = self.notifier.next_expiry()
        if at is None or self._closed:
            return
        if self._sweep is not None:
            if self._sweep[0] <= at:
                return
            self._sweep[1].cancel()
        delay = max(0.0, at - self.element.loop.time()) + 0.01
        self._sweep = (at, self.element.call_later(delay, self._expire))

    def _expire(self) -> None:
        self._sweep = None
        for sub in self.notifier.expired(self.element.loop.time()):
            self.element.log(
                "subscription_expired", call_id=sub.dialog.call_id, event=str(sub.event)
            )
            self._send_notify(sub)
        self._arm_sweep()

    # ------------------------------------------------------------------ subscriber

    def subscribe(self, uri: str, package: str, on_state: OnState) -> ClientSubscription | None:
        """Hold a subscription to `package` at `uri` from now on (refreshed, and started
        again whenever it ends). None when `uri` is no SIP URI."""
        key = (uri, package)
        if key in self.held:
            self._handlers[key] = on_state
            return self.held[key]
        try:
            target = parse_uri(uri)
        except Ng911Error:
            return None
        if not isinstance(target, SipURI):
            return None
        c = self.config
        el = self.element
        local = NameAddr(SipURI("sip", "state", None, el.fqdn))
        sub = ClientSubscription(
            target,
            local,
            EventHeader(package),
            expires=c.subscribe_expires,
            retry_min=c.retry_min,
            retry_max=c.retry_max,
        )
        self.held[key] = sub
        self._handlers[key] = on_state
        self._send_subscribe(key)
        return sub

    def _held_for(self, req: Request) -> tuple[str, str] | None:
        tag = req.to_addr.tag
        if tag is None:
            return None
        for key, sub in self.held.items():
            if sub.local_tag == tag and sub.call_id == req.call_id:
                return key
        return None

    def _send_subscribe(self, key: tuple[str, str], expires: int | None = None) -> None:
        self._cancel_timer(key)
        sub = self.held.get(key)
        if sub is None or (self._closed and expires != 0):
            return  # closing: only the unsubscription goes out
        el = self.element
        now = el.loop.time()
        try:
            hop: URI = sub.dialog.next_hop() if sub.dialog is not None else sub.target
            dest, name = el.locate(hop)
            via = el.via_value(dest.transport, new_branch())
            secure = isinstance(sub.target, SipURI) and sub.target.secure
            contact = NameAddr(el.own_uri(dest.transport, user="state", lr=False, sips=secure))
            req = sub.subscribe(contact=contact, via=via, accept=CONTENT_TYPE, expires=expires)
        except Ng911Error as exc:
            sub.on_failure(str(exc)[:200], now)
            self._after(key, sub)
            return

        def on_response(ctx: ClientCtx, resp: Response) -> None:
            if resp.status < 200:
                return
            sub.on_response(resp, el.loop.time())
            if resp.status >= 300:
                el.log("subscribe_failed", peer=key[0], event=key[1], status=resp.status)
            self._after(key, sub)

        def on_failure(ctx: ClientCtx, status: int, cause: str) -> None:
            sub.on_failure(cause, el.loop.time())
            el.log("subscribe_failed", peer=key[0], event=key[1], status=status, error=cause)
            self._after(key, sub)

        el.send_request(req, dest, server_name=name, on_response=on_response, on_failure=on_failure)

    def _after(self, key: tuple[str, str], sub: ClientSubscription) -> None:
        """Schedule what comes next: a refresh of a standing subscription, a new one after
        an ended or failed one (the state is unknown meanwhile)."""
        if self._closed or sub.request is not None:
            return
        now = self.element.loop.time()
        if sub.state == "terminated":
            self._deliver(key, None)
            delay = sub.retry_in()
        elif sub.state in ("active", "pending"):
            delay = sub.refresh_in(now)
        else:
            return
        self._cancel_timer(key)
        self._timers[key] = self.element.call_later(delay, self._send_subscribe, key)

    def _cancel_timer(self, key: tuple[str, str]) -> None:
        t = self._timers.pop(key, None)
        if t is not None:
            t.cancel()

    def _deliver(self, key: tuple[str, str], state: Any) -> None:
        handler = self._handlers.get(key)
        if handler is not None:
            handler(state)

    def _on_notify(self, ctx: ServerCtx) -> None:
        el, req = self.element, ctx.request
        key = self._held_for(req)
        sub = self.held.get(key) if key is not None else None
        if key is None or sub is None:
            ctx.reply(481, "Subscription Does Not Exist")
            return
        now = el.loop.time()
        try:
            check = sub.check_notify(req, now)
        except SubscriptionError as exc:
            el.log(
                "notify_refused",
                call_id=req.call_id,
                peer=key[0],
                status=exc.status,
                error=exc.reason,
            )
            ctx.reply(exc.status, exc.reason)
            return
        state: Any = None
        status, reason = 200, None
        if req.body or not check.terminated:
            try:
                state = parse_state(key[1], req.headers.get("Content-Type"), req.body)
            except SubscriptionError as exc:
                status, reason = exc.status, exc.reason
                el.log(
                    "state_body_refused",
                    call_id=req.call_id,
                    peer=key[0],
                    event=key[1],
                    status=status,
                    error=exc.reason,
                )
        ctx.reply(status, reason)
        if state is not None:
            self._deliver(key, state)
        if check.terminated:
            el.log("subscription_terminated", peer=key[0], event=key[1], reason=check.state.reason)
        if sub.request is None:
            self._after(key, sub)

    # ------------------------------------------------------------------ closing

    async def close(self, wait: float = 1.0) -> None:
        """Unsubscribe what we hold (Expires: 0, RFC 6665 §4.1.2.3) and wait, at most
        `wait` s, for the answers and the final NOTIFYs, so that no notifier is left
        sending to a closed element; then final NOTIFYs (`terminated;reason=noresource`,
        with the last state: the element says GoingDown) to our own subscribers, and wait
        (at most `wait` s again) for their answers."""
        self._closed = True
        for key in list(self._timers):
            self._cancel_timer(key)
        leaving = [
            k for k, s in self.held.items() if s.dialog is not None and s.state != "terminated"
        ]
        for key in leaving:
            self._send_subscribe(key, expires=0)
        loop = self.element.loop
        end = loop.time() + wait
        while loop.time() < end and any(
            self.held[k].state != "terminated" or self.held[k].request is not None for k in leaving
        ):
            await asyncio.sleep(0.01)
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        final = self.notifier.terminate_all("noresource")
        for sub in final:
            sub.in_flight = False
            self._send_notify(sub)
        end = loop.time() + wait
        while loop.time() < end and any(s.in_flight for s in final):
            await asyncio.sleep(0.01)  # their answers, so no 200 meets a closed element
        if self._sweep is not None:
            self._sweep[1].cancel()
            self._sweep = None
