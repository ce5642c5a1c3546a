"""Prometheus metrics of a running element: `GET /metrics` on a port of its own.

What Kamailio operators get from `kamcmd stats` and its Prometheus exporters, ng911's
elements serve in the Prometheus text format (the maintained `prometheus_client`):
requests and responses by method and code, transactions, calls by outcome, TLS handshakes
(full/resumed) and connections per peer, the LoST query latency histogram, event-loop lag,
queue lengths, overload state; `ng911 stats` (`ng911.node.stats`) prints them.

Why a collector: the element already counts (plain ints and dicts: `SipElement`,
`TransportStats`, the overload controller, the ACD, the LogSender), and a prometheus
`Counter.inc()` per message would cost the per-message path a lock and a call
(bench/proxy.py measures that path). `ElementCollector.collect` reads those counters when
scraped and yields metric families; the only things measured here are what nothing else
measures: the event loop's lag (a timer, `LoopLag`) and each LoST query's duration (an
observer on the element's LoST client, only while metrics are on).

With `--workers N`, worker i serves PORT + i (each its own counters: one process, one
loop); `ng911 stats` knows and scrapes them all.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ng911.elements.calltaker import CallTaker
from ng911.elements.config import metrics_address
from ng911.elements.esrp import Esrp
from ng911.elements.psap import Psapd
from ng911.elements.runtime import SipElement
from ng911.elements.vsp import VspProxy
from ng911.lost.client import LostClient
from ng911.lost.events import LostQueryEvent
from ng911.net.http1 import Request, Response, RunningServer, serve_http
from ng911.node.build import log_sender

__all__ = [
    "ElementCollector",
    "Histogram",
    "LoopLag",
    "MetricsServer",
    "call_outcome",
    "start_metrics",
]

# seconds: 0.1 ms .. 10 s (a LoST query on loopback is ~1 ms, over a WAN tens)
LOST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
LAG_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
MAX_PEERS = 64  # connections are reported for this many peers; the rest as peer="other"


class Histogram:
    """Fixed buckets filled by `observe` (a bisect and three additions), reported as a
    Prometheus histogram family at scrape time."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        buckets, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.sum)


class LoopLag:
    """The event loop's scheduling delay: a timer every `interval` s, and how late it ran
    (what any ready callback, a received datagram, waits). Overload control samples the
    same for a proxy (`admitting.Gate`); this one runs for every element with metrics."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.histogram = Histogram(LAG_BUCKETS)
        self.last = 0.0
        self.max = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule()

    def _schedule(self) -> None:
        assert self._loop is not None
        at = self._loop.time() + self.interval
        self._timer = self._loop.call_at(at, self._tick, at)

    def _tick(self, expected: float) -> None:
        assert self._loop is not None
        lag = max(0.0, self._loop.time() - expected)
        self.last = lag
        self.max = max(self.max, lag)
        self.histogram.observe(lag)
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class LostTimes:
    """A LoST client observer: each query's duration into a histogram (cached answers
    and failures counted apart)."""

    def __init__(self) -> None:
        self.histogram = Histogram(LOST_BUCKETS)
        self.cached = 0
        self.failed = 0

    def __call__(self, event: Any) -> None:
        if not isinstance(event, LostQueryEvent):
            return
        if event.cached:
            self.cached += 1
            return
        if not event.ok:
            self.failed += 1
        self.histogram.observe(event.duration)


def call_outcome(status: int) -> str:
    """A call's outcome by its final status (0: none came)."""
    if 200 <= status < 300:
        return "answered"
    if status == 487:
        return "cancelled"
    if status in (0, 408):
        return "timeout"
    if status in (486, 600):
        return "busy"
    if 300 <= status < 400:
        return "redirected"
    return "failed"


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(
    family: CounterMetricFamily | GaugeMetricFamily, rows: Iterable[tuple[Sequence[str], float]]
) -> CounterMetricFamily | GaugeMetricFamily:
    for labels, value in rows:
        family.add_metric(list(labels), value)
    return family


class ElementCollector(Collector):
    """Reads one element's counters at scrape time (a prometheus_client custom collector)."""

    def __init__(
        self, el: SipElement, lag: LoopLag | None = None, lost: LostTimes | None = None
    ) -> None:
        self.el = el
        self.lag = lag
        self.lost = lost

    def collect(self) -> Iterator[Metric]:
        el = self.el
        worker = str(el.worker.index) if el.worker is not None else ""
        info = InfoMetricFamily("ng911_element", "the element this process runs")
        info.add_metric([], {"name": el.name, "role": el.role, "fqdn": el.fqdn, "worker": worker})
        yield info
        yield from self._sip()
        yield from self._tls()
        yield from self._load()
        yield from self._role()
        if self.lag is not None:
            yield self.lag.histogram.family(
                "ng911_event_loop_lag_seconds", "how late a periodic timer ran (scheduling delay)"
            )
            yield _gauge("ng911_event_loop_lag_max_seconds", "largest lag seen", self.lag.max)
        if self.lost is not None:
            yield self.lost.histogram.family(
                "ng911_lost_query_seconds", "LoST findService round trips (RFC 5222), uncached"
            )
            yield _counter(
                "ng911_lost_queries_cached", "LoST answers from the cache", self.lost.cached
            )
            yield _counter("ng911_lost_query_failures", "LoST queries failed", self.lost.failed)
            client = getattr(self.el, "lost", None)
            if isinstance(client, LostClient):
                yield _counter(
                    "ng911_lost_answers_reused",
                    "LoST answers byte-identical to one parsed before (its parsed value taken)",
                    client.parsed_reused,
                )

    def _sip(self) -> Iterator[Metric]:
        el, st = self.el, self.el.transport.stats
        req = CounterMetricFamily(
            "ng911_sip_requests", "SIP requests by direction and method", labels=["dir", "method"]
        )
        for d, counts in (("in", st.requests_in), ("out", st.requests_out)):
            for method, n in sorted(counts.items()):
                req.add_metric([d, method], n)
        yield req
        resp = CounterMetricFamily(
            "ng911_sip_responses",
            "SIP responses by direction, CSeq method and status code",
            labels=["dir", "method", "code"],
        )
        for d, rcounts in (("in", st.responses_in), ("out", st.responses_out)):
            for (method, code), n in sorted(rcounts.items()):
                resp.add_metric([d, method, str(code)], n)
        yield resp
        calls = CounterMetricFamily(
            "ng911_calls",
            "calls (initial INVITEs) by outcome and final status; a caller: the calls it placed",
            labels=["outcome", "code"],
        )
        for code, n in sorted(el.call_outcomes.items()):
            calls.add_metric([call_outcome(code), str(code)], n)
        yield calls
        yield _gauge("ng911_transactions", "live SIP transactions", el.transactions)
        yield _labelled(
            CounterMetricFamily(
                "ng911_transactions_started", "SIP transactions started", labels=["side"]
            ),
            ((("server",), el.server_transactions), (("client",), el.client_transactions)),
        )
        yield _gauge("ng911_held_request_bytes", "request text held by transactions", el.held_bytes)
        yield _counter("ng911_cpu_seconds", "thread CPU time in handlers", el.cpu_seconds)
        yield _counter("ng911_handler_errors", "handler and task failures", el.errors)
        for f in dataclasses.fields(st):  # not vars(): a compiled dataclass has no __dict__
            name, value = f.name, getattr(st, f.name)
            if isinstance(value, int):
                yield _counter(f"ng911_transport_{name}", f"transport: {name}", value)
        drops = el.transport.udp_kernel_drops()
        yield _counter("ng911_udp_kernel_drops", "datagrams the kernel dropped (rcvbuf)", drops)
        steering = el.transport.steering
        if steering is not None:  # a worker of several, steering by Call-ID (net/steer.py)
            yield _labelled(
                CounterMetricFamily(
                    "ng911_udp_steering",
                    "UDP requests handed to the worker owning their Call-ID (handed_over), "
                    "taken from a sibling (taken_over), lost because the owner's inbox was "
                    "full (dropped), unreadable inbox datagrams (bad)",
                    labels=["what"],
                ),
                (((what,), n) for what, n in steering.stats().items()),
            )

    def _tls(self) -> Iterator[Metric]:
        st = self.el.transport.stats
        hs = CounterMetricFamily(
            "ng911_tls_handshakes", "TLS handshakes completed", labels=["role", "kind"]
        )
        for (role, resumed), n in sorted(st.tls_handshakes.items()):
            hs.add_metric([role, "resumed" if resumed else "full"], n)
        yield hs
        peers = sorted(self.el.transport.peer_connections().items(), key=lambda kv: -kv[1])
        conns = GaugeMetricFamily(
            "ng911_connections", "open TCP/TLS connections per peer", labels=["transport", "peer"]
        )
        other: dict[str, int] = {}
        for i, ((transport, peer), n) in enumerate(peers):
            if i < MAX_PEERS:
                conns.add_metric([transport, peer], n)
            else:
                other[transport] = other.get(transport, 0) + n
        for transport, n in sorted(other.items()):
            conns.add_metric([transport, "other"], n)
        yield conns

    def _load(self) -> Iterator[Metric]:
        el = self.el
        adm = el.admission
        ctl = adm.controller
        yield _gauge("ng911_overload_enabled", "overload control on", float(el.gate.enabled))
        yield _gauge("ng911_overload_shedding", "1 while shedding load", float(ctl.overloaded))
        yield _gauge("ng911_overload_shed_fraction", "share of new requests refused", ctl.shed)
        yield _gauge("ng911_overload_lag_seconds", "event-loop lag, last overload sample", ctl.lag)
        yield _gauge("ng911_udp_backlog", "datagrams queued, last overload sample", ctl.backlog)
        yield _gauge(
            "ng911_udp_queue_wait_seconds",
            "how long the head of a UDP queue that never emptied had waited, last sample",
            ctl.queue_wait or 0.0,
        )
        yield _labelled(
            CounterMetricFamily(
                "ng911_overload_refused", "requests refused 503 by overload", labels=["priority"]
            ),
            (
                (("normal",), ctl.refused - ctl.refused_priority),
                (("emergency",), ctl.refused_priority),
            ),
        )
        yield _counter("ng911_source_limited", "requests over a source's rate", adm.sources.limited)
        queues = GaugeMetricFamily("ng911_queue_length", "items waiting", labels=["queue"])
        if isinstance(el, Psapd):
            queues.add_metric(["acd"], len(el.acd.queue))
        sender = log_sender(el)
        if sender is not None:
            queues.add_metric(["logger"], sender.pending)
        yield queues
        yield _gauge("ng911_state_subscriptions", "i3 state subscribers", len(el.events.notifier))
        if sender is not None:
            yield _labelled(
                CounterMetricFamily("ng911_logevents", "i3 LogEvents by result", labels=["result"]),
                (((k,), v) for k, v in sender.stats().items() if k != "pending"),
            )

    def _role(self) -> Iterator[Metric]:
        el = self.el
        if isinstance(el, Esrp):
            yield _labelled(
                CounterMetricFamily("ng911_esrp_routed", "calls routed, by how", labels=["how"]),
                (((k,), v) for k, v in el.routed.items()),
            )
        if isinstance(el, VspProxy):
            n = el.emergency_calls
            yield _counter("ng911_vsp_emergency_calls", "emergency calls recognised", n)
        if isinstance(el, CallTaker):
            yield _labelled(
                CounterMetricFamily("ng911_calltaker_calls", "calls offered...", labels=["what"]),
                (
                    (("offered",), el.offered),
                    (("answered",), el.answered),
                    (("cancelled",), el.cancelled),
                ),
            )


class MetricsServer:
    """`/metrics` of one element (or process) served over HTTP, with its lag timer."""

    def __init__(self, registry: CollectorRegistry, lag: LoopLag, running: RunningServer) -> None:
        self.registry = registry
        self.lag = lag
        self.running = running

    @property
    def url(self) -> str:
        return self.running.url

    async def close(self) -> None:
        self.lag.stop()
        await self.running.close()


async def start_metrics(spec: str, el: SipElement | None = None) -> MetricsServer:
    """Serve `/metrics` at `spec` ("HOST:PORT", `ElementConfig.metrics`): the element's
    counters (when `el` is given), event-loop lag and the process's CPU and memory.
    A bad spec is a `ConfigError`, a port in use an `OSError` (one line, exit 2)."""
    host, port = metrics_address(spec)
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    lag = LoopLag()
    collector: Collector
    if el is not None:
        lost = None
        client = getattr(el, "lost", None)
        if isinstance(client, LostClient):
            lost = LostTimes()
            client.observers.append(lost)
        collector = ElementCollector(el, lag, lost)
    else:
        collector = _LagOnly(lag)
    registry.register(collector)

    lag.start()
    try:
        running = await serve_http(
            _MetricsHandler(registry), host, port, path="/metrics", prefix="metrics"
        )
    except BaseException:
        lag.stop()
        raise
    return MetricsServer(registry, lag, running)


class _MetricsHandler:
    """`GET /metrics` on `ng911.net.http1` (its default limits: a scraper holds one
    keep-alive connection); the registry is read at each scrape."""

    _TYPE = (("Content-Type", CONTENT_TYPE_LATEST),)
    _TEXT = (("Content-Type", "text/plain; charset=utf-8"),)

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def __call__(self, request: Request) -> Response:
        if request.path != "/metrics":
            return Response(404, b"404: Not Found\n", self._TEXT)
        if request.method != "GET":
            return Response(405, b"405: Method Not Allowed\n", (*self._TEXT, ("Allow", "GET")))
        return Response(200, generate_latest(self.registry), self._TYPE)


class _LagOnly(Collector):
    """The collector of a process without a SIP element (LoST, the Logging Service)."""

    def __init__(self, lag: LoopLag) -> None:
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        yield self.lag.histogram.family(
            "ng911_event_loop_lag_seconds", "how late a periodic timer ran (scheduling delay)"
        )
        yield _gauge("ng911_event_loop_lag_max_seconds", "largest lag seen", self.lag.max)
