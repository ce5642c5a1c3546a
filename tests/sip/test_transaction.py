"""The four RFC 3261 §17 transaction state machines, driven event by event.

Each machine has a table of scenarios: a transport, a list of events, and for each event the
actions expected (summarised as short strings) and the state after it. The strings read like
the RFC figures: "send INVITE", "start A=0.5", "deliver 180", "timeout timer B", "terminated".
"""

from __future__ import annotations

import heapq

import pytest

from ng911.sip.errors import SipError
from ng911.sip.headers import new_branch
from ng911.sip.message import Headers, Request, Response, make_response
from ng911.sip.parse import parse_message
from ng911.sip.transaction import (
    INVITE_CLIENT_TABLE,
    INVITE_SERVER_TABLE,
    NON_INVITE_CLIENT_TABLE,
    NON_INVITE_SERVER_TABLE,
    Action,
    CancelTimer,
    ClientTransaction,
    Deliver,
    Linger,
    Send,
    ServerTransaction,
    StartTimer,
    State,
    Terminated,
    Timeout,
    TimerConfig,
    TransactionError,
    TransactionKey,
    TransactionTable,
    client_transaction,
    make_ack_for_non2xx,
    make_cancel,
    make_trying,
    server_transaction,
)
from ng911.sip.uri import parse_uri

# --------------------------------------------------------------------------------------------
# Message helpers


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKabc123",
    sent_by: str = "192.0.2.10:5060",
    cseq: int = 1,
    cseq_method: str | None = None,
    uri: str = "sip:psap@example.net",
    to_tag: str | None = None,
    routes: tuple[str, ...] = (),
) -> Request:
    via = f"SIP/2.0/UDP {sent_by}" + (f";branch={branch}" if branch else "")
    to = "<sip:psap@example.net>" + (f";tag={to_tag}" if to_tag else "")
    headers = Headers(
        [
            ("Via", via),
            ("Via", "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKupstream"),
            *(("Route", r) for r in routes),
            ("Max-Forwards", "70"),
            ("From", '"Caller" <sip:alice@vsp.example>;tag=fromtag1'),
            ("To", to),
            ("Call-ID", "call-1@192.0.2.10"),
            ("CSeq", f"{cseq} {cseq_method or method}"),
            ("Contact", "<sip:alice@192.0.2.10:5060>"),
            ("Require", "foo"),
        ]
    )
    return Request(method, parse_uri(uri), headers)


def response_to(req: Request, status: int, *, to_tag: str | None = "totag9") -> Response:
    return make_response(req, status, to_tag=to_tag if status > 100 else None)


def summary(actions: list[Action]) -> list[str]:
    """Actions as short strings, in order."""
    out: list[str] = []
    for a in actions:
        if isinstance(a, Send):
            m = a.message
            out.append(f"send {m.method if isinstance(m, Request) else m.status}")
        elif isinstance(a, Deliver):
            m = a.message
            out.append(f"deliver {m.method if isinstance(m, Request) else m.status}")
        elif isinstance(a, StartTimer):
            out.append(f"start {a.name}={a.delay:g}")
        elif isinstance(a, CancelTimer):
            out.append(f"cancel {a.name}")
        elif isinstance(a, Timeout):
            out.append(f"timeout {a.cause}")
        elif isinstance(a, Terminated):
            out.append("terminated")
    return out


def drive(tx: ClientTransaction | ServerTransaction, event: str) -> list[Action]:
    """Feed one event, written as in the scenario tables."""
    if event == "start":
        return tx.start()
    if event == "transport error":
        return tx.on_transport_error()
    kind, _, arg = event.partition(" ")
    if kind == "timer":
        return tx.on_timer(arg)
    if kind == "rx" and arg.isdigit():
        assert isinstance(tx, ClientTransaction)
        return tx.on_response(response_to(tx.request, int(arg)))
    if kind == "rx":  # a request retransmission or the ACK, at a server transaction
        assert isinstance(tx, ServerTransaction)
        if arg == "ACK":
            # a wait state ("confirmed", "accepted") keeps no response (`Linger`): the ACK
            # matches by its Via and method, any final answer's To does for it
            last = tx.last_response or response_to(tx.request, 486)
            return tx.on_request(make_ack_for_non2xx(tx.request, last))
        return tx.on_request(tx.request.copy())
    if kind == "tx":
        assert isinstance(tx, ServerTransaction)
        return tx.send_response(response_to(tx.request, int(arg)))
    raise AssertionError(f"bad event {event!r}")


Step = tuple[str, list[str], str]  # event, expected actions, state after


def run(tx: ClientTransaction | ServerTransaction, steps: list[Step]) -> None:
    for i, (event, expected, state) in enumerate(steps):
        got = summary(drive(tx, event))
        assert got == expected, f"step {i} ({event!r})"
        assert tx.state == state, f"step {i} ({event!r})"


# --------------------------------------------------------------------------------------------
# INVITE client (RFC 3261 §17.1.1, RFC 6026 §7.2)

START_UDP = ("start", ["send INVITE", "start A=0.5", "start B=32"], "calling")
START_TCP = ("start", ["send INVITE", "start B=32"], "calling")

INVITE_CLIENT_SCENARIOS: dict[str, tuple[bool, list[Step]]] = {
    "timer A doubles without cap, B times out": (
        False,
        [
            START_UDP,
            ("timer A", ["send INVITE", "start A=1"], "calling"),
            ("timer A", ["send INVITE", "start A=2"], "calling"),
            ("timer A", ["send INVITE", "start A=4"], "calling"),
            ("timer A", ["send INVITE", "start A=8"], "calling"),
            ("timer A", ["send INVITE", "start A=16"], "calling"),
            ("timer B", ["timeout timer B", "cancel A", "terminated"], "terminated"),
            ("timer A", [], "terminated"),
        ],
    ),
    "1xx stops retransmissions, 2xx -> accepted (RFC 6026)": (
        False,
        [
            START_UDP,
            ("rx 100", ["cancel A", "cancel B", "deliver 100"], "proceeding"),
            ("timer A", [], "proceeding"),  # stale: it was cancelled
            ("rx 180", ["deliver 180"], "proceeding"),
            ("rx 200", ["deliver 200", "start M=32"], "accepted"),
            ("rx 200", ["deliver 200"], "accepted"),  # retransmitted 2xx reaches the TU
            ("rx 180", [], "accepted"),
            ("rx 486", [], "accepted"),
            ("timer M", ["terminated"], "terminated"),
        ],
    ),
    "2xx straight from calling": (
        False,
        [START_UDP, ("rx 200", ["cancel A", "cancel B", "deliver 200", "start M=32"], "accepted")],
    ),
    "non-2xx: ACK, timer D absorbs retransmissions": (
        False,
        [
            START_UDP,
            ("rx 180", ["cancel A", "cancel B", "deliver 180"], "proceeding"),
            ("rx 486", ["send ACK", "deliver 486", "start D=32"], "completed"),
            ("rx 486", ["send ACK"], "completed"),  # retransmission: ACK again, TU not told
            ("rx 200", [], "completed"),
            ("timer D", ["terminated"], "terminated"),
        ],
    ),
    "non-2xx from calling": (
        False,
        [
            START_UDP,
            ("rx 503", ["cancel A", "cancel B", "send ACK", "deliver 503", "start D=32"],
             "completed"),
        ],
    ),
    "reliable: no timer A, timer D is zero": (
        True,
        [
            START_TCP,
            ("timer A", [], "calling"),
            ("rx 404", ["cancel B", "send ACK", "deliver 404", "terminated"], "terminated"),
            ("rx 404", [], "terminated"),
        ],
    ),
    "reliable: timer B": (
        True,
        [START_TCP, ("timer B", ["timeout timer B", "terminated"], "terminated")],
    ),
    "transport error in calling": (
        False,
        [
            START_UDP,
            ("transport error", ["timeout transport error", "cancel A", "cancel B", "terminated"],
             "terminated"),
        ],
    ),
    "transport error sending the ACK": (
        True,
        [
            START_TCP,
            ("rx 180", ["cancel B", "deliver 180"], "proceeding"),
            ("transport error", [], "proceeding"),  # nothing of ours in flight
        ],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(INVITE_CLIENT_SCENARIOS))
def test_invite_client(name: str) -> None:
    reliable, steps = INVITE_CLIENT_SCENARIOS[name]
    run(client_transaction(request(), reliable=reliable), steps)


# --------------------------------------------------------------------------------------------
# Non-INVITE client (RFC 3261 §17.1.2)

NON_INVITE_CLIENT_SCENARIOS: dict[str, tuple[bool, list[Step]]] = {
    "timer E doubles up to T2, F times out": (
        False,
        [
            ("start", ["send OPTIONS", "start E=0.5", "start F=32"], "trying"),
            ("timer E", ["send OPTIONS", "start E=1"], "trying"),
            ("timer E", ["send OPTIONS", "start E=2"], "trying"),
            ("timer E", ["send OPTIONS", "start E=4"], "trying"),
            ("timer E", ["send OPTIONS", "start E=4"], "trying"),
            ("timer F", ["timeout timer F", "cancel E", "terminated"], "terminated"),
        ],
    ),
    "proceeding retransmits at T2": (
        False,
        [
            ("start", ["send OPTIONS", "start E=0.5", "start F=32"], "trying"),
            ("rx 100", ["deliver 100"], "proceeding"),
            ("timer E", ["send OPTIONS", "start E=4"], "proceeding"),
            ("rx 183", ["deliver 183"], "proceeding"),
            ("rx 200", ["cancel E", "cancel F", "deliver 200", "start K=5"], "completed"),
            ("rx 200", [], "completed"),  # retransmission absorbed
            ("timer E", [], "completed"),
            ("timer K", ["terminated"], "terminated"),
        ],
    ),
    "final from trying": (
        False,
        [
            ("start", ["send OPTIONS", "start E=0.5", "start F=32"], "trying"),
            ("rx 404", ["cancel E", "cancel F", "deliver 404", "start K=5"], "completed"),
        ],
    ),
    "reliable: no E, K is zero": (
        True,
        [
            ("start", ["send OPTIONS", "start F=32"], "trying"),
            ("rx 200", ["cancel F", "deliver 200", "terminated"], "terminated"),
        ],
    ),
    "timeout from proceeding": (
        True,
        [
            ("start", ["send OPTIONS", "start F=32"], "trying"),
            ("rx 100", ["deliver 100"], "proceeding"),
            ("timer F", ["timeout timer F", "terminated"], "terminated"),
        ],
    ),
    "transport error": (
        False,
        [
            ("start", ["send OPTIONS", "start E=0.5", "start F=32"], "trying"),
            ("transport error", ["timeout transport error", "cancel E", "cancel F", "terminated"],
             "terminated"),
        ],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(NON_INVITE_CLIENT_SCENARIOS))
def test_non_invite_client(name: str) -> None:
    reliable, steps = NON_INVITE_CLIENT_SCENARIOS[name]
    run(client_transaction(request("OPTIONS"), reliable=reliable), steps)


# --------------------------------------------------------------------------------------------
# INVITE server (RFC 3261 §17.2.1, RFC 6026 §7.1)

INVITE_SERVER_SCENARIOS: dict[str, tuple[bool, list[Step]]] = {
    "non-2xx, timer G doubles up to T2, ACK -> confirmed": (
        False,
        [
            ("start", ["deliver INVITE"], "proceeding"),
            ("rx INVITE", [], "proceeding"),  # nothing sent yet: absorbed silently
            ("tx 100", ["send 100"], "proceeding"),
            ("rx INVITE", ["send 100"], "proceeding"),  # absorbed: last provisional resent
            ("tx 180", ["send 180"], "proceeding"),
            ("rx INVITE", ["send 180"], "proceeding"),
            ("tx 486", ["send 486", "start G=0.5", "start H=32"], "completed"),
            ("timer G", ["send 486", "start G=1"], "completed"),
            ("timer G", ["send 486", "start G=2"], "completed"),
            ("timer G", ["send 486", "start G=4"], "completed"),
            ("timer G", ["send 486", "start G=4"], "completed"),
            ("rx INVITE", ["send 486"], "completed"),
            ("tx 500", [], "completed"),  # a second final is discarded
            ("rx ACK", ["cancel G", "cancel H", "start I=5"], "confirmed"),
            ("rx ACK", [], "confirmed"),
            ("rx INVITE", [], "confirmed"),
            ("timer I", ["terminated"], "terminated"),
        ],
    ),
    "timer H: no ACK": (
        False,
        [
            ("start", ["deliver INVITE"], "proceeding"),
            ("tx 603", ["send 603", "start G=0.5", "start H=32"], "completed"),
            ("timer H", ["timeout timer H", "cancel G", "terminated"], "terminated"),
        ],
    ),
    "2xx -> accepted (RFC 6026)": (
        False,
        [
            ("start", ["deliver INVITE"], "proceeding"),
            ("tx 200", ["send 200", "start L=32"], "accepted"),
            ("rx INVITE", [], "accepted"),  # absorbed, not resent: 2xx retransmission is the TU's
            ("tx 200", ["send 200"], "accepted"),  # a proxy forwarding a 2xx retransmission
            ("tx 486", [], "accepted"),
            ("rx ACK", ["deliver ACK"], "accepted"),
            ("transport error", ["timeout transport error"], "accepted"),
            ("timer L", ["terminated"], "terminated"),
        ],
    ),
    "reliable: no G, I is zero": (
        True,
        [
            ("start", ["deliver INVITE"], "proceeding"),
            ("tx 486", ["send 486", "start H=32"], "completed"),
            ("timer G", [], "completed"),
            ("rx ACK", ["cancel H", "terminated"], "terminated"),
        ],
    ),
    "transport error sending a response": (
        False,
        [
            ("start", ["deliver INVITE"], "proceeding"),
            ("tx 180", ["send 180"], "proceeding"),
            ("transport error", ["timeout transport error", "terminated"], "terminated"),
        ],
    ),
}


@pytest.mark.parametrize("name", list(INVITE_SERVER_SCENARIOS))
def test_invite_server(name: str) -> None:
    reliable, steps = INVITE_SERVER_SCENARIOS[name]
    run(server_transaction(request(), reliable=reliable), steps)


# --------------------------------------------------------------------------------------------
# Non-INVITE server (RFC 3261 §17.2.2)

NON_INVITE_SERVER_SCENARIOS: dict[str, tuple[bool, list[Step]]] = {
    "provisional then final, retransmissions absorbed": (
        False,
        [
            ("start", ["deliver OPTIONS"], "trying"),
            ("rx OPTIONS", [], "trying"),
            ("tx 100", ["send 100"], "proceeding"),
            ("rx OPTIONS", ["send 100"], "proceeding"),
            ("tx 200", ["send 200", "start J=32"], "completed"),
            ("rx OPTIONS", ["send 200"], "completed"),
            ("tx 500", [], "completed"),
            ("timer J", ["terminated"], "terminated"),
            ("rx OPTIONS", [], "terminated"),
        ],
    ),
    "final from trying": (
        False,
        [
            ("start", ["deliver OPTIONS"], "trying"),
            ("tx 404", ["send 404", "start J=32"], "completed"),
        ],
    ),
    "reliable: J is zero": (
        True,
        [
            ("start", ["deliver OPTIONS"], "trying"),
            ("tx 200", ["send 200", "terminated"], "terminated"),
        ],
    ),
    "transport error": (
        False,
        [
            ("start", ["deliver OPTIONS"], "trying"),
            ("tx 100", ["send 100"], "proceeding"),
            ("transport error", ["timeout transport error", "terminated"], "terminated"),
        ],
    ),
}


@pytest.mark.parametrize("name", list(NON_INVITE_SERVER_SCENARIOS))
def test_non_invite_server(name: str) -> None:
    reliable, steps = NON_INVITE_SERVER_SCENARIOS[name]
    run(server_transaction(request("OPTIONS"), reliable=reliable), steps)


def test_tables_only_name_known_states_and_steps() -> None:
    steps_seen: set[str] = set()
    for table in (
        INVITE_CLIENT_TABLE,
        NON_INVITE_CLIENT_TABLE,
        INVITE_SERVER_TABLE,
        NON_INVITE_SERVER_TABLE,
    ):
        for (state, _event), (next_state, steps) in table.items():
            assert state is not State.TERMINATED  # nothing leaves "terminated"
            assert isinstance(next_state, State)
            steps_seen.update(steps)
    allowed_verbs = {"start", "double", "T2", "cancel"}
    for step in steps_seen:
        verb, _, arg = step.partition(" ")
        assert step in {"send request", "send ACK", "send", "resend", "deliver", "timeout"} or (
            verb in allowed_verbs and len(arg) == 1
        ), step


def test_custom_timer_values() -> None:
    timers = TimerConfig(t1=0.1, t2=0.3, t4=1.0)
    tx = client_transaction(request("BYE"), reliable=False, timers=timers)
    assert summary(tx.start()) == ["send BYE", "start E=0.1", "start F=6.4"]
    assert summary(tx.on_timer("E")) == ["send BYE", "start E=0.2"]
    assert summary(tx.on_timer("E")) == ["send BYE", "start E=0.3"]
    assert tx.running_timers() == {"E": 0.3, "F": pytest.approx(6.4)}
    assert summary(tx.on_response(response_to(tx.request, 200))) == [
        "cancel E",
        "cancel F",
        "deliver 200",
        "start K=1",
    ]


@pytest.mark.parametrize(
    "kw", [{"t1": 0}, {"t1": 5.0, "t2": 4.0}, {"t4": -1}, {"d": -1.0}], ids=str
)
def test_bad_timer_config(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TimerConfig(**kw)


def _lingers(actions: list[Action]) -> int:
    return sum(isinstance(a, Linger) for a in actions)


def _is_essential(req: Request) -> bool:
    """Only the request line, Via, From, To, Call-ID and CSeq: no body, no other field."""
    names = {n.lower() for n, _ in req.headers}
    return req.body == b"" and names == {"via", "from", "to", "call-id", "cseq"}


def _with_body(method: str) -> Request:
    req = request(method)
    req.headers.add("Content-Type", "application/pidf+xml")
    req.body = b"<presence/>" * 100
    return req


@pytest.mark.parametrize(
    ("method", "final", "state"),
    [("INVITE", 200, "accepted"), ("INVITE", 486, "completed"), ("BYE", 200, "completed")],
)
def test_a_client_transaction_sheds_its_request_when_it_starts_waiting(
    method: str, final: int, state: str
) -> None:
    """A finished transaction waits 64*T1 (RFC 6026 M), T4 (K) or 32 s (D) only to absorb
    retransmissions: it keeps the request's essentials, no response, and says so once."""
    tx = client_transaction(_with_body(method), reliable=False, timers=TimerConfig())
    full = tx.request
    assert _lingers(tx.start()) == 0
    assert _lingers(tx.on_response(response_to(full, 180))) == 0
    assert tx.request is full
    resp = response_to(full, final)
    assert _lingers(tx.on_response(resp)) == 1
    assert tx.state == state
    assert tx.request is not full and _is_essential(tx.request)
    assert (tx.request.method, tx.request.uri, tx.request.call_id) == (
        method,
        full.uri,
        full.call_id,
    )
    assert tx.last_response is None
    again = tx.on_response(resp)  # a retransmission: no second Linger, still absorbed
    assert _lingers(again) == 0
    if final == 486:  # "completed" still ACKs the retransmitted final (§17.1.1.2)
        assert summary(again) == ["send ACK"]
        assert isinstance(tx, ClientTransaction) and tx.ack is not None
        assert tx.ack.headers.get("Route") == full.headers.get("Route")


@pytest.mark.parametrize(
    ("method", "final", "state"),
    [("INVITE", 200, "accepted"), ("INVITE", 486, "confirmed"), ("BYE", 200, "completed")],
)
def test_a_server_transaction_sheds_its_request_when_it_starts_waiting(
    method: str, final: int, state: str
) -> None:
    tx = server_transaction(_with_body(method), reliable=False, timers=TimerConfig())
    full = tx.request
    tx.start()
    resp = response_to(full, final)
    actions = tx.send_response(resp)
    if final == 486:  # "completed" resends the 486 until the ACK (Timer G): no waiting yet
        assert _lingers(actions) == 0 and tx.request is full
        actions = tx.on_request(make_ack_for_non2xx(full, resp))
    assert _lingers(actions) == 1
    assert tx.state == state
    assert _is_essential(tx.request)
    if method == "BYE":  # a retransmitted BYE gets the same 200 (§17.2.2)
        assert tx.last_response is resp
        assert summary(tx.on_request(full.copy())) == ["send 200"]
    else:
        assert tx.last_response is None
    assert _lingers(tx.on_request(full.copy())) == 0
    if state == "accepted":  # a proxy's 2xx retransmission still goes out (RFC 6026 §7.1)
        assert summary(tx.send_response(resp)) == ["send 200"]
        assert tx.last_response is None
    # the essentials answer as the whole request did (§8.2.6.2)
    late = response_to(tx.request, 500)
    assert late.headers.get_all("Via") == full.headers.get_all("Via")
    assert late.call_id == full.call_id and late.cseq == full.cseq


@pytest.mark.parametrize("method", ["INVITE", "BYE"])
def test_no_waiting_on_a_reliable_transport_means_no_linger(method: str) -> None:
    """Over TCP/TLS D, I, J, K are zero: the machine ends at once, it never waits."""
    tx = client_transaction(_with_body(method), reliable=True, timers=TimerConfig())
    tx.start()
    actions = tx.on_response(response_to(tx.request, 486 if method == "INVITE" else 200))
    assert _lingers(actions) == 0 and tx.terminated


def test_timeout_status() -> None:
    assert Timeout("timer B").status == 408
    assert Timeout("transport error").status == 503


# --------------------------------------------------------------------------------------------
# Messages the layer builds


def test_ack_for_non2xx_is_built_per_17_1_1_3() -> None:
    invite = request(routes=("<sip:esrp.example;lr>", "<sip:psap.example;lr>"))
    tx = client_transaction(invite, reliable=False)
    tx.start()
    resp = response_to(invite, 486)
    sends = [a for a in tx.on_response(resp) if isinstance(a, Send)]
    assert len(sends) == 1
    ack = sends[0].message
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.get_all("Via") == [invite.headers.get_all("Via")[0]]  # top Via only
    assert ack.branch == invite.branch
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.to_addr.tag == "totag9"  # the response's To, with its tag
    assert ack.call_id == invite.call_id
    assert str(ack.cseq) == "1 ACK"
    assert "Require" not in ack.headers and "Contact" not in ack.headers
    assert ack.body == b""
    # a retransmitted final gets the very same ACK
    again = [a for a in tx.on_response(resp) if isinstance(a, Send)]
    assert again == [Send(ack)]
    assert tx.ack is ack
    assert tx.last_response is None  # "completed" keeps the ACK, not the response (`Linger`)


def test_make_cancel_per_9_1() -> None:
    invite = request(routes=("<sip:esrp.example;lr>",))
    cancel = make_cancel(invite, reason='SIP;cause=200;text="Call completed elsewhere"')
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.headers.get_all("Via") == [invite.headers.get_all("Via")[0]]
    assert cancel.headers.get("To") == invite.headers.get("To")
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert cancel.call_id == invite.call_id
    assert str(cancel.cseq) == "1 CANCEL"
    assert cancel.headers.get_all("Route") == ["<sip:esrp.example;lr>"]
    assert "Require" not in cancel.headers  # §9.1: MUST NOT copy Require / Proxy-Require
    assert cancel.headers.get("Reason") is not None
    assert "Reason" not in make_cancel(invite).headers


def test_make_cancel_refuses_non_invite() -> None:
    with pytest.raises(TransactionError) as e:
        make_cancel(request("OPTIONS"))
    assert e.value.status == 500


def test_trying_helper() -> None:
    invite = request()
    invite.headers.add("Timestamp", "54.2")
    trying = make_trying(invite)
    assert trying.status == 100
    assert trying.to_addr.tag is None  # §17.2.1: SHOULD NOT add a tag
    assert trying.headers.get("Timestamp") == "54.2"
    tx = server_transaction(invite, reliable=False)
    tx.start()
    assert summary(tx.send_trying()) == ["send 100"]
    assert summary(tx.on_request(invite.copy())) == ["send 100"]


# --------------------------------------------------------------------------------------------
# Misuse and bad input


def test_no_transaction_for_ack() -> None:
    with pytest.raises(TransactionError):
        client_transaction(request("ACK"), reliable=False)
    with pytest.raises(TransactionError):
        server_transaction(request("ACK"), reliable=False)


def test_client_request_needs_a_branch() -> None:
    with pytest.raises(TransactionError) as e:
        client_transaction(request(branch=None), reliable=False)
    assert e.value.status == 400


def test_start_twice_is_an_error() -> None:
    tx = client_transaction(request(), reliable=False)
    tx.start()
    with pytest.raises(TransactionError):
        tx.start()


def test_response_for_another_method_is_refused() -> None:
    tx = server_transaction(request(), reliable=False)
    tx.start()
    with pytest.raises(TransactionError):
        tx.send_response(response_to(request("BYE"), 200))


def test_unknown_timer_is_ignored() -> None:
    tx = server_transaction(request(), reliable=False)
    tx.start()
    assert tx.on_timer("Z") == []
    assert tx.on_timer("A") == []


# --------------------------------------------------------------------------------------------
# The table: RFC 3261 §17.1.3, §17.2.3, §9.2


def test_table_matches_responses_by_branch_and_cseq_method() -> None:
    table = TransactionTable()
    invite = request()
    tx = client_transaction(invite, reliable=False)
    table.add(tx)
    assert tx.key == TransactionKey("z9hG4bKabc123", "INVITE")
    assert table.match_response(response_to(invite, 180)) is tx
    # a 200 to the CANCEL has the same branch but another CSeq method
    cancel = make_cancel(invite)
    assert table.match_response(response_to(cancel, 200)) is None
    # a response for no transaction
    assert table.match_response(response_to(request(branch="z9hG4bKother"), 200)) is None
    # the server-side view of the same branch is another transaction
    assert table.match_request(invite) is None
    assert len(table) == 1 and tx.key in table
    table.remove(tx)
    table.remove(tx)  # idempotent
    assert table.match_response(response_to(invite, 180)) is None
    assert len(table) == 0


def test_table_matches_requests_and_the_ack() -> None:
    table = TransactionTable()
    invite = request()
    tx = server_transaction(invite, reliable=False)
    table.add(tx)
    assert tx.key == TransactionKey("z9hG4bKabc123", "INVITE", "192.0.2.10:5060")
    assert table.match_request(invite.copy()) is tx  # retransmission
    tx.start()
    tx.send_response(response_to(invite, 486))
    ack = make_ack_for_non2xx(invite, response_to(invite, 486))
    assert table.match_request(ack) is tx  # ACK for non-2xx matches the INVITE
    # ACK for a 2xx is a new transaction at the UAC: another branch, no match
    assert table.match_request(request("ACK", branch=new_branch(), to_tag="totag9")) is None
    # same branch from another sent-by is another transaction (§17.2.3)
    assert table.match_request(request(sent_by="192.0.2.99:5060")) is None
    # same branch, another method is another transaction
    assert table.match_request(request("OPTIONS")) is None
    assert list(table) == [tx]
    assert table.get(tx.key) is tx


def test_duplicate_add_is_refused() -> None:
    table = TransactionTable()
    table.add(server_transaction(request(), reliable=False))
    with pytest.raises(TransactionError):
        table.add(server_transaction(request(), reliable=False))


def test_cancel_target() -> None:
    table = TransactionTable()
    invite = request()
    inv_tx = server_transaction(invite, reliable=False)
    table.add(inv_tx)
    cancel = make_cancel(invite)
    assert table.match_request(cancel) is None  # the CANCEL is its own transaction...
    assert table.cancel_target(cancel) is inv_tx  # ...that refers to the INVITE's
    cancel_tx = server_transaction(cancel, reliable=False)
    table.add(cancel_tx)
    assert table.match_request(cancel) is cancel_tx
    assert table.cancel_target(cancel) is inv_tx
    # a CANCEL for an INVITE we never saw
    assert table.cancel_target(make_cancel(request(branch="z9hG4bKnope"))) is None
    # only CANCELs have targets
    assert table.cancel_target(invite) is None


def test_rfc2543_fallback_without_magic_cookie() -> None:
    table = TransactionTable()
    invite = request(branch="oldstyle1")
    tx = server_transaction(invite, reliable=False)
    table.add(tx)
    assert table.match_request(invite.copy()) is tx
    ack = make_ack_for_non2xx(invite, response_to(invite, 404))
    assert ack.to_addr.tag == "totag9"
    assert table.match_request(ack) is tx  # the To tag is not part of the key
    assert table.cancel_target(make_cancel(invite)) is tx
    assert table.match_request(request(branch="oldstyle1", cseq=2)) is None
    # no branch at all
    bare = request(branch=None)
    tx2 = server_transaction(bare, reliable=False)
    table.add(tx2)
    assert table.match_request(bare.copy()) is tx2


# --------------------------------------------------------------------------------------------
# Both ends over a lossy datagram link, with a simulated clock


class Link:
    """A client and a server transaction, a clock and a wire that drops chosen messages."""

    def __init__(self, drop: set[int]) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, int, str, str]] = []  # (due, seq, side, name)
        self.cancelled: set[tuple[str, str, int]] = set()
        self.seq = 0
        self.sent = 0
        self.drop = drop
        self.client_got: list[int] = []
        self.server_got: list[str] = []
        invite = request()
        self.client = client_transaction(invite, reliable=False)
        self.server: ServerTransaction | None = None

    def apply(self, side: str, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, StartTimer):
                self.seq += 1
                heapq.heappush(self.timers, (self.now + a.delay, self.seq, side, a.name))
            elif isinstance(a, CancelTimer):
                for _, seq, s, name in self.timers:
                    if s == side and name == a.name:
                        self.cancelled.add((s, name, seq))
            elif isinstance(a, Send):
                self.sent += 1
                if self.sent in self.drop:
                    continue
                m = a.message
                if isinstance(m, Request):
                    if self.server is None:
                        self.server = server_transaction(m, reliable=False)
                        self.apply("server", self.server.start())
                    else:
                        self.apply("server", self.server.on_request(m))
                else:
                    self.apply("client", self.client.on_response(m))
            elif isinstance(a, Deliver):
                m = a.message
                if isinstance(m, Response):
                    self.client_got.append(m.status)
                else:
                    self.server_got.append(m.method)
                    if m.method == "INVITE":  # the TU rejects at once
                        assert self.server is not None
                        self.apply("server", self.server.send_response(response_to(m, 486)))

    def run(self) -> None:
        self.apply("client", self.client.start())
        for _ in range(200):  # bounded
            if not self.timers:
                return
            due, seq, side, name = heapq.heappop(self.timers)
            if (side, name, seq) in self.cancelled:
                continue
            self.now = due
            tx = self.client if side == "client" else self.server
            assert tx is not None
            self.apply(side, tx.on_timer(name))
        raise AssertionError("did not settle")


@pytest.mark.parametrize(
    ("drop", "retransmits"),
    [(set(), 0), ({1}, 1), ({1, 2}, 2), ({2}, 1), ({3}, 2)],
    ids=["no loss", "INVITE lost", "INVITE lost twice", "486 lost", "ACK lost"],
)
def test_lossy_link_settles(drop: set[int], retransmits: int) -> None:
    link = Link(drop)
    link.run()
    assert link.client_got == [486]  # the TU sees the final response once
    assert link.server_got == ["INVITE"]  # and the server TU the INVITE once
    assert link.client.state is State.TERMINATED
    assert link.server is not None and link.server.state is State.TERMINATED
    assert link.sent == 3 + retransmits  # INVITE, 486, ACK, plus what the loss cost


def test_messages_without_via_raise_typed_errors() -> None:
    table = TransactionTable()
    resp = response_to(request(), 200)
    resp.headers.remove("Via")
    with pytest.raises(SipError):
        table.match_response(resp)
    req = request()
    req.headers.remove("Via")
    with pytest.raises(SipError):
        table.match_request(req)
    with pytest.raises(SipError):
        server_transaction(req, reliable=False)


def test_parsed_messages_round_trip_through_the_layer() -> None:
    """What the layer builds serialises, parses back, and matches the same transaction."""
    table = TransactionTable()
    invite = request()
    parsed = parse_message(invite.to_bytes())
    assert isinstance(parsed, Request)
    tx = server_transaction(parsed, reliable=True)
    table.add(tx)
    ack = parse_message(make_ack_for_non2xx(invite, response_to(invite, 404)).to_bytes())
    cancel = parse_message(make_cancel(invite).to_bytes())
    assert isinstance(ack, Request) and isinstance(cancel, Request)
    assert table.match_request(ack) is tx
    assert table.cancel_target(cancel) is tx


def test_abandon_destroys_an_invite_client_transaction_per_9_1() -> None:
    """RFC 3261 §9.1: no final answer 64*T1 after the CANCEL, the TU destroys the INVITE
    transaction: its timers stop, it terminates, a late response is absorbed."""
    tx = client_transaction(request(), reliable=False, timers=TimerConfig())
    tx.start()
    tx.on_response(response_to(tx.request, 180))
    assert tx.state == "proceeding"
    assert summary(tx.abandon()) == ["terminated"]
    assert tx.terminated
    assert tx.abandon() == []  # once
    assert tx.on_response(response_to(tx.request, 487)) == []
    calling = client_transaction(request(), reliable=False, timers=TimerConfig())
    calling.start()
    assert summary(calling.abandon()) == ["cancel A", "cancel B", "terminated"]
