"""`ng911 run vsp --workers N`: worker processes sharing the VSP's port (ng911.node.workers).

Real processes on loopback: the parent, its workers, a UDP callee here that answers every
request from wherever it came (as SIPp does), and many caller sockets, so that the kernel
spreads them over the workers. Every transaction must complete: a response from the callee
must reach the worker that holds the client transaction (its own Via port).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from ng911.cli import main
from ng911.elements.addressing import WorkerRole
from ng911.net.steer import owner_of
from ng911.node.workers import decode_role, encode_role
from ng911.sip.message import Request, make_response
from ng911.sip.parse import parse_message

LOCAL = "127.0.0.1"


class Callee(asyncio.DatagramProtocol):
    """Answers INVITE/OPTIONS/MESSAGE 200 (to the source address); records the Vias seen."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.via_ports: list[int] = []
        self.source_ports: list[int] = []
        self.call_ids: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        if not isinstance(msg, Request) or msg.method == "ACK":
            return
        self.via_ports.append(msg.top_via.port or 5060)
        self.source_ports.append(addr[1])
        self.call_ids.append(msg.call_id)
        resp = make_response(msg, 200, to_tag="callee")
        assert self.transport is not None
        self.transport.sendto(resp.to_bytes(), addr)


class Caller(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait((data, addr))


async def _endpoint(proto, port: int = 0):
    loop = asyncio.get_running_loop()
    tr, p = await loop.create_datagram_endpoint(proto, local_addr=(LOCAL, port))
    return tr, p


def _request(method: str, uri: str, port: int, n: int) -> bytes:
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOCAL}:{port};branch=z9hG4bKw{n}x{port};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@vsp.example>;tag=a{n}\r\n"
        f"To: <{uri}>\r\n"
        f"Call-ID: workers-{n}-{port}@test\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:alice@{LOCAL}:{port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def _transaction(method: str, uri: str, shared: int, n: int) -> tuple[int, int]:
    """One request from a fresh socket; returns (final status, port it came from)."""
    tr, caller = await _endpoint(Caller)
    try:
        port = tr.get_extra_info("sockname")[1]
        tr.sendto(_request(method, uri, port, n), (LOCAL, shared))
        while True:
            data, addr = await asyncio.wait_for(caller.got.get(), 5.0)
            resp = parse_message(data)
            assert not isinstance(resp, Request)
            if resp.status >= 200:
                return resp.status, addr[1]
    finally:
        tr.close()


def _config(tmp_path: Path, callee_port: int, workers: int = 2) -> Path:
    cfg = tmp_path / "vsp.toml"
    cfg.write_text(
        f"""
[vsp]
name = "vsp-workers"
fqdn = "vsp.example"
esrp = "sip:{LOCAL}:{callee_port}"
workers = {workers}
listeners = [{{transport = "udp", host = "{LOCAL}", port = 0}}]
"""
    )
    return cfg


async def _start(cfg: Path, *extra: str) -> tuple[asyncio.subprocess.Process, dict]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ng911", "run", "vsp", "--config", str(cfg)),
        *("--ready", "--quiet", *extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line:
        err = await proc.stderr.read() if proc.stderr else b""
        raise AssertionError(f"no ready line: {err.decode()[-2000:]}")
    return proc, json.loads(line)


def _alive(pid: int) -> bool:
    """A live process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


async def _gone(pids: list[int], timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if not any(_alive(p) for p in pids):
            return True
        await asyncio.sleep(0.05)
    return False


async def _stop(proc: asyncio.subprocess.Process) -> bytes:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    return err


async def test_two_workers_share_the_port_and_get_their_own_responses(tmp_path):
    ctr, callee = await _endpoint(Callee)
    proc, ready = await _start(_config(tmp_path, ctr.get_extra_info("sockname")[1]))
    workers = ready["workers"]
    try:
        assert ready["ready"] == "vsp-workers" and len(workers) == 2
        assert all(_alive(p) for p in workers) and ready["pid"] == proc.pid
        shared = int(ready["addresses"][0].rsplit(":", 1)[1])
        # OPTIONS to the proxy itself: whichever worker gets it answers 200 (RFC 3261 §11)
        opts = await asyncio.gather(
            *(_transaction("OPTIONS", f"sip:{LOCAL}:{shared}", shared, n) for n in range(8))
        )
        assert opts == [(200, shared)] * 8
        # 911 calls through the proxy to the callee, from many sockets (so both workers
        # serve some): every INVITE gets its 200, which came back to the right worker
        n = 0
        while len(set(callee.via_ports)) < 2 and n < 64:
            batch = await asyncio.gather(
                *(_transaction("INVITE", "sip:911@vsp.example", shared, n + i) for i in range(8))
            )
            assert batch == [(200, shared)] * 8  # the answer leaves from the shared port
            n += 8
        assert len(set(callee.via_ports)) == 2, "the kernel gave every socket to one worker"
        assert shared not in callee.via_ports  # each worker's own port, not the shared one
        assert callee.via_ports == callee.source_ports  # sent from the port its Via names
        # a non-INVITE not for us is proxied the same way (RFC 3261 §11: a user part)
        cport = ctr.get_extra_info("sockname")[1]
        opts = await asyncio.gather(
            *(
                _transaction("OPTIONS", f"sip:bob@{LOCAL}:{cport}", shared, 900 + i)
                for i in range(8)
            )
        )
        assert opts == [(200, shared)] * 8
    finally:
        err = await _stop(proc)
        ctr.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert await _gone(workers), "a worker outlived its parent's SIGTERM"
    assert "workers_stopped" in err.decode()


async def test_a_dead_worker_is_restarted_and_a_killed_parent_leaves_no_orphans(tmp_path):
    ctr, _ = await _endpoint(Callee)
    proc, ready = await _start(_config(tmp_path, ctr.get_extra_info("sockname")[1]))
    shared = int(ready["addresses"][0].rsplit(":", 1)[1])
    first = ready["workers"]
    new: list[int] = []
    try:
        os.kill(first[0], signal.SIGKILL)
        assert proc.stderr is not None
        for _ in range(20):  # the parent logs the death, then the restart
            rec = json.loads(await asyncio.wait_for(proc.stderr.readline(), 10))
            if rec["what"] == "worker_restarted":
                new = [rec["pid"]]
                break
        assert new and new[0] not in first and _alive(new[0])
        batch = await asyncio.gather(
            *(_transaction("INVITE", "sip:911@vsp.example", shared, i) for i in range(16))
        )
        assert batch == [(200, shared)] * 16
        # the parent killed outright: its workers see their stdin close and stop
        proc.kill()
        await asyncio.wait_for(proc.wait(), 10)
        assert await _gone([first[1], *new]), "workers outlived a killed parent"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in [*first, *new]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        ctr.close()


def test_workers_are_refused_where_state_lives_in_one_process(tmp_path, capsys):
    cfg = tmp_path / "psap.toml"
    cfg.write_text('[psap]\nname = "p"\n')
    assert main(["run", "psap", "--config", str(cfg), "--workers", "2"]) == 2
    assert "only vsp and esrp" in capsys.readouterr().err
    vsp = tmp_path / "vsp.toml"
    vsp.write_text("[vsp]\nworkers = 0\n")
    assert main(["run", "vsp", "--config", str(vsp)]) == 2
    assert 'workers must be a number >= 1 or "auto", not 0' in capsys.readouterr().err
    vsp.write_text("[vsp]\nworkers = 65\n")
    assert main(["run", "vsp", "--config", str(vsp)]) == 2
    assert "workers must be 1..64" in capsys.readouterr().err
    vsp.write_text('[vsp]\nworkers = "many"\n')
    assert main(["run", "vsp", "--config", str(vsp)]) == 2
    assert "not 'many'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "vsp", "--config", str(vsp), "--workers", "lots"])
    assert 'a number or "auto"' in capsys.readouterr().err


def test_auto_is_one_worker_per_core_for_the_vsp_only_where_it_is_safe():
    """`workers = "auto"`: one per usable core; 1 for an element that is no proxy, with
    --events, and with Digest auth on and no shared nonce key. Both proxies default to 1
    (the registrar's bindings and the ESRP's subscriptions are per worker)."""
    import argparse

    from ng911.elements.config import EsrpConfig, VspConfig
    from ng911.node.workers import usable_cores, worker_count

    def args(element: str, workers=None, events=None) -> argparse.Namespace:
        return argparse.Namespace(element=element, workers=workers, events=events)

    cores = min(usable_cores(), 64)
    assert VspConfig().workers == 1 and EsrpConfig().workers == 1
    auto = VspConfig(workers="auto")
    assert worker_count(args("vsp"), VspConfig()) == 1
    assert worker_count(args("vsp"), auto) == cores
    assert worker_count(args("esrp"), EsrpConfig()) == 1
    assert worker_count(args("esrp", "auto"), EsrpConfig()) == cores
    assert worker_count(args("vsp", 1), auto) == 1  # --workers wins over the table
    assert worker_count(args("vsp", events="e.jsonl"), auto) == 1
    assert worker_count(args("vsp"), VspConfig(auth=True, workers="auto")) == 1
    assert worker_count(args("vsp"), VspConfig(auth=True, auth_secret="k", workers="auto")) == cores
    assert worker_count(args("psap", "auto"), VspConfig()) == 1


def test_worker_role_round_trips_and_refuses_garbage():
    role = WorkerRole(1, 2, (4000, 4001))
    assert decode_role(encode_role(role)) == (role, ()) and role.udp_port == 4001
    assert decode_role(encode_role(role, [5060, 5061])) == (role, (5060, 5061))
    with pytest.raises(Exception, match="bad worker role"):
        decode_role("{not json")


async def test_workers_that_cannot_bind_make_the_parent_exit_2(tmp_path):
    import socket

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEPORT: exclusive
    taken.bind((LOCAL, 0))
    try:
        cfg = tmp_path / "vsp.toml"
        port = taken.getsockname()[1]
        cfg.write_text(
            "[vsp]\nworkers = 2\n"
            f'listeners = [{{transport = "udp", host = "{LOCAL}", port = {port}}}]\n'
        )
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "ng911", "run", "vsp", "--config", str(cfg), "--ready"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        taken.close()
    assert proc.returncode == 2 and out == b""
    # the parent tries the port before starting any worker, and says why in one line
    lines = err.decode().splitlines()
    assert len(lines) == 1 and "address already in use" in lines[0], lines
    assert f"('{LOCAL}', {port})" in lines[0]


def test_worker_commands_carry_the_loop_and_events_on():
    """Each worker runs on the loop the parent was asked for, its events in a file of its own."""
    import argparse

    from ng911.elements.config import VspConfig
    from ng911.node.workers import worker_commands

    args = argparse.Namespace(
        element="vsp", config="c.toml", table=None, gc_freeze=1.0, quiet=True,
        idle_timeout=None, lost_cache=False, events="e.jsonl", loop="asyncio", metrics=None,
    )  # fmt: skip
    cmds = worker_commands(args, VspConfig(), 2)
    assert len(cmds) == 2
    for i, cmd in enumerate(cmds):
        assert cmd[cmd.index("--loop") + 1] == "asyncio"
        assert cmd[cmd.index("--events") + 1] == f"e.jsonl.w{i}"
    args.loop = None
    assert all("--loop" not in c for c in worker_commands(args, VspConfig(), 2))


async def test_one_upstream_socket_is_spread_over_the_workers_by_call_id(tmp_path):
    """An ESRP's upstream is a few BCF sockets: the kernel's hash by source gave every call
    of one socket to one worker. Steered by Call-ID (ng911.net.steer), the calls of one
    socket reach both workers, each call's messages meet in its owner (the retransmitted
    INVITE is absorbed by its server transaction, not proxied twice), and the answer still
    leaves from the shared port."""
    ctr, callee = await _endpoint(Callee)
    proc, ready = await _start(_config(tmp_path, ctr.get_extra_info("sockname")[1]))
    shared = int(ready["addresses"][0].rsplit(":", 1)[1])
    tr, caller = await _endpoint(Caller)
    port = tr.get_extra_info("sockname")[1]
    try:
        finals: dict[str, tuple[int, int]] = {}
        for n in range(24):
            invite = _request("INVITE", "sip:911@vsp.example", port, n)
            tr.sendto(invite, (LOCAL, shared))
            tr.sendto(invite, (LOCAL, shared))  # its retransmission (RFC 3261 Timer A)
        while len(finals) < 24:
            data, addr = await asyncio.wait_for(caller.got.get(), 5.0)
            resp = parse_message(data)
            assert not isinstance(resp, Request)
            if resp.status >= 200:
                finals[resp.call_id] = (resp.status, addr[1])
        assert set(finals.values()) == {(200, shared)}
        await asyncio.sleep(0.2)
        assert len(callee.via_ports) == 24, "a retransmission was proxied as a new INVITE"
        assert len(set(callee.via_ports)) == 2, "one upstream socket reached one worker only"
        # the same owner for the same Call-ID: the worker's port follows owner_of
        owners: dict[int, set[int]] = {}
        for call_id, via in zip(callee.call_ids, callee.via_ports, strict=True):
            owners.setdefault(owner_of(call_id, 2), set()).add(via)
        assert all(len(v) == 1 for v in owners.values()) and len(owners) == 2
    finally:
        tr.close()
        err = await _stop(proc)
        ctr.close()
    assert proc.returncode == 0, err.decode()[-2000:]


async def test_source_steering_keeps_one_upstream_socket_on_one_worker(tmp_path):
    """`--udp-steering source`: the kernel's choice alone (no hand-over)."""
    ctr, callee = await _endpoint(Callee)
    cfg = _config(tmp_path, ctr.get_extra_info("sockname")[1])
    proc, ready = await _start(cfg, "--udp-steering", "source")
    shared = int(ready["addresses"][0].rsplit(":", 1)[1])
    tr, caller = await _endpoint(Caller)
    port = tr.get_extra_info("sockname")[1]
    try:
        for n in range(8):
            tr.sendto(_request("INVITE", "sip:911@vsp.example", port, n), (LOCAL, shared))
        finals = 0
        while finals < 8:
            data, _ = await asyncio.wait_for(caller.got.get(), 5.0)
            resp = parse_message(data)
            finals += not isinstance(resp, Request) and resp.status >= 200
        assert len(set(callee.via_ports)) == 1
    finally:
        tr.close()
        err = await _stop(proc)
        ctr.close()
    assert proc.returncode == 0, err.decode()[-2000:]
