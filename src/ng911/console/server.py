"""The live console: a web application beside a chain running in this process, served on
the project's own HTTP/1.1 stack (`ng911.net.http1`, routes in `console/routes.py`).

The browser gets the static page (`static/`, shipped in the package: no CDN, no build step),
the topology and the borough boundaries as JSON, and one server-sent event stream
(`/api/events`, the HTML Living Standard's EventSource; an `http1.StreamResponse`) carrying
every message, handshake and LoST query as it happens plus a state frame (call takers'
calls, PSAP i3 QueueState and ServiceState) whenever it changes. Actions are small JSON
POSTs: place a call from a point, sit at a call taker's position (auto-answer off), Answer,
Hang up, switch scenario.

The console either starts its own chain (`ng911 console`: `open_chain`, switchable) or
watches chains someone else starts (`own=False`, `attach`/`detach`: `ng911 testbed run
--console`, through `RunConsole`, the run's `ChainWatch`); then it places no calls and
touches no call taker (the run measures those calls), and the scenario selector picks one of
the running chains. A chain of element processes (`--processes`/`--netns`, a
`ProcessChain`) is watched the same way: its events come from the children's event files,
tailed while they run (`ProcessChain.live`, a tenth of a second behind); its call takers
live in their own processes, so the page shows their messages but not their consoles
(answering from the page needs the in-process chain, `ng911 console`). With `keep_finished`
(`--console-stay`) a chain that ends stays selectable, its last frames browsable, until the
console is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from ng911.console.hub import LINGER, Hub
from ng911.console.routes import JSON, HttpError, Params, Routes, json_body, json_response
from ng911.console.view import Describer, inspect, pidf_of_message
from ng911.elements.calltaker import CallTaker
from ng911.elements.identifiers import extract_ids
from ng911.elements.runtime import ElementError
from ng911.elements.ua import CallRecord
from ng911.net.http1 import HttpLimits, Request, Response, RunningServer, StreamResponse, serve_http
from ng911.observe.hops import HOP_LABELS, HOPS
from ng911.testbed.launcher import Observer, RunningChain, open_chain, wait_registered
from ng911.testbed.processes import ProcessChain
from ng911.testbed.scenarios import SCENARIOS, Scenario, get_scenario

STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SSE_SNDBUF = 16384  # a small kernel buffer: a stalled browser fills its own bounded queue
KEEP_ALIVE = 10.0  # s of silence on the event stream before a comment line
STALL_TIMEOUT = 60.0  # s a browser may take nothing from its event stream before it is cut off
STATE_PERIOD = 0.25  # s between state snapshots (sent only when changed)
CATCH_UP = 400  # frames a newly connected viewer gets from history
MAX_BODY = 4096  # the JSON of an action
Chain = RunningChain | ProcessChain  # what a console shows (only the first has call takers here)


@dataclass
class CallStat:
    call_id: str
    scenario: str
    lat: float
    lon: float
    status: int | None = None
    setup_ms: float | None = None  # INVITE → 180 (RFC 6076 Session Request Delay)
    cold: bool = False  # a full TLS handshake happened during its set-up
    psap: str | None = None


@dataclass
class Console:
    """The chain, its event hub and the web application serving both."""

    scenario: str = "plain"
    viewer_size: int = 2000
    linger: float = LINGER  # s a viewer's frames wait for more before they are written
    own: bool = True  # start (and switch) its own chain; False: show chains it is given
    chain_options: dict[str, Any] = field(default_factory=dict)
    chain: Chain | None = None
    hub: Hub | None = None
    describer: Describer | None = None
    stats: list[CallStat] = field(default_factory=list)
    _server: RunningServer | None = None
    _state_task: asyncio.Task[None] | None = None
    _calls: set[asyncio.Task[None]] = field(default_factory=set)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _pidf_cache: dict[str, Any] = field(default_factory=dict)
    _last_state: str = ""
    # own=False: the chains attached, by scenario name (the one shown is `chain`)
    running: dict[str, tuple[Scenario, Chain]] = field(default_factory=dict)
    url: str = ""
    keep_finished: bool = False  # own=False: a chain that ends stays on the page (browsable)
    ended: set[str] = field(default_factory=set)  # scenarios whose chain ended (kept)

    # -------------------------------------------------------------- the chain

    async def _open(self, scenario: str) -> None:
        sc = get_scenario(scenario)
        opts: dict[str, Any] = {
            "answer_timeout": 300.0,  # a person answers: give them time
            "settings": {"psap": {"offer_timeout": 120.0}},
            "keep_events": False,
        }
        opts.update(self.chain_options)
        self.describer = None
        hub = self.hub
        assert hub is not None
        chain = await open_chain(sc, observers=[hub.observe], **opts)
        try:
            await wait_registered(chain, 10.0)
        except BaseException:
            await chain.close()
            raise
        self.show(sc.name, chain)

    def show(self, scenario: str, chain: Chain) -> None:
        """Make `chain` the one on the page: its hosts name the events' ends from now on."""
        hub = self.hub
        assert hub is not None
        self.describer = Describer(chain.topology.roles, chain.addresses, self._hops(chain))
        hub.describe = self.describer
        hub.start()  # the chain's start-up events waited in the hub's bounded deque
        self.chain = chain
        self.scenario = scenario

    # -------------------------------------------------------------- chains it did not start

    def observer(self, scenario: str) -> Observer:
        """The observer to give a chain before attaching it: O(1), it passes the chain's
        events to the hub only while that scenario is the one shown."""
        hub_observe = self.hub.observe if self.hub is not None else None
        assert hub_observe is not None, "start() the console first"

        def observe(event: Any) -> None:
            if self.scenario == scenario and self.chain is not None:
                hub_observe(event)

        return observe

    def attach(self, scenario: Scenario, chain: Chain) -> None:
        """A chain someone else started (with `observer(scenario.name)` among its observers):
        selectable on the page, shown at once when nothing (or its scenario) is shown."""
        self.running[scenario.name] = (scenario, chain)
        self.ended.discard(scenario.name)
        if self.chain is None or self.scenario in (scenario.name, *self.ended):
            self.show(scenario.name, chain)
            self._publish_state(force=True)

    def detach(self, chain: Chain) -> None:
        """`chain` is closing (its owner closes it): show another running one, if any; with
        `keep_finished`, it stays selectable (and shown) as a finished chain instead."""
        if self.keep_finished:
            self.ended |= {n for n, (_s, c) in self.running.items() if c is chain}
            live = [n for n in self.running if n not in self.ended]
            if self.chain is chain and live and self.hub is not None:
                self.hub.drop_pending()
                self.show(live[0], self.running[live[0]][1])  # a running one, if any
            self._publish_state(force=True)
            return
        self.running = {n: (s, c) for n, (s, c) in self.running.items() if c is not chain}
        if self.chain is chain:
            self.chain, self.describer = None, None
            if self.hub is not None:
                self.hub.drop_pending()  # not described by the next chain's hosts
            if self.running:
                name, (_sc, other) = next(iter(self.running.items()))
                self.show(name, other)
            self._publish_state(force=True)

    def _choices(self) -> dict[str, Scenario]:
        """The scenarios the page may switch to."""
        return SCENARIOS if self.own else {n: sc for n, (sc, _c) in self.running.items()}

    def _watching(self) -> None:
        if not self.own:
            raise HttpError(
                409, "this console watches a testbed run: the run places and answers the calls"
            )

    @staticmethod
    def _hops(chain: Chain) -> dict[str, str]:
        return {h: chain.topology.transport(h) for h in HOPS}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.hub = Hub(lambda ev: None, viewer_size=self.viewer_size, linger=self.linger)
        if self.own:
            await self._open(self.scenario)
        self._server = await serve_http(
            self.routes(), host, port, max_body=MAX_BODY, limits=LIMITS, prefix="console"
        )
        self.url = f"http://{host}:{self._server.port}/"
        self._state_task = asyncio.get_running_loop().create_task(self._state_loop())
        return self.url

    async def close(self) -> None:
        if self._state_task is not None:
            self._state_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._state_task
        for t in list(self._calls):
            t.cancel()
        if self._server is not None:
            await self._server.close()  # ends the event streams (their viewers leave)
            self._server = None
        if self.hub is not None:
            await self.hub.close()
        if self.chain is not None and self.own:
            await self.chain.close()
        self.chain = None
        self.running.clear()

    # -------------------------------------------------------------- state snapshots

    def _live_here(self) -> RunningChain | None:
        """The chain shown when its elements are in this process and running (their call
        takers' consoles and PSAP states can be read)."""
        chain = self.chain
        if isinstance(chain, RunningChain) and self.scenario not in self.ended:
            return chain
        return None

    def taker(self, name: str) -> CallTaker:
        chain = self._live_here()
        el = chain.elements.get(name) if chain is not None else None
        if not isinstance(el, CallTaker):
            raise HttpError(404, f"no call taker {name!r}")
        return el

    def _call_view(self, t: CallTaker, call: Any, queue: tuple[str, ...]) -> dict[str, Any]:
        cid = call.call_id
        if cid not in self._pidf_cache:
            req = call.server.request
            ids = extract_ids(req)
            self._pidf_cache[cid] = {
                "pidf": pidf_of_message(req),
                "incident_id": ids.incident_id,
                "emergency_call_id": ids.call_id,
            }
            if len(self._pidf_cache) > 500:
                self._pidf_cache.pop(next(iter(self._pidf_cache)))
        return {
            "call_id": cid,
            "state": call.state,
            "caller": call.caller,
            "received": call.received,
            "queue_position": queue.index(cid) + 1 if cid in queue else None,
            **self._pidf_cache[cid],
        }

    def _in_process_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The PSAPs' i3 states and the call takers' consoles, when the chain shown runs in
        this process (empty for element processes or a finished chain)."""
        chain = self._live_here()
        psaps: dict[str, Any] = {}
        takers: dict[str, Any] = {}
        if chain is None:
            return psaps, takers
        for name, p in chain.psaps.items():
            psaps[name] = {
                "queue": p.queue_state().to_json(),
                "service": p.service_state().to_json(),
            }
        for psap, ts in chain.takers.items():
            queue = chain.psaps[psap].acd.queue if psap in chain.psaps else ()
            for t in ts:
                takers[t.name] = {
                    "psap": psap,
                    "attended": t.attended,
                    "offered": t.offered,
                    "answered": t.answered,
                    "calls": [self._call_view(t, c, queue) for c in t.calls.values()],
                }
        return psaps, takers

    def snapshot(self) -> dict[str, Any]:
        if self.chain is None:
            return {"type": "state", "ready": False}
        psaps, takers = self._in_process_state()
        hub = self.hub
        return {
            "type": "state",
            "ready": True,
            "scenario": self.scenario,
            "remote": isinstance(self.chain, ProcessChain),  # element processes
            "finished": self.scenario in self.ended,
            "psaps": psaps,
            "takers": takers,
            "counters": self.describer.counters if self.describer else {},
            "hub": hub.stats() if hub else {},
        }

    async def _state_loop(self) -> None:
        while True:
            await asyncio.sleep(STATE_PERIOD)
            try:
                self._publish_state()
            except Exception as exc:  # a bug here must not stop the console
                if self.hub is not None:
                    self.hub.errors += 1
                print(f"console: state snapshot failed: {type(exc).__name__}: {exc}")

    def _publish_state(self, force: bool = False) -> None:
        snap = self.snapshot()
        hub_stats = snap.pop("hub", {})
        text = json.dumps(snap, sort_keys=True, default=str)
        if (force or text != self._last_state) and self.hub is not None:
            self._last_state = text
            snap["hub"] = hub_stats
            self.hub.publish(snap, keep=False)

    # -------------------------------------------------------------- calls

    async def _run_call(self, lat: float, lon: float, stat: CallStat) -> None:
        chain = self.chain
        assert isinstance(chain, RunningChain)  # own chains only (`_watching` refused others)
        assert self.hub is not None and self.describer is not None
        hs_before = self.describer.full_handshakes
        try:
            rec: CallRecord = await chain.place_call(lat, lon, hangup_after=0.0)
        except Exception as exc:
            self.hub.publish({"type": "call_done", "call": stat.call_id, "error": str(exc)})
            return
        stat.status = rec.status
        stat.setup_ms = None if rec.setup_180 is None else round(rec.setup_180 * 1000, 2)
        stat.psap = chain.psap_of(rec)
        stat.call_id = rec.call_id
        stat.cold = self.describer.full_handshakes != hs_before
        self.stats.append(stat)
        del self.stats[:-5000]
        self.hub.publish({"type": "call_done", **stat.__dict__})

    # -------------------------------------------------------------- the routes

    def routes(self) -> Routes:
        routes = Routes()
        routes.get("/", self.page)
        routes.get("/static/{name}", self.static)
        routes.get("/api/topology", self.topology)
        routes.get("/api/boroughs", self.boroughs)
        routes.get("/api/events", self.events)
        routes.get("/api/message/{id}", self.message)
        routes.get("/api/stats", self.stats_json)
        routes.post("/api/call", self.place)
        routes.post("/api/scenario", self.switch)
        routes.post("/api/takers/{name}/{action}", self.taker_action)
        return routes

    async def place(self, request: Request, params: Params) -> Response:
        self._watching()
        body = json_body(request, MAX_BODY)
        try:
            lat, lon = float(body["lat"]), float(body["lon"])
        except (KeyError, TypeError, ValueError):
            raise HttpError(400, "lat and lon (numbers) are required") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise HttpError(400, "lat/lon out of range")
        if self.chain is None:
            raise HttpError(503, "the chain is (re)starting")
        stat = CallStat("", self.scenario, lat, lon)
        task = asyncio.get_running_loop().create_task(self._run_call(lat, lon, stat))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        if self.hub is not None:
            self.hub.publish({"type": "call_placed", "lat": lat, "lon": lon})
        return json_response({"placed": True, "scenario": self.scenario})

    async def switch(self, request: Request, params: Params) -> Response:
        body = json_body(request, MAX_BODY)
        name = str(body.get("scenario", ""))
        if name not in self._choices():
            raise HttpError(400, f"unknown scenario {name[:100]!r}")
        if not self.own:  # one of the run's chains: shown, not restarted
            if name != self.scenario and self.hub is not None:
                self.hub.drop_pending()
                self.show(name, self.running[name][1])
            self._publish_state(force=True)
            return json_response(self._topology_json())
        async with self._lock:
            if name != self.scenario or self.chain is None:
                old, self.chain = self.chain, None
                if old is not None:
                    await old.close()
                if self.hub is not None:
                    await self.hub.stop_pump()  # restarted by `_open` with the new describer
                await self._open(name)
        self._publish_state(force=True)
        return json_response(self._topology_json())

    async def taker_action(self, request: Request, params: Params) -> Response:
        self._watching()
        t = self.taker(params["name"])
        action = params["action"]
        body = json_body(request, MAX_BODY)
        try:
            if action == "attend":
                t.attended = bool(body.get("on", True))
            elif action == "answer":
                t.answer(str(body.get("call_id", "")))
            elif action == "hangup":
                t.hangup(str(body.get("call_id", "")))
            else:
                raise HttpError(404, f"no action {action[:40]!r}")
        except ElementError as exc:
            raise HttpError(409, str(exc)) from None
        self._publish_state(force=True)
        return json_response({"ok": True, "attended": t.attended})

    # -------------------------------------------------------------- pages and data

    async def page(self, request: Request, params: Params) -> Response:
        return _static("index.html")

    async def static(self, request: Request, params: Params) -> Response:
        name = params["name"]
        if name not in STATIC_FILES:  # the only files served: no path reaches another
            raise HttpError(404, f"no static file {name[:100]!r}")
        return _static(name)

    def _topology_json(self) -> dict[str, Any]:
        chain = self.chain
        if chain is None:
            return {"ready": False}
        topo = chain.topology
        choices = self._choices()
        sc = choices[self.scenario]
        return {
            "ready": True,
            "scenario": self.scenario,
            "watching": not self.own,
            "remote": isinstance(chain, ProcessChain),
            "finished": self.scenario in self.ended,
            "ended": sorted(self.ended),
            "scenarios": {n: s.summary() for n, s in choices.items()},
            "hosts": [
                {
                    "name": h.name,
                    "role": h.role,
                    "domain": h.domain,
                    "borough": h.borough,
                    "psap": h.psap,
                }
                for h in topo.hosts
            ],
            "hops": {h: {"transport": topo.transport(h), "label": HOP_LABELS[h]} for h in HOPS},
            "lost": {"transport": sc.lost, "mutual": sc.lost_mutual},
            "locations": [
                {"name": loc.name, "lat": loc.lat, "lon": loc.lon, "borough": loc.borough}
                for loc in topo.locations
            ],
        }

    async def topology(self, request: Request, params: Params) -> Response:
        return json_response(self._topology_json())

    async def boroughs(self, request: Request, params: Params) -> Response:
        if self.chain is None:
            raise HttpError(503, "the chain is (re)starting")
        path = self.chain.topology.boundaries_path()
        return Response(200, path.read_bytes(), JSON)

    async def message(self, request: Request, params: Params) -> Response:
        try:
            fid = int(params["id"])
        except ValueError:
            raise HttpError(400, "id must be a number") from None
        assert self.hub is not None
        found = self.hub.lookup(fid)
        if found is None:
            raise HttpError(404, "no such frame (only the latest are kept)")
        return json_response(inspect(*found))

    async def stats_json(self, request: Request, params: Params) -> Response:
        assert self.hub is not None
        return json_response(
            {"hub": self.hub.stats(), "calls": [s.__dict__ for s in self.stats[-500:]]}
        )

    async def events(self, request: Request, params: Params) -> StreamResponse:
        """The event stream (server-sent events): catch-up frames, then live ones."""
        assert self.hub is not None
        t = request.conn.transport
        sock = t.get_extra_info("socket") if t is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SSE_SNDBUF)
        headers = (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"))
        return StreamResponse(self._frames(self.hub), headers=headers, stall_timeout=STALL_TIMEOUT)

    async def _frames(self, hub: Hub) -> AsyncIterator[bytes]:
        """One viewer's stream: it joins when the stream starts and leaves when it ends
        (the browser went away, was cut off, or the console stops); a comment line after
        `KEEP_ALIVE` s of silence keeps proxies and the browser from giving up on it."""
        viewer = hub.join()
        try:
            for text in hub.texts_since(0, CATCH_UP):
                viewer.push(text)
            viewer.push(json.dumps(self.snapshot(), default=str))
            while True:
                batch = await viewer.next_batch(KEEP_ALIVE)
                if not batch:
                    yield b": keep-alive\n\n"
                    continue
                yield "".join(f"data: {t}\n\n" for t in batch).encode()
        finally:
            hub.leave(viewer)


@dataclass
class RunConsole:
    """The console as a testbed run's `ChainWatch` (`ng911 testbed run --console`): served
    while the run lasts, showing its chains (in this process or element processes) as the
    run starts and closes them. With `stay` (`--console-stay`) it goes on serving the
    finished run, its chains selectable and their last frames browsable, until Ctrl-C (or
    `release()`), after the report is written."""

    host: str = "127.0.0.1"
    port: int = 0
    ready: Callable[[str], None] = print
    console: Console = field(default_factory=lambda: Console(own=False))
    stay: bool = False
    say: Callable[[str], None] = print  # where the "still serving" line goes
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.console.keep_finished = self.stay

    def release(self) -> None:
        """Stop staying: `finished` returns (what Ctrl-C does)."""
        self._release.set()

    async def finished(self, result: RunResult) -> None:
        if not self.stay:
            return
        loop = asyncio.get_running_loop()
        try:  # Ctrl-C ends the stay, not the run (whose report is written): exit status kept
            loop.add_signal_handler(signal.SIGINT, self._release.set)
            handled = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            handled = False
        self.say(
            f"ng911 console: the run is over (report: {result.report}); the console still "
            f"serves it at {self.console.url}  (Ctrl-C stops it)"
        )
        try:
            await self._release.wait()
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)

    async def open(self) -> None:
        self.ready(await self.console.start(self.host, self.port))

    async def close(self) -> None:
        await self.console.close()

    def observers(self, scenario: Scenario) -> list[Observer]:
        return [self.console.observer(scenario.name)]

    def started(self, scenario: Scenario, chain: Chain) -> None:
        self.console.attach(scenario, chain)

    def stopped(self, scenario: Scenario, chain: Chain) -> None:
        self.console.detach(chain)


# The console's HTTP limits: one person's browser on localhost (a page, its few requests and
# one event stream per tab); the defaults' deadlines, fewer connections.
LIMITS = HttpLimits(max_connections=256, max_per_source=64)


def _static(name: str) -> Response:
    """A file of the page, read from the package (a few KB; `Cache-Control: no-cache` so a
    browser revalidates after an upgrade instead of running a stale script)."""
    data = (resources.files("ng911.console") / "static" / name).read_bytes()
    return Response(
        200, data, (("Content-Type", STATIC_FILES[name]), ("Cache-Control", "no-cache"))
    )


async def serve(
    scenario: str,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None] = print,
    until: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run the console until `until()` returns (default: forever, i.e. until Ctrl-C)."""
    console = Console(scenario=scenario)
    try:
        url = await console.start(host, port)
        ready(url)
        if until is None:
            await asyncio.Event().wait()
        else:
            await until()
    finally:
        await console.close()


__all__ = ["CallStat", "Console", "RunConsole", "serve"]

if TYPE_CHECKING:  # RunConsole is what a testbed run calls a ChainWatch (checked by mypy)
    from ng911.testbed.run import ChainWatch, RunResult

    _watch: ChainWatch = RunConsole()
