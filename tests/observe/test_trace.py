"""The trace: hops, pairs, calls, SRD and its breakdown, bytes, handshakes, logs.

Calls are synthesised with known timings (synthcalls), so every figure has an exact value.
"""

import json

import pytest
from synthcalls import HOST, PORTS, ROLES, Chain, Timing, expected_srd

from ng911.net.events import MessageEvent
from ng911.observe import output
from ng911.observe.calls import Trace


def _trace(chain: Chain) -> Trace:
    t = Trace(ROLES)
    for ev in chain.events:
        t(ev)
    return t.finalize()


def test_every_message_gets_its_hop_and_partner():
    chain = Chain(("udp", "tcp", "tls", "udp"))
    chain.call()
    tr = _trace(chain)
    assert {m.hop for m in tr.messages} == {"hop1", "hop2", "hop3", "hop4"}
    for m in tr.messages:
        assert m.partner is not None, m.first_line
        other = tr.messages[m.partner]
        assert other.partner == m.index and other.data == m.data
        assert {m.direction, other.direction} == {"in", "out"}
    assert output.hop_transports(tr) == {"hop1": "udp", "hop2": "tcp", "hop3": "tls", "hop4": "udp"}


@pytest.mark.parametrize("transports", [("udp",) * 4, ("tls", "tls", "tls", "udp")])
def test_srd_invite_to_200_and_sdd_are_exact(transports):
    tm = Timing()
    chain = Chain(transports)
    for _ in range(3):
        chain.call(tm)
    tr = _trace(chain)
    ms = tr.call_measures(cold_calls=1)
    assert [m.cold for m in ms] == [True, False, False]
    assert all(m.ok and m.final_status == 200 for m in ms)
    hs = tuple(t == "tls" for t in transports)
    assert ms[0].srd == pytest.approx(expected_srd(tm, hs), abs=1e-6)  # cold: handshakes
    for m in ms[1:]:
        assert m.srd == pytest.approx(expected_srd(tm), abs=1e-6)
        # 200 leaves the taker `answer` ms after the 180: same path back
        assert m.invite_to_200 == pytest.approx(expected_srd(tm) + tm.answer, abs=1e-6)
        # BYE down and 200 up: all transits, each proxy twice, the taker's `ring`
        sdd = (
            2 * sum(tm.transit)
            + 2 * (tm.proc["vsp"] + tm.proc["esrp"] + tm.proc["psap-manhattan"])
            + tm.ring
        )
        assert m.sdd == pytest.approx(sdd, abs=1e-6)


def test_breakdown_sums_to_the_srd_and_splits_it_right():
    tm = Timing()
    chain = Chain(("tls", "tls", "tls", "tls"))
    chain.call(tm)
    chain.call(tm)
    tr = _trace(chain)
    cold, warm = tr.calls()
    b = tr.breakdown(warm)
    assert b is not None
    assert sum(b.values()) == pytest.approx(tr.measure(warm).srd, abs=1e-6)
    for i, hop in enumerate(("hop1", "hop2", "hop3", "hop4")):
        assert b[hop] == pytest.approx(2 * tm.transit[i], abs=1e-6)
    assert b["vsp"] == pytest.approx(2 * tm.proc["vsp"], abs=1e-6)
    assert b["esrp"] == pytest.approx(2 * tm.proc["esrp"], abs=1e-6)
    assert b["lost"] == pytest.approx(tm.lost, abs=1e-6)
    assert b["calltaker"] == pytest.approx(tm.ring, abs=1e-6)
    assert b["handshake"] == pytest.approx(0.0, abs=1e-9)
    bc = tr.breakdown(cold)
    assert bc is not None
    # four handshakes, the caller's included (its INVITE is reported after it)
    assert bc["handshake"] == pytest.approx(4 * tm.handshake, abs=1e-6)
    assert sum(bc.values()) == pytest.approx(tr.measure(cold).srd, abs=1e-6)


def test_b2bua_psap_joined_by_emergency_call_id():
    chain = Chain(("udp",) * 4, b2bua_psap=True)
    chain.call()
    tr = _trace(chain)
    calls = tr.calls()
    assert len(calls) == 1
    assert calls[0].call_ids == {"call1@caller.example", "b2b1@psap.example"}
    assert tr.measure(calls[0]).ok
    assert tr.breakdown(calls[0]) is not None


def test_failed_call_is_reported_with_its_final_response():
    chain = Chain(("udp",) * 4)
    chain.call(answer_status=486)
    tr = _trace(chain)
    (m,) = tr.call_measures()
    assert not m.ok and m.final_status == 486
    assert "486 Busy Here" in (m.reason or "")
    assert m.srd == pytest.approx(expected_srd(Timing()), abs=1e-6)  # the 180 still came


def test_processing_times_per_element():
    tm = Timing()
    chain = Chain(("udp",) * 4)
    chain.call(tm)
    tr = _trace(chain)
    p = tr.processing()
    assert p["vsp"]["INVITE"] == pytest.approx([tm.proc["vsp"]])
    assert p["vsp"]["180 INVITE"] == pytest.approx([tm.proc["vsp"]])
    assert p["esrp"]["INVITE"] == pytest.approx([tm.proc["esrp"]])  # LoST taken out
    assert p["esrp"]["INVITE+LoST"] == pytest.approx([tm.proc["esrp"] + tm.lost])
    assert p["calltaker"]["180 INVITE"] == pytest.approx([tm.ring])
    assert p["psap"]["200 BYE"] == pytest.approx([tm.proc["psap-manhattan"]])
    assert "caller" not in p


def test_bytes_per_hop_sip_vs_wire():
    chain = Chain(("udp", "tls", "tcp", "udp"))
    chain.call()
    tr = _trace(chain)
    b = output.hop_bytes(tr)
    assert b["hop1"]["wire_mean"] == b["hop1"]["sip_mean"]
    assert b["hop2"]["wire_mean"] == pytest.approx(b["hop2"]["sip_mean"] + 22)
    assert b["hop2"]["overhead_pct"] > 0
    # each message counted once (sending side): INVITE,100,180,200,ACK,BYE,200
    assert b["hop1"]["messages"] == 7


def test_handshake_stats_per_hop():
    chain = Chain(("tls", "udp", "tls", "udp"))
    chain.call()
    chain.call()
    tr = _trace(chain)
    hs = output.handshake_stats(tr)
    assert set(hs) == {"hop1", "hop3"}
    assert hs["hop1"]["full"] == 1 and hs["hop1"]["resumed"] == 0
    assert hs["hop1"]["full_mean_ms"] == pytest.approx(Timing().handshake)
    assert hs["hop3"]["versions"] == ["TLSv1.3"]


def test_ladder_has_every_message_and_lost_with_colours():
    chain = Chain(("udp", "tls", "tls", "udp"))
    chain.call()
    tr = _trace(chain)
    arrows = output.ladder(tr, tr.calls()[0])
    assert arrows[0].src == "caller" and arrows[0].dst == "vsp"
    assert arrows[0].label == "INVITE urn:service:sos" and arrows[0].t_send == 0.0
    assert not arrows[0].encrypted
    hop2 = [a for a in arrows if a.hop == "hop2"]
    assert hop2 and all(a.encrypted for a in hop2)
    lost = [a for a in arrows if "lost" in (a.src, a.dst)]
    assert [a.label for a in lost] == ["LoST findService", "LoST response"]
    assert [a.t_send for a in arrows] == sorted(a.t_send for a in arrows)
    messages = [a for a in arrows if a.kind == "message"]
    assert sum(1 for a in messages if a.hop is not None) == 27  # 7 × 4, the taker sends no 100
    # the first call opened hop 2 and hop 3: its ladder shows both TLS handshakes
    shakes = [a for a in arrows if a.kind == "handshake"]
    assert sorted(a.hop or "" for a in shakes) == ["hop2", "hop3"]
    assert all(a.t_recv is not None and a.t_recv >= a.t_send for a in shakes)
    assert all(a.label.startswith("TLS handshake (full") for a in shakes)


def test_logs_hold_every_event_and_reproduce_the_srd(tmp_path):
    chain = Chain(("udp", "tls", "tcp", "udp"))
    chain.call()
    tr = _trace(chain)
    files = output.write_logs(tr, tmp_path)
    assert set(files) == {"hop1", "hop2", "hop3", "hop4", "lost"}
    rows = [json.loads(x) for x in files["hop1"].read_text().splitlines()]
    assert len(rows) == 14
    inv = next(r for r in rows if r["element"] == "caller" and r["first_line"].startswith("INVITE"))
    ring = next(
        r for r in rows if r["element"] == "caller" and r["first_line"].startswith("SIP/2.0 180")
    )
    assert (ring["mono"] - inv["mono"]) * 1000 == pytest.approx(tr.call_measures()[0].srd)
    assert inv["peer"] == "vsp" and inv["hop"] == "hop1" and inv["data"].startswith("INVITE")


def test_garbage_and_unknown_events_never_crash():
    tr = Trace({})
    tr(object())
    tr(
        MessageEvent(
            ts=1.0,
            mono=1.0,
            element="stranger",
            direction="in",
            transport="udp",
            local=("127.0.0.1", 9),
            remote=("127.0.0.1", 10),
            sip_bytes=3,
            wire_bytes=3,
            data=b"\xff\x00garbage",
            call_id=None,
            first_line="",
        )
    )
    tr.finalize()
    assert tr.ignored == 1
    assert tr.calls() == []
    assert tr.messages[0].hop is None
    assert output.hop_bytes(tr) == {}
    assert output.lost_summary(tr) is None


def test_roles_come_from_the_table_not_from_names():
    tr = Trace(
        {
            "psap-bronx": "psap",
            "taker-bronx": "calltaker",
            "calltaker": "calltaker",
            "vsp": "vsp",
            "esrp1": "esrp",
        }
    )
    assert tr.role("psap-bronx") == "psap"
    assert tr.role("taker-bronx") == "calltaker"
    assert tr.role("calltaker") == "calltaker"
    assert tr.role("vsp") == "vsp"
    assert tr.role("esrp1") == "esrp"
    assert tr.role("kamailio") is None
    assert tr.role("psap-queens") is None  # not in the table: no guess from the name


def test_a_source_port_reused_by_another_element_is_told_apart():
    """Two elements of one host address can use the same source port one after the other
    (a connection closed, the kernel hands the port out again). Here the call taker's
    earlier connection to the PSAP left from the port the PSAP's connection to the call
    taker then uses; the hop-4 messages still pair and land on hop 4, because a
    connection's ends name each other. Before, the port's first user owned it, so the call
    taker's messages had itself as peer and were counted under "other", unpaired."""
    chain = Chain(("udp", "udp", "udp", "tls"))
    reused = (HOST, chain.ephemeral + 1)  # the port hop 4's connection will get
    register = b"REGISTER sip:psap SIP/2.0\r\nCall-ID: reg-1\r\nCSeq: 1 REGISTER\r\n\r\n"
    ok = b"SIP/2.0 200 OK\r\nCall-ID: reg-1\r\nCSeq: 1 REGISTER\r\n\r\n"
    earlier = [
        ("taker-manhattan", "out", reused, (HOST, PORTS["psap-manhattan"]), register, 1.0),
        ("psap-manhattan", "in", (HOST, PORTS["psap-manhattan"]), reused, register, 1.1),
        ("psap-manhattan", "out", (HOST, PORTS["psap-manhattan"]), reused, ok, 1.2),
        ("taker-manhattan", "in", reused, (HOST, PORTS["psap-manhattan"]), ok, 1.3),
    ]
    for element, direction, local, remote, data, at in earlier:
        chain.events.append(
            MessageEvent(
                ts=chain.wall + at,
                mono=at,
                element=element,
                direction=direction,
                transport="tls",
                local=local,
                remote=remote,
                sip_bytes=len(data),
                wire_bytes=len(data) + 22,
                data=data,
                call_id="reg-1",
                first_line=data.split(b"\r\n", 1)[0].decode(),
            )
        )
    chain.call()
    tr = _trace(chain)
    assert [m.first_line for m in tr.messages if m.hop is None] == []
    assert [m.first_line for m in tr.messages if m.partner is None] == []
    hop4 = [m for m in tr.messages if m.hop == "hop4" and m.call_id != "reg-1"]
    assert {m.element for m in hop4} == {"psap-manhattan", "taker-manhattan"}
