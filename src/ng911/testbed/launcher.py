"""Start a planned chain in this process: relays, LoST, the logger, then the elements in order.

What runs and where comes from the plan (`ng911.testbed.plan`): addresses, certificates,
host tables, element configurations, failures injected on purpose. This module only starts
it: the impairment relays, the LoST server (unless `lost_down`), the i3 Logging Service
(unless off or `logger_down`), then every element that is not `down`, in the plan's order
(PSAPs, their call takers, who REGISTER, the ESRP, the VSP, the caller, who REGISTERs).
Closing is the reverse: the caller first, every element through `node.build.close_element`
(its queued LogEvents drain to the logger), then LoST, the logger last. `open_chain` is the
short way used by the element tests and the benchmarks: the packaged NYC topology (a preset)
under a scenario, on a fresh directory.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ng911.elements.calltaker import CallTaker
from ng911.elements.config import EsrpConfig
from ng911.elements.esrp import Esrp
from ng911.elements.psap import Psapd
from ng911.elements.runtime import SipElement
from ng911.elements.ua import Caller, CallRecord
from ng911.elements.vsp import VspProxy
from ng911.i3log.sender import LogSender
from ng911.lost.client import LostClient
from ng911.net.http1 import RunningServer
from ng911.node import build
from ng911.node.metrics import MetricsServer, start_metrics
from ng911.node.serve import start_logger, start_lost
from ng911.testbed.impair import HopRelay
from ng911.testbed.peers import Peers, start_kamailios
from ng911.testbed.plan import STOP_WAVES, ChainOptions, ChainPlan, on_a_free_block
from ng911.testbed.scenarios import Scenario, get_scenario
from ng911.testbed.topology import Topology, load_topology

Observer = Callable[[Any], None]
DRAIN = 5.0  # s each element's LogSender may take at close to send what it still queues
DEFERRED_DRAIN = 120.0  # s for all of them together to send a deferred run's LogEvents


@dataclass
class RunningChain:
    """A chain running in this process: its plan, its elements by host name, LoST."""

    plan: ChainPlan
    caller: Caller
    elements: dict[str, SipElement]
    lost_server: RunningServer | None
    lost_client: LostClient
    relays: list[HopRelay] = field(default_factory=list)
    logger_server: RunningServer | None = None  # None: no logger, or `logger_down`
    senders: dict[str, LogSender] = field(default_factory=dict)  # element → its LogSender
    claim: socket.socket | None = None
    errors: list[str] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)  # every network event (`keep_events`)
    tmp: tempfile.TemporaryDirectory[str] | None = None  # `open_chain`'s own directory
    peers: Peers = field(default_factory=lambda: Peers([]))  # Kamailio hosts (testbed.peers)
    # host name → its /metrics server (`ChainOptions.metrics`; `ng911 stats` scrapes them)
    metrics: dict[str, MetricsServer] = field(default_factory=dict)

    @property
    def topology(self) -> Topology:
        return self.plan.topology

    @property
    def opts(self) -> ChainOptions:
        return self.plan.options

    @property
    def addresses(self) -> dict[str, str]:
        return self.plan.addresses

    @property
    def keylog(self) -> Path:
        return self.plan.keylog

    @property
    def ca_path(self) -> Path:
        return self.plan.pki.ca.cert_path

    @property
    def vsp(self) -> VspProxy:
        el = self.elements[self.topology.one("vsp").name]
        assert isinstance(el, VspProxy)
        return el

    @property
    def esrp(self) -> Esrp:
        el = self.elements[self.topology.one("esrp").name]
        assert isinstance(el, Esrp)
        return el

    @property
    def psaps(self) -> dict[str, Psapd]:
        """PSAP host name → its running psapd (a `down` one is absent)."""
        return {n: el for n, el in self.elements.items() if isinstance(el, Psapd)}

    @property
    def takers(self) -> dict[str, list[CallTaker]]:
        """PSAP host name → its running call takers."""
        out: dict[str, list[CallTaker]] = {p.name: [] for p in self.topology.by_role("psap")}
        for h in self.topology.by_role("calltaker"):
            el = self.elements.get(h.name)
            if isinstance(el, CallTaker):
                out[h.psap or ""].append(el)
        return out

    def taker_of(self, record: CallRecord) -> CallTaker | None:
        """The call taker that answered a call (by the 200's Contact)."""
        for el in self.elements.values():
            if isinstance(el, CallTaker) and record.answered_by and el.fqdn in record.answered_by:
                return el
        return None

    def psap_of(self, record: CallRecord) -> str | None:
        """The PSAP host whose call taker answered a call."""
        t = self.taker_of(record)
        return None if t is None else self.topology.host(t.name).psap

    async def place_call(self, lat: float, lon: float, **kw: Any) -> CallRecord:
        """One call from the caller at (lat, lon); its record once it is over (or answered,
        with `wait=False`; see `Caller.place_call`). The caller hangs up after the plan's
        `hangup_after` unless told otherwise."""
        kw.setdefault("timeout", self.opts.answer_timeout + 5.0)
        return await self.caller.place_call(lat, lon, **kw)

    def cpu_seconds(self) -> dict[str, float]:
        return {name: el.cpu_seconds for name, el in self.elements.items()} | (
            self.peers.cpu_seconds()
        )

    @property
    def logevents_store(self) -> Path | None:
        """The logger's SQLite store (None without a logger)."""
        return self.plan.logger.store if self.plan.logger is not None else None

    def logger_stats(self) -> dict[str, dict[str, int]]:
        """Each logging element's LogSender counters (sent, failed, dropped...), also once
        the chain is closed."""
        return {name: sender.stats() for name, sender in self.senders.items()}

    async def _close_server(self, label: str, server: RunningServer | None) -> None:
        if server is None:
            return
        try:
            await server.close()
        except Exception as exc:
            self.errors.append(f"closing {label}: {type(exc).__name__}: {exc}")

    async def flush_logs(self, timeout: float = DRAIN) -> bool:
        """Wait (bounded) until every element's queued LogEvents reached the logger (or
        failed): True when they all did. The chain keeps running; deferred senders
        (`logger_defer`) send from now on."""
        done = await asyncio.gather(*(s.flush(timeout) for s in self.senders.values()))
        return all(done)

    async def close(self) -> None:
        """The elements in `STOP_WAVES` order, as element processes stop (the caller; call
        takers and the ESRP, who send on their own; then the PSAPs and the VSP they send
        to), LoST, Kamailio peers; then all their
        LogSenders at once (`node.build.close_log_sender`: what they queued, deferred ones
        all of it, gets `DRAIN`, or `DEFERRED_DRAIN` s; none with `logger_down`), the
        logger, relays. Closing the SIP side first keeps the chain's life (its pings,
        keep-alives) no longer than without a logger."""
        drain = 0.0 if self.opts.logger_down else DRAIN
        if self.opts.logger_defer and not self.opts.logger_down:
            drain = DEFERRED_DRAIN
        wave = {role: i for i, roles in enumerate(STOP_WAVES) for role in roles}
        order = sorted(self.elements, key=lambda n: wave.get(self.plan.role(n), len(wave)))
        for name, m in self.metrics.items():
            try:
                await m.close()
            except Exception as exc:
                self.errors.append(f"closing {name}'s /metrics: {type(exc).__name__}: {exc}")
        for name in order:
            try:
                await self.elements[name].close()
            except Exception as exc:  # keep closing the others
                self.errors.append(f"closing {name}: {type(exc).__name__}: {exc}")
        try:
            await self.peers.close()
        except Exception as exc:
            self.errors.append(f"closing Kamailio: {type(exc).__name__}: {exc}")
        await self._close_server("LoST", self.lost_server)
        drains = [build.close_log_sender(self.elements[n], drain) for n in order]
        done = await asyncio.gather(*drains, return_exceptions=True)
        for name, res in zip(order, done, strict=True):
            if isinstance(res, Exception):
                self.errors.append(f"closing {name}'s LogSender: {type(res).__name__}: {res}")
        pending = sum(s.pending for s in self.senders.values())
        if pending and self.logger_server is not None:
            self.errors.append(f"{pending} LogEvents still queued after {drain:g} s")
        await self._close_server("the logger", self.logger_server)
        for relay in self.relays:
            try:
                await relay.close()
            except Exception as exc:
                self.errors.append(f"closing relay {relay.name}: {type(exc).__name__}: {exc}")
        if self.claim is not None:
            self.claim.close()
        if self.tmp is not None:
            self.tmp.cleanup()


async def start_chain(
    topo: Topology,
    work: Path,
    *,
    observers: Sequence[Observer] = (),
    opts: ChainOptions | None = None,
    block: int | None = None,
    attempts: int = 8,
) -> RunningChain:
    """Plan and start every host of `topo` (its scenario transports applied) under `work`.

    Tries up to `attempts` loopback blocks when the well-known ports of one are taken.
    """

    async def start(plan: ChainPlan, claim: socket.socket | None) -> RunningChain:
        chain = await start_plan(plan, observers=observers)
        chain.claim = claim
        return chain

    opts = opts or ChainOptions()
    return await on_a_free_block(topo, work, opts, start, attempts=attempts, block=block)


async def start_plan(plan: ChainPlan, *, observers: Sequence[Observer] = ()) -> RunningChain:
    """Start what `plan` says, in its order; on any failure stop what started and re-raise."""
    opts = plan.options
    events: list[Any] = []
    obs: list[Observer] = [events.append] if opts.keep_events else []
    obs.extend(observers)
    relays = [HopRelay(**r.kwargs(), observers=obs) for r in plan.relays]
    started: list[SipElement] = []
    senders: dict[str, LogSender] = {}
    lost_server: RunningServer | None = None
    peers = Peers([])
    logger_server: RunningServer | None = None
    metrics: dict[str, MetricsServer] = {}
    try:
        for relay in relays:
            await relay.start()
        if not opts.lost_down:
            lost_server = await start_lost(plan.lost.to_dict())
        if plan.logger is not None and plan.logger_runs:
            logger_server = await start_logger(plan.logger.to_dict())
        esrp = plan.configs[plan.topology.one("esrp").name]
        assert isinstance(esrp, EsrpConfig)
        lost_client = build.lost_client(
            esrp, observers=obs, use_cache=opts.lost_cache, server=plan.lost.host.name
        )
        elements: dict[str, SipElement] = {}
        peers = await start_kamailios(plan, obs)  # none unless a host says kamailio
        for name in plan.started():
            role = plan.role(name)
            el = build.build_element(
                role,
                plan.configs[name],
                observers=obs,
                lost=lost_client if role == "esrp" else None,
                log_keep=opts.log_keep,
            )
            started.append(el)
            sender = build.log_sender(el)
            if sender is not None:
                senders[name] = sender
                if opts.logger_defer:
                    sender.pause()
            if opts.reconnect_after is not None and el.role == "caller":
                el.transport.idle_timeout = opts.reconnect_after  # before start(): the sweeper
            await el.start()
            elements[name] = el
            if plan.configs[name].metrics:
                metrics[name] = await start_metrics(plan.configs[name].metrics, el)
        caller = next(el for el in elements.values() if isinstance(el, Caller))
    except BaseException:
        for m in metrics.values():
            await m.close()
        for el in reversed(started):
            try:
                await build.close_element(el, drain=0.0)
            except Exception:
                pass
        await peers.close()
        for server in (lost_server, logger_server):
            if server is not None:
                await server.close()
        for relay in relays:
            try:
                await relay.close()
            except Exception:
                pass
        raise
    return RunningChain(
        plan=plan,
        caller=caller,
        elements=elements,
        lost_server=lost_server,
        lost_client=lost_client,
        relays=relays,
        events=events,
        peers=peers,
        logger_server=logger_server,
        senders=senders,
        metrics=metrics,
    )


async def open_chain(
    scenario: str | Scenario = "plain",
    *,
    work: Path | None = None,
    topology: Topology | None = None,
    hops: tuple[str, str, str, str] | None = None,
    lost: str | None = None,
    takers: int | None = None,
    observers: Sequence[Observer] = (),
    keep_events: bool = True,
    log_keep: int = 2000,
    logger: bool = False,
    **options: Any,
) -> RunningChain:
    """The NYC preset (or `topology`) under `scenario`, started in a fresh directory (removed
    on close when `work` is None). `hops`/`lost` override the scenario's transports, `takers`
    the call takers per PSAP; the rest are `ChainOptions` fields. Unlike a testbed run, no
    logger unless asked (`logger=True`): the element tests and benchmarks measure the chain."""
    sc = get_scenario(scenario) if isinstance(scenario, str) else scenario
    topo = (topology or load_topology()).with_scenario(sc)
    if hops is not None or lost is not None:
        topo = replace(topo, transports=hops or topo.transports, lost=lost or topo.lost)
    if takers is not None:
        topo = topo.with_takers(takers)
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="ng911-chain-")
        work = Path(tmp.name)
    opts = ChainOptions(keep_events=keep_events, log_keep=log_keep, logger=logger, **options)
    try:
        chain = await start_chain(topo, work, observers=observers, opts=opts)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    chain.tmp = tmp
    return chain


async def wait_registered(chain: RunningChain, timeout: float = 5.0) -> None:
    """Every call taker registered (the PSAP can offer calls)."""
    takers = [el for el in chain.elements.values() if isinstance(el, CallTaker)]
    await asyncio.wait_for(asyncio.gather(*(t.registered.wait() for t in takers)), timeout)
