"""`ng911 run logger`: a [logger] table, one-line errors (exit 2), a ready line, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from ng911.cli import main
from ng911.i3log.events import ServiceStateChangeLogEvent, rfc3339
from ng911.i3log.jws import Signer
from ng911.pki.testpki import TestPki


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ('host = "127.0.0.1"\n', "signer_ca (or ca) is required"),
        ('signer_ca = ["ca.pem"]\nportt = 1\n', "unknown option(s) portt"),
        ('signer_ca = ["/nonexistent/ca.pem"]\n', "cannot read CA file"),
    ],
)
def test_bad_logger_config_is_one_line_and_exit_2(tmp_path: Path, capsys, table, why):
    cfg = tmp_path / "logger.toml"
    cfg.write_text("[logger]\n" + table)
    assert main(["run", "logger", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ng911 run logger: ") and why in err and err.count("\n") == 1


def test_bad_store_is_a_config_error(tmp_path: Path, capsys, pki: TestPki):
    cfg = tmp_path / "logger.toml"
    ca = pki.ca_files()[0]
    cfg.write_text(f'[logger]\nsigner_ca = ["{ca}"]\nstore = "{tmp_path}/no/such/dir/x.db"\n')
    assert main(["run", "logger", "--config", str(cfg)]) == 2
    assert "store" in capsys.readouterr().err


def test_element_logger_url_must_be_http(tmp_path: Path, capsys):
    cfg = tmp_path / "vsp.toml"
    cfg.write_text('[vsp]\nlogger = "ftp://x"\n')
    assert main(["run", "vsp", "--config", str(cfg)]) == 2
    assert "logger must be an http(s) URL" in capsys.readouterr().err


async def test_run_logger_serves_until_sigterm(tmp_path: Path, pki: TestPki):
    server = pki.cert("lost")
    cfg = tmp_path / "logger.toml"
    cas = json.dumps([str(p) for p in pki.ca_files()])
    cfg.write_text(
        f"""[logger]
name = "logger-child"
host = "127.0.0.1"
port = 0
cert = "{server.chain_path}"
key = "{server.key_path}"
ca = {cas}
store = "{tmp_path / "events.sqlite"}"
"""
    )
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ng911", "run", "logger", "--config", str(cfg), "--ready"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert ready["ready"] == "logger-child" and ready["url"].startswith("https://127.0.0.1:")
        c = pki.cert("esrp")
        ev = ServiceStateChangeLogEvent(
            timestamp=rfc3339(0),
            element_id="esrp.esinet.example",
            agency_id="esinet.example",
            new_state="Normal",
            affected_service_identifier="urn:emergency:service:sos.esrp",
        )
        body = json.dumps(Signer.from_files(c.chain_path, c.key_path).sign(ev))
        conn = aiohttp.TCPConnector(ssl=pki.client_context("esrp"))
        async with (
            aiohttp.ClientSession(connector=conn) as s,
            s.post(ready["url"] + "LogEvents", data=body) as r,
        ):
            assert r.status == 201, await r.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert (tmp_path / "events.sqlite").exists()
