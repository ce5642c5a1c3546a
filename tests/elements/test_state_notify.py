"""i3 state notifications over real sockets (RFC 6665, NENA-STA-010.3): psapd's QueueState
as calls queue and drain, seen by a Python subscriber (a SipElement); the ESRP's board; a
SUBSCRIBE flood, an unknown package, expiry, and hostile NOTIFYs."""

import asyncio
import json
import secrets
import socket

from ng911.elements.calltaker import CallTaker
from ng911.elements.config import (
    CallerConfig,
    CallTakerConfig,
    ElementConfig,
    HostEntry,
    ListenerConfig,
    PsapConfig,
    StateConfig,
)
from ng911.elements.i3state import QueueState
from ng911.elements.psap import Psapd
from ng911.elements.runtime import SipElement
from ng911.elements.ua import Caller
from ng911.net.events import MessageEvent
from ng911.sip.message import Request, Response, make_response
from ng911.sip.parse import parse_message
from ng911.testbed.launcher import open_chain
from ng911.testbed.topology import load_topology

FQDN = "psap.example"
UDP = (ListenerConfig("udp", "127.0.0.1", 0),)
SHORT = StateConfig(min_expires=1, default_expires=60, notify_interval=0.05)


async def until(check, timeout=10.0):
    """Wait (bounded) until `check()` is true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "timed out waiting"
        await asyncio.sleep(0.02)


async def start_psapd(**kw):
    cfg = dict(name="psap", fqdn=FQDN, domain=FQDN, listeners=UDP, state=SHORT)
    cfg.update(kw)
    psap = Psapd(PsapConfig(**cfg), log_keep=5000)
    await psap.start()
    return psap, psap.local("udp").port


def watcher(name="watcher", **state):
    return SipElement(
        ElementConfig(
            name=name,
            fqdn=f"{name}.example",
            listeners=UDP,
            hosts=(HostEntry(FQDN),),
            state=StateConfig(**{"min_expires": 1, "default_expires": 60, **state}),
        ),
        log_keep=5000,
    )


def raw_subscribe(port, event, *, expires=60, call_id=None, sock=None):
    """One SUBSCRIBE from a UDP socket; its final answer (NOTIFYs it gets are skipped)."""
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if own:
            s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        me = s.getsockname()[1]
        msg = (
            f"SUBSCRIBE sip:{FQDN}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:flood@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{FQDN}>\r\n"
            f"Call-ID: {call_id or secrets.token_hex(8)}@127.0.0.1\r\n"
            "CSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:flood@127.0.0.1:{me}>\r\n"
            f"Event: {event}\r\n"
            f"Expires: {expires}\r\n"
            "Accept: application/json\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), ("127.0.0.1", port))
        while True:
            m = parse_message(s.recv(65535))
            if isinstance(m, Response) and m.status >= 200 and m.cseq.method == "SUBSCRIBE":
                return m
    finally:
        if own:
            s.close()


async def test_a_subscriber_sees_the_queue_fill_and_drain():
    psap, port = await start_psapd(
        queue_size=2, offer_timeout=30.0, hosts=(HostEntry("taker.example"),)
    )
    taker = CallTaker(
        CallTakerConfig(
            name="taker",
            fqdn="taker.example",
            listeners=UDP,
            hosts=(HostEntry(FQDN), HostEntry("taker.example")),
            aor=f"sip:taker1@{FQDN}",
            psap=f"sip:{FQDN}:{port}",
            keepalive=0,
            answer_delay=-1,  # rings, never answers: the next calls queue
        )
    )
    caller = Caller(
        CallerConfig(
            name="caller",
            fqdn="caller.example",
            listeners=UDP,
            hosts=(HostEntry(FQDN),),
            proxy=f"sip:{FQDN}:{port}",
            register=False,
            dial="urn:service:sos",
            answer_timeout=0,
        )
    )
    sub = watcher()
    queue: list[QueueState] = []
    service: list = []
    try:
        await sub.start()
        sub.events.subscribe(f"sip:{FQDN}:{port}", "emergency-QueueState", queue.append)
        sub.events.subscribe(f"sip:{FQDN}:{port}", "emergency-ServiceState", service.append)
        await until(lambda: queue and service)
        assert queue[-1].state == "Inactive"  # no call taker yet
        assert service[-1].state == "Unstaffed"
        await taker.start()
        await until(lambda: queue[-1].state == "Active" and service[-1].state == "Normal")
        assert queue[-1].queue_uri == f"sip:{FQDN}" and queue[-1].max_length == 2
        await caller.start()
        records = []
        for _ in range(3):  # one rings at the taker, two wait in the queue
            records.append(await caller.place_call(wait=False))
            await asyncio.sleep(0.1)
        await until(lambda: queue[-1].state == "Full")
        assert queue[-1].length == 2
        assert [q.length for q in queue if q.length][:2] == [1, 2]
        for rec in records:
            caller.cancel(rec)
        await until(lambda: queue[-1].length == 0 and queue[-1].state == "Active")
        assert psap.log.find("service_state", state="Normal")
        assert psap.log.find("service_state", state="Unstaffed")
    finally:
        for el in (caller, taker, sub, psap):
            await el.close()
    assert not any(el.errors for el in (caller, taker, sub, psap))


async def test_refresh_expiry_and_the_final_notify_at_close():
    psap, port = await start_psapd()
    sub = watcher(subscribe_expires=1)  # refreshed every ~0.5 s
    states: list = []
    try:
        await sub.start()
        held = sub.events.subscribe(f"sip:{FQDN}:{port}", "emergency-ElementState", states.append)
        await until(lambda: held.cseq >= 3)  # two refreshes, each answered and NOTIFYed
        assert held.state == "active" and states[-1].state == "Normal"
        assert len(psap.events.notifier) == 1
        # a subscription nobody refreshes ends with a final NOTIFY (reason timeout)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(
                None, lambda: raw_subscribe(port, "emergency-SecurityPosture", expires=1, sock=s)
            )
            assert ok.status == 200 and ok.headers.get("Expires") == "1"

            def answer_notifies():
                """Answer each NOTIFY 200 until the final one (bounded by the timeout)."""
                got = []
                while not got or got[-1].headers.get("Subscription-State").startswith("active"):
                    m = parse_message(s.recv(65535))
                    if isinstance(m, Request):
                        got.append(m)
                        s.sendto(make_response(m, 200).to_bytes(), ("127.0.0.1", port))
                return got

            got = await loop.run_in_executor(None, answer_notifies)
            assert psap.log.find("subscription_expired")
            assert len(psap.events.notifier) == 1  # the watcher's refreshed one stays
        states_seen = [m.headers.get("Subscription-State") for m in got]
        assert states_seen == ["active;expires=1", "terminated;reason=timeout"]
        body = json.loads(got[0].body)
        assert body == {"elementDomain": FQDN, "posture": "Green"}
        await psap.close()  # final NOTIFY: GoingDown, terminated;reason=noresource
        await until(lambda: states[-1] is None)  # the state is unknown again
        assert states[-2].state == "GoingDown"
        assert sub.log.find("subscription_terminated", reason="noresource")
    finally:
        await psap.close()
        await sub.close()
    assert not sub.errors and not psap.errors


async def test_unknown_event_too_brief_and_a_flood_of_subscribes_bounded():
    psap, port = await start_psapd(
        state=StateConfig(min_expires=30, max_subscriptions=5, max_per_source=100)
    )
    loop = asyncio.get_running_loop()
    try:
        bad = await loop.run_in_executor(None, lambda: raw_subscribe(port, "presence"))
        assert bad.status == 489
        assert "emergency-QueueState" in bad.headers.get_all("Allow-Events")
        brief = await loop.run_in_executor(
            None, lambda: raw_subscribe(port, "emergency-QueueState", expires=5)
        )
        assert brief.status == 423 and brief.headers.get("Min-Expires") == "30"
        answers = []
        for _ in range(20):
            answers.append(
                await loop.run_in_executor(
                    None, lambda: raw_subscribe(port, "emergency-QueueState")
                )
            )
        statuses = [a.status for a in answers]
        assert statuses.count(200) == 5 and statuses.count(503) == 15
        assert all(a.headers.get("Retry-After") for a in answers if a.status == 503)
        assert len(psap.events.notifier) == 5
        assert psap.log.find("subscribe_refused", status=503)
    finally:
        await psap.close()
    assert not psap.errors


async def test_hostile_notifies_are_answered_and_logged_never_raised():
    psap, port = await start_psapd()
    sub = watcher()
    states: list = []
    try:
        await sub.start()
        held = sub.events.subscribe(f"sip:{FQDN}:{port}", "emergency-QueueState", states.append)
        await until(lambda: states)
        dialog = held.dialog
        me = sub.local("udp").port
        cseq = [dialog.remote_seq or 1]

        def notify(body, ctype="application/json", event="emergency-QueueState", tag=None):
            cseq[0] += 1
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.settimeout(5)
                lines = [
                    f"NOTIFY sip:state@127.0.0.1:{me} SIP/2.0",
                    f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};branch=z9hG4bK"
                    f"{secrets.token_hex(6)}",
                    "Max-Forwards: 70",
                    f"From: <sip:{FQDN}>;tag={dialog.remote_tag}",
                    f"To: <sip:state@watcher.example>;tag={tag or held.local_tag}",
                    f"Call-ID: {held.call_id}",
                    f"CSeq: {cseq[0]} NOTIFY",
                    f"Event: {event}",
                    "Subscription-State: active;expires=60",
                    f"Content-Type: {ctype}",
                    f"Content-Length: {len(body)}",
                    "",
                    "",
                ]
                s.sendto("\r\n".join(lines).encode() + body, ("127.0.0.1", me))
                return parse_message(s.recv(65535)).status

        loop = asyncio.get_running_loop()

        async def send(*a, **kw):
            return await loop.run_in_executor(None, lambda: notify(*a, **kw))

        n = len(states)
        assert await send(b"{not json") == 400
        assert await send(b'{"queueUri": "x", "queueLength": -1}') == 400
        assert await send(b"[" * 5000 + b"]" * 5000) == 400
        assert await send(b'{"a": 1}', ctype="text/plain") == 415
        assert await send(b"{}", event="emergency-ServiceState") == 489
        assert await send(b"{}", tag="not-ours") == 481
        assert len(states) == n  # nothing refused reached the board
        good = b'{"queueUri":"sip:q","queueLength":3,"queueMaxLength":3,"state":"Full"}'
        assert await send(good) == 200
        assert states[-1] == QueueState("sip:q", 3, 3, "Full")
        assert len(sub.log.find("state_body_refused")) == 4
    finally:
        await sub.close()
        await psap.close()
    assert not sub.errors and not psap.errors


MANHATTAN = load_topology().point("Manhattan")


async def test_the_esrp_board_shows_a_full_psap():
    chain = await open_chain(
        takers=1,
        settings={
            "psap": {"queue_size": 1, "offer_timeout": 30.0, "state": SHORT},
            "esrp": {"failover_timeout": 5.0},
        },
    )
    try:
        esrp = chain.esrp
        (taker,) = chain.takers["psap-manhattan"]
        taker.cfg = taker.cfg.__class__(**{**taker.cfg.to_dict(), "answer_delay": -1})
        key = next(k for k in esrp.health.peers if "manhattan" in k)

        def queue():
            return esrp.states.queue(key)

        await until(lambda: queue() is not None and queue().state == "Active")
        assert esrp.states.service(key).state == "Normal"
        calls = [await chain.caller.place_call(*MANHATTAN, wait=False) for _ in range(2)]
        await until(lambda: queue().state == "Full")
        assert queue().length == 1 and queue().full
        # the policy skips the full PSAP without a failed attempt: no INVITE reaches it
        third = await asyncio.wait_for(chain.place_call(*MANHATTAN, hangup_after=0.01), 10)
        assert third.status == 200 and chain.psap_of(third) == "psap-bronx"
        assert not [
            e
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.call_id == third.call_id
            and e.element == "psap-manhattan"
        ]
        assert esrp.log.find("skip_state", call_id=third.call_id)
        assert not esrp.log.find("failover", call_id=third.call_id)
        for rec in calls:
            chain.caller.cancel(rec)
        await until(lambda: queue().state == "Active" and queue().length == 0)
        assert esrp.log.find("peer_queue_state", state="Full")
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


async def test_the_esrp_subscribes_to_every_configured_psap_over_tls():
    chain = await open_chain("tls-all")
    try:
        esrp = chain.esrp
        configured = [k for k in esrp.health.peers if k.startswith("sips:")]
        assert len(configured) == 6  # five boroughs and the default route

        def known():
            return [k for k in configured if esrp.states.service(k) is not None]

        await until(lambda: len(known()) == 6)
        assert {esrp.states.service(k).state for k in configured} == {"Normal"}
        assert all(esrp.states.queue(k).state == "Active" for k in configured)
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors
