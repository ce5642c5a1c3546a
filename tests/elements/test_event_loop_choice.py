"""`ng911 run --loop` / the `loop` key (`ng911.node.loop`): auto takes uvloop when installed,
asyncio forces the standard loop, a bad value is a clear error; `ng911 run` serves on it."""

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ng911.elements.config import ConfigError, VspConfig
from ng911.node.loop import resolve_loop, run

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_resolve():
    assert resolve_loop("asyncio") == "asyncio"
    assert resolve_loop("auto") == ("uvloop" if HAVE_UVLOOP else "asyncio")
    with pytest.raises(ConfigError, match="not one of"):
        resolve_loop("trio")


def test_config_key_checked():
    assert VspConfig(name="v", esrp="sip:127.0.0.1:5060").loop == "auto"
    with pytest.raises(ConfigError, match="loop"):
        VspConfig(name="v", esrp="sip:127.0.0.1:5060", loop="fast")


def test_run_on_the_chosen_loop():
    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(kind(), "asyncio").startswith("asyncio")
    if HAVE_UVLOOP:
        assert run(kind(), "auto").startswith("uvloop")


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop not installed")
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_ng911_run_vsp_on_each_loop_answers_options(tmp_path, loop):
    import socket

    cfg = tmp_path / "vsp.toml"
    cfg.write_text(
        '[vsp]\nname = "vsp-loop"\nesrp = "sip:127.0.0.1:9"\n'
        'listeners = [{transport = "udp", host = "127.0.0.1", port = 0}]\n'
        f'loop = "{loop}"\n'
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ng911", "run", "vsp", "--config", str(cfg), "--quiet", "--ready"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        port = int(ready["addresses"][0].rsplit(":", 1)[1])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        me = s.getsockname()[1]
        s.sendto(
            (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKloop{loop}\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:t@x>;tag=1\r\nTo: <sip:v@x>\r\n"
                "Call-ID: loop-test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        data, _ = s.recvfrom(65535)
        s.close()
        assert data.startswith(b"SIP/2.0 200")
    finally:
        proc.terminate()
        proc.wait(10)


def test_ng911_run_refuses_a_bad_loop(tmp_path):
    cfg = tmp_path / "vsp.toml"
    cfg.write_text('[vsp]\nname = "v"\nesrp = "sip:127.0.0.1:9"\nloop = "fast"\n')
    env = dict(os.environ, PYTHONPATH=SRC)
    r = subprocess.run(
        [sys.executable, "-m", "ng911", "run", "vsp", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 2 and "loop" in r.stderr
