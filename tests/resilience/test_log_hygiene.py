"""Issue 11, item 9: every logger of an element honours `log_file`, and what an attacker
sends is never written to the log unbounded or with raw control characters.

Before: the `ng911.net` logger wrote to stderr through Python's last-resort handler whatever
`log_file` said, and a parse error's reason repeated kilobytes of the peer's first line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ng911.net.log import MAX_FIELD, LogBudget, clean, log_event, log_limited

SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _long_version_line(n: int = 10_000) -> bytes:
    # a SIP version of 10 KB digits: the parser answers 505 and quotes the version
    return b"OPTIONS sip:vsp.example SIP/2." + b"9" * n + b"\r\n"


def _request_tail() -> bytes:
    return (
        b"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-x\r\n"
        b"From: <sip:a@vsp.example>;tag=1\r\nTo: <sip:vsp.example>\r\n"
        b"Call-ID: hygiene\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


async def test_ng911_run_writes_net_logs_to_log_file_bounded(tmp_path):
    port = _free_port()
    log_file = tmp_path / "vsp.jsonl"
    config = tmp_path / "vsp.toml"
    config.write_text(
        "[vsp]\n"
        'name = "vsp"\nworkers = 1\n'
        f'log_file = "{log_file}"\n'
        f'listeners = [{{ transport = "tcp", host = "127.0.0.1", port = {port} }}]\n'
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ng911",
        "run",
        "vsp",
        "--config",
        str(config),
        "--ready",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        ready = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert json.loads(ready)["ready"] == "vsp"
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(_long_version_line() + _request_tail())
        await w.drain()
        answer = await asyncio.wait_for(r.readline(), 20)
        assert answer.startswith(b"SIP/2.0 505")
        w.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    stderr = err.decode("utf-8", "replace")
    lines = log_file.read_text(encoding="utf-8").splitlines()
    parse_errors = [ln for ln in lines if '"sip_parse_error"' in ln]
    assert parse_errors, f"no ng911.net line in {log_file}:\n" + "\n".join(lines[:20])
    assert "sip_parse_error" not in stderr, stderr[:2000]
    for ln in parse_errors:
        assert len(ln) < 2_000, f"a {len(ln)}-character log line"
        rec = json.loads(ln)
        assert "...[+" in rec["reason"]  # says that it was cut


def test_log_event_truncates_and_escapes_fields(caplog):
    attack = "INVITE sip:x SIP/2.0\r\nX-Forged: \x1b[31m" + "A" * 10_000 + "\u2028\x00"
    with caplog.at_level(logging.WARNING, logger="ng911.net"):
        log_event(logging.WARNING, "sip_parse_error", peer="127.0.0.1:5060", reason=attack)
    (record,) = [r for r in caplog.records if r.name == "ng911.net"]
    line = record.getMessage()
    assert len(line) < 600
    assert all(c.isprintable() for c in line)
    reason = json.loads(line)["reason"]
    assert reason.startswith("INVITE sip:x SIP/2.0\\x0d\\x0aX-Forged: \\x1b[31m")
    assert reason.endswith("chars]") and "\x1b" not in reason and "\r" not in reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("short", "short"),
        ("a\nb", "a\\x0ab"),
        ("x" * (MAX_FIELD + 5), "x" * MAX_FIELD + "...[+5 chars]"),
    ],
)
def test_clean(value, expected):
    assert clean(value) == expected


def test_bytes_and_lists_are_bounded_too(caplog):
    with caplog.at_level(logging.INFO, logger="ng911.net"):
        log_event(
            logging.INFO,
            "x",
            data=b"\x16\x03" + b"B" * 5_000,
            identities=[f"d{i}.example" for i in range(500)],
        )
    line = next(r for r in caplog.records if r.name == "ng911.net").getMessage()
    assert len(line) < 6_000
    rec = json.loads(line)
    assert rec["data"].startswith("\\x16\\x03BBB") and rec["data"].endswith("bytes]")
    assert rec["identities"][-1] == "...[+480 items]"


def test_a_flood_of_one_event_costs_a_few_lines_a_second(caplog):
    budget = LogBudget(per_second=5)
    with caplog.at_level(logging.WARNING, logger="ng911.net"):
        for _ in range(1_000):
            log_limited(budget, logging.WARNING, "connection_refused", peer="127.0.0.1:1")
    lines = [r.getMessage() for r in caplog.records if r.name == "ng911.net"]
    assert 5 <= len(lines) <= 10  # one or two one-second windows
    budget._window -= 1  # the next second: one line says how many were left out
    with caplog.at_level(logging.WARNING, logger="ng911.net"):
        log_limited(budget, logging.WARNING, "connection_refused", peer="127.0.0.1:1")
    recs = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ng911.net"]
    assert recs[-1]["suppressed"] > 0
    # every event either logged or counted in a later line's `suppressed`
    assert len(recs) + sum(int(r.get("suppressed", 0)) for r in recs) == 1_001


def test_route_logs_sends_every_ng911_logger_to_the_stream_and_undoes_it(tmp_path, capsys):
    from ng911.node.logs import route_logs, unroute_logs

    root = logging.getLogger("ng911")
    before = (root.propagate, root.level, logging.getLogger("ng911.elements").level)
    path = tmp_path / "el.jsonl"
    with path.open("a", encoding="utf-8") as stream:
        handler = route_logs(stream)
        try:
            log_event(logging.INFO, "connection_timeout", peer="127.0.0.1:9", reason="x")
            logging.getLogger("ng911.lost.server").warning('{"event": "lost_thing"}')
        finally:
            unroute_logs(handler)
    text = path.read_text(encoding="utf-8")
    assert '"connection_timeout"' in text and '"lost_thing"' in text
    assert "connection_timeout" not in capsys.readouterr().err
    after = (root.propagate, root.level, logging.getLogger("ng911.elements").level)
    assert after == before
