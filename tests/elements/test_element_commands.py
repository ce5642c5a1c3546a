"""`ng911 chain` and `ng911 run ELEMENT --config FILE`."""

import asyncio
import json
import signal
import socket
import sys

from ng911.cli import main
from ng911.location.geodetic import Point
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.store import slug
from ng911.testbed.launcher import open_chain


def test_chain_command_calls_every_borough(capsys):
    assert main(["chain", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    # each call reached the PSAP of the borough it was placed from, one call per borough
    # (by PSAP name: `manhattan` or the testbed's host name `psap-manhattan`)
    store = EmbeddedStore.from_geojson()
    boroughs = [
        slug(s.area.name)
        for x in lines
        if (s := store.lookup(Point(x["lat"], x["lon"]), "urn:service:sos"))
    ]
    assert [x["psap"].removeprefix("psap-") for x in lines] == boroughs
    assert sorted(boroughs) == ["bronx", "brooklyn", "manhattan", "queens", "staten-island"]
    assert all(x["status"] == 200 for x in lines)


def test_run_with_a_bad_config(tmp_path, capsys):
    cfg = tmp_path / "x.toml"
    cfg.write_text("[vsp]\nno_such_option = 1\n")
    assert main(["run", "vsp", "--config", str(cfg)]) == 2
    assert "unknown option" in capsys.readouterr().err
    assert main(["run", "vsp", "--config", str(tmp_path / "missing.toml")]) == 2


async def test_caller_process_from_toml_calls_the_in_process_chain(tmp_path):
    chain = await open_chain("plain")
    try:
        vsp = chain.vsp.local("udp")
        lat, lon = chain.topology.point("Queens")
        cfg = tmp_path / "caller.toml"
        cfg.write_text(
            f"""
[caller]
name = "caller-process"
aor = "sip:+12125550199@vsp.example"
proxy = "sip:{vsp.host}:{vsp.port}"
hangup_after = 0.01
lat = {lat}
lon = {lon}
listeners = [{{transport = "udp", host = "127.0.0.1", port = 0}}]
hosts = [{{name = "{chain.vsp.fqdn}", address = "{vsp.host}"}}]
"""
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ng911.cli",
            "run",
            "caller",
            "--config",
            str(cfg),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
        rec = json.loads(out.decode().splitlines()[-1])
        assert rec["status"] == 200
        assert chain.psaps["psap-queens"].call_log[-1].caller == "sip:+12125550199@vsp.example"
        # the process logged JSON lines on stderr
        first = err.decode().splitlines()[0]
        assert json.loads(first)["element"] == "caller-process"
    finally:
        await chain.close()


async def test_run_vsp_process_answers_options_and_stops_on_sigterm(tmp_path):
    cfg = tmp_path / "vsp.toml"
    cfg.write_text(
        """
[vsp]
name = "vsp-process"
workers = 1
listeners = [{transport = "udp", host = "127.0.0.1", port = 0}]
"""
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ng911.cli",
        "run",
        "vsp",
        "--config",
        str(cfg),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        listening = json.loads(line)
        assert listening["what"] == "listening"
        port = int(listening["address"].rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(
            None, udp_exchange, port, raw_request("OPTIONS", ruri="sip:127.0.0.1")
        )
        assert reply.startswith(b"SIP/2.0 200")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def udp_exchange(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3.0)
        s.bind(("127.0.0.1", 0))
        s.sendto(data, ("127.0.0.1", port))
        return s.recvfrom(65535)[0]


def raw_request(method: str, *, ruri: str) -> bytes:
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKcmd1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:ops@x.example>;tag=1\r\n"
        f"To: <{ruri}>\r\n"
        "Call-ID: cmd-1@x\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
