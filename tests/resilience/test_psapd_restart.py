"""Issue 11 item 4: a psapd killed (-9) and restarted answers the next call, not 480.

Before: the restarted psapd had no registrations and refused every call until each call
taker's refresh came (up to an hour). Now it reloads them from its SQLite file
(`registrations`), and the call takers' OPTIONS keep-alives make them register again as
soon as psapd answers after not answering.
"""

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest
from failover_helpers import RawUa, free_port, until

from ng911.elements.calltaker import CallTaker
from ng911.elements.config import CallTakerConfig, HostEntry, ListenerConfig

FQDN = "manhattan.psap.example"
TAKER = "taker1.manhattan.psap.example"


def _config(tmp_path: Path, port: int, registrations: str) -> Path:
    cfg = tmp_path / "psap.toml"
    cfg.write_text(
        f"""
[psap]
name = "psap-child"
fqdn = "{FQDN}"
domain = "{FQDN}"
listeners = [{{transport = "udp", host = "127.0.0.1", port = {port}}}]
hosts = [{{name = "{TAKER}", address = "127.0.0.1"}}]
t1 = 0.5
registrations = "{registrations}"
"""
    )
    return cfg


async def _start(cfg: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ng911", "run", "psap", "--config", str(cfg), "--ready"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert json.loads(line)["ready"] == "psap-child", line
    return proc


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 20)


async def _call(port: int) -> int:
    ua = await RawUa.open(port, ack=True)
    try:
        cid = ua.invite()
        return (await ua.final(cid, 5)).status
    finally:
        ua.close()


@pytest.mark.parametrize("how", ["registrations-file", "keepalive"])
async def test_a_restarted_psapd_answers_the_next_call(tmp_path, how):
    port = free_port()
    registrations = str(tmp_path / "psap-registrations.sqlite") if how != "keepalive" else ""
    cfg = _config(tmp_path, port, registrations)
    procs = [await _start(cfg)]
    taker = CallTaker(
        CallTakerConfig(
            name="taker",
            fqdn=TAKER,
            listeners=(ListenerConfig("udp", "127.0.0.1", 0),),
            hosts=(HostEntry(FQDN, "127.0.0.1"), HostEntry(TAKER, "127.0.0.1")),
            t1=0.5,
            aor=f"sip:taker1@{FQDN}",
            psap=f"sip:{FQDN}:{port}",
            keepalive=0.3 if how == "keepalive" else 0.0,
        ),
        log_keep=1000,
    )
    try:
        await taker.start()
        assert await _call(port) == 200
        registered = len(taker.log.find("registered"))

        await _kill(procs[0])
        if how == "keepalive":  # the taker notices that psapd is gone
            assert await until(lambda: bool(taker.log.find("psap_unreachable")), 10)
        procs.append(await _start(cfg))
        if how == "keepalive":  # ... and registers again as soon as it answers
            assert await until(lambda: len(taker.log.find("registered")) > registered, 10)
            assert taker.log.find("psap_back")
        else:  # nothing sent by the taker: psapd reloaded the binding
            assert len(taker.log.find("registered")) == registered

        assert await _call(port) == 200  # not 480
    finally:
        await taker.close()
        for p in procs:
            await _kill(p)
