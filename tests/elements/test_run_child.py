"""`ng911 run` as the testbed drives it: --ready, --control, --events, and `ng911 run lost`."""

import asyncio
import json
import signal
import sys
from importlib import resources

from ng911.cli import main
from ng911.observe.eventlog import read_events
from ng911.testbed.launcher import open_chain


async def _line(stream, timeout=20.0):
    return json.loads(await asyncio.wait_for(stream.readline(), timeout))


async def test_a_controlled_caller_places_calls_on_request_and_reports_its_events(tmp_path):
    chain = await open_chain("plain")
    try:
        vsp = chain.vsp.local("udp")
        cfg = tmp_path / "caller.toml"
        cfg.write_text(
            f"""
[caller]
name = "caller-child"
aor = "sip:+12125550199@vsp.example"
proxy = "sip:{vsp.host}:{vsp.port}"
listeners = [{{transport = "udp", host = "127.0.0.1", port = 0}}]
hosts = [{{name = "{chain.vsp.fqdn}", address = "{vsp.host}"}}]
"""
        )
        events = tmp_path / "caller.jsonl"
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "ng911", "run", "caller", "--config", str(cfg)),
            *("--ready", "--control", "--quiet", "--events", str(events)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        assert (await _line(proc.stdout))["ready"] == "caller-child"  # registered
        lat, lon = chain.topology.point("Bronx")
        proc.stdin.write(b"not json\n")
        proc.stdin.write(
            json.dumps({"call": 7, "lat": lat, "lon": lon, "hangup_after": 0.01}).encode()
        )
        proc.stdin.write(b"\n")
        await proc.stdin.drain()
        assert "not JSON" in (await _line(proc.stdout))["error"]
        answer = await _line(proc.stdout)
        assert answer["call"] == 7 and answer["ok"] is True
        assert answer["record"]["status"] == 200
        proc.stdin.close()  # EOF: the caller stops and writes its events
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert err.decode().strip() == ""  # --quiet: no per-event log
        ef = read_events(events)
        assert ef.complete and ef.element == "caller-child" and ef.cpu_seconds > 0
        lines = {e.first_line.split(" ")[0] for e in ef.events if hasattr(e, "first_line")}
        assert {"REGISTER", "INVITE", "ACK", "BYE"} <= lines
        assert any(
            e.call_id == answer["record"]["call_id"] for e in ef.events if hasattr(e, "call_id")
        )
    finally:
        await chain.close()


def test_run_lost_rejects_a_bad_table(tmp_path, capsys):
    cfg = tmp_path / "lost.toml"
    cfg.write_text('[lost]\nhost = "127.0.0.1"\n')
    assert main(["run", "lost", "--config", str(cfg)]) == 2
    assert "boundaries" in capsys.readouterr().err
    cfg.write_text('[lost]\nboundaries = "x.geojson"\nportt = 1\n')
    assert main(["run", "lost", "--config", str(cfg)]) == 2
    assert "unknown option(s) portt" in capsys.readouterr().err
    assert main(["run", "lost", "--config", str(cfg), "--table", "nope"]) == 2
    assert "no table [nope]" in capsys.readouterr().err


async def test_run_lost_says_where_it_listens_and_stops_on_sigterm(tmp_path):
    geo = resources.files("ng911") / "data" / "nyc-boroughs.geojson"
    cfg = tmp_path / "lost.toml"
    cfg.write_text(
        f'[ecrf]\nname = "ecrf"\nhost = "127.0.0.1"\nboundaries = "{geo}"\n'
        'uris = {manhattan = ["sip:psap@manhattan.example"]}\n'
    )
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ng911", "run", "lost", "--config", str(cfg), "--table", "ecrf"),
        "--ready",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    ready = await _line(proc.stdout)
    assert ready["ready"] == "ecrf" and ready["url"].startswith("http://127.0.0.1:")
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-2000:]
