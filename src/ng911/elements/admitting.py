"""At the element's door: overload control, per-source limits, and TLS peer authorization.

`ng911.elements.overload` decides (pure policy: priorities, the lag controller, token
buckets); this is the element's side of it: classify a new request, ask, answer a refusal
with a stateless 503 (RFC 3261 §21.5.4, RFC 7339 `oc` Via parameters), sample the event
loop's lag on a timer, and give freed memory back after a flood. A component the element
holds (`SipElement.gate`), so the receive path reads `if gate.enabled and not gate.admit()`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ng911.elements.addressing import branch_rng
from ng911.elements.errors import ElementError
from ng911.elements.overload import Admission, overload_via_params
from ng911.errors import Ng911Error
from ng911.net.address import Source
from ng911.pki.tls import matches_domain
from ng911.sip.headers import new_tag
from ng911.sip.message import Request, make_response
from ng911.sip.priority import classify
from ng911.sip.transaction import server_key

if TYPE_CHECKING:
    from ng911.elements.runtime import SipElement

__all__ = ["Gate", "check_peer"]


class Gate:
    """Overload control of one element (on when the element `sheds_load` and the config
    enables it; a UA serves its own few dialogs and has nothing to shed)."""

    def __init__(self, element: SipElement) -> None:
        self.element = element
        config = element.config.overload
        self.admission = Admission(config, element.hosts.values(), branch_rng.random)
        self.enabled = element.sheds_load and config.enabled
        self._lag_timer: asyncio.TimerHandle | None = None
        self._arrived = False  # a request came since the last lag sample
        self._resting = False  # the sampler is on `idle_sample_interval`
        self._table_high = 0  # most transactions since memory was last released
        self._trim_check = 0.0

    def start(self) -> None:
        if self.enabled:
            self._sample_lag(self.element.loop.time())

    def stop(self) -> None:
        self._resting = False
        if self._lag_timer is not None:
            self._lag_timer.cancel()
            self._lag_timer = None

    def _wake(self) -> None:
        """The first request after a quiet spell: back to sampling every `sample_interval`,
        so a flood that starts from idle is seen as soon as one that starts under load."""
        self._resting = False
        if self._lag_timer is None:  # stopped
            return
        self._lag_timer.cancel()
        self._arm(self.element.loop.time() + self.element.config.overload.sample_interval)

    def _arm(self, at: float) -> None:
        """The next lag sample at loop time `at` (its lag is how late it runs after `at`)."""
        self._lag_timer = self.element.loop.call_at(at, self._sample_lag, at)

    def admit(self, req: Request, source: Source) -> bool:
        """Overload control and per-source limits before a new request costs a transaction;
        False when it was refused or dropped."""
        if self._resting:
            self._wake()
        self._arrived = True
        el = self.element
        priority = classify(
            req.method,
            str(req.uri),
            req.to_addr.tag is not None,
            req.headers.get_all("Resource-Priority"),
            recognised_emergency=req.method == "INVITE" and el.recognises_emergency(req),
        )
        d = self.admission.decide(
            priority,
            source.address.host,
            authenticated=bool(source.peer_identities),
            reliable=source.address.reliable,
            transactions=el.transactions,
            now=el.loop.time(),
            held_bytes=el.held_bytes,
        )
        if d.admit:
            return True
        if d.answer and req.method != "ACK":
            self._refuse(req, source, d.retry_after)
        return False

    def _refuse(self, req: Request, source: Source, retry_after: int) -> None:
        """503 + Retry-After (RFC 3261 §21.5.4), without a transaction: under overload a
        refusal must cost far less than the work it saves."""
        adm = self.admission
        try:
            resp = make_response(
                req,
                503,
                "Service Unavailable",
                to_tag=new_tag() if req.to_addr.tag is None else None,
                extra=(("Retry-After", str(adm.spread(retry_after))),),
            )
            via = req.top_via
            if via.param("oc") is not None:  # RFC 7339 §5.1: the client supports oc
                params = overload_via_params(adm.controller.shed, adm.controller.seq)
                resp.headers.replace_first("Via", str(via.with_params(**params)))
            if req.method == "INVITE":
                adm.refused_keys.add(server_key(req))
            self.element.send_stateless(resp, source.address, connection_id=source.connection_id)
        except Ng911Error as exc:
            self.element.log("refuse_failed", call_id=req.headers.get("Call-ID"), error=str(exc))

    def _sample_lag(self, expected: float) -> None:
        """How late this periodic timer runs is how long any ready callback (a received
        datagram) waits: the event loop's lag, the overload signal.

        Every `sample_interval` (20 ms) while requests come; every `idle_sample_interval`
        when none came since the last sample and nothing is shed (`admit` wakes it): an idle
        element would otherwise wake 50 times a second for nothing, which is most of what
        a chain of idle element processes costs its host."""
        el = self.element
        now = el.loop.time()
        live = el.transactions
        backlog, wait = el.transport.udp_backlog()
        for what, fields in self.admission.sample(now - expected, backlog, live, now, wait):
            el.log.notice(what, **fields)  # an operator sees these even under --quiet
            if what in ("overload", "overload_end"):
                el.load_changed()  # ElementState / ServiceState Overloaded (i3 state)
        self._table_high = max(self._table_high, live)
        if now >= self._trim_check:
            # every 5 s: when the table has shrunk well below its high-water mark (a flood
            # or a busy hour is over), give the freed memory back (`release_memory`: the
            # process's malloc_trim, set by `ng911.node.build`)
            self._trim_check = now + 5.0
            if self._table_high > 2 * live + 1000:
                self._table_high = live
                if el.release_memory is not None and el.release_memory():
                    el.log("memory_released", transactions=live)
        config = el.config.overload
        if self._arrived or backlog or self.admission.controller.overloaded:
            self._arrived = False
            nxt = now + config.sample_interval
        else:
            self._resting = True
            nxt = now + config.idle_sample_interval
        self._arm(nxt)


def check_peer(expected: str, source: Source) -> None:
    """`tls.expected_peer`: requests over TLS only from peers whose certificate names
    one of these SIP domains (RFC 5922 §7.3: a proxy authorises the proxy it talks to)."""
    if not expected or source.transport != "tls":
        return
    wanted = [d.strip() for d in expected.split(",") if d.strip()]
    if not any(matches_domain(source.peer_identities, d) for d in wanted):
        who = ", ".join(sorted(source.peer_identities)) or "no certificate"
        raise ElementError(403, f"TLS peer {who} is not {expected}")
