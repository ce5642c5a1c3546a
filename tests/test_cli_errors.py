"""CLI hygiene (issue 14): every error is one line naming the file, table or address, exit
status 2, never a traceback; every sub-command and option has help text.

The error paths run the real command (`python -m ng911 ...`) as a subprocess, as a user
would, each in its own directory with the files it needs.
"""

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ng911.cli import build_parser

SRC = Path(__file__).resolve().parent.parent / "src"
NYC = SRC / "ng911" / "data" / "nyc-boroughs.geojson"


def _parsers(parser: argparse.ArgumentParser, path: str = "ng911"):
    """(command path, parser) of the whole tree, walked independently of `ng911.cli.walk`."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_subcommand_and_option_has_help_text():
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions if a.help}
                missing += [f"{path} {name}" for name in action.choices if name not in helped]
            elif not action.help:  # argparse.SUPPRESS (a hidden option) is deliberate
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


@pytest.fixture(scope="module")
def busy_port():
    """A TCP port on 127.0.0.1 somebody else is listening on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


FILES = {
    "garbled.json": "garbage{",
    "nofeatures.json": '{"type": "FeatureCollection", "features": [{"x": 1}]}',
    "badgeom.json": '{"type": "FeatureCollection", "features": [{"type": "Feature", '
    '"properties": {}, "geometry": {"type": "Polygon", "coordinates": "x"}}]}',
    "notapem.pem": "not a certificate\n",
    "notresults.json": '{"x": 1}',
    "list.json": "[1, 2]",
    "bad.toml": "[lost\n",
    "ok.toml": f'[lost]\nboundaries = "{NYC}"\n',
    "unknown.toml": "[vsp]\nbogus = 1\n",
    "lost-nodata.toml": '[lost]\nboundaries = "missing.json"\n',
    "lost-garbled.toml": '[lost]\nboundaries = "garbled.json"\n',
    "lost-port.toml": f'[lost]\nboundaries = "{NYC}"\nport = 70000\n',
    "lost-portstr.toml": f'[lost]\nboundaries = "{NYC}"\nport = "abc"\n',
    "lost-tls.toml": f'[lost]\nboundaries = "{NYC}"\ncert = "nocert.pem"\nkey = "nokey.pem"\n',
    "lost-limit.toml": f'[lost]\nboundaries = "{NYC}"\nheader_timeout = -1\n',
    "vsp-port.toml": '[vsp]\nlisteners = [{transport = "udp", port = 70000}]\n',
    "vsp-tls.toml": '[vsp]\nlisteners = [{transport = "tls", port = 0}]\n'
    '[vsp.tls]\ncert = "nocert.pem"\nkey = "nokey.pem"\n',
}

# (argv, what the one line must name); "{busy}" is a port in use
CASES = [
    (["lost", "serve", "--data", "missing.json"], "missing.json"),
    (["lost", "serve", "--data", "garbled.json"], "garbled.json: not GeoJSON"),
    (["lost", "serve", "--data", "nofeatures.json"], "nofeatures.json"),
    (["lost", "serve", "--data", "badgeom.json"], "badgeom.json: bad geometry"),
    (["lost", "serve", "--port", "70000"], "port 70000 out of range"),
    (["lost", "serve", "--port", "abc"], "--port: not a port number: 'abc'"),
    (["lost", "serve", "--tls-cert", "nocert.pem", "--tls-key", "nokey.pem"], "nocert.pem"),
    (["lost", "serve", "--tls-cert", "notapem.pem", "--tls-key", "notapem.pem"], "notapem.pem"),
    (["lost", "serve", "--tls-cert", "notapem.pem"], "--tls-cert and --tls-key go together"),
    (["lost", "serve", "--port", "{busy}"], "('127.0.0.1', {busy})"),
    (["lost", "serve", "--max-connections", "0"], "max_connections"),
    (["run", "lost", "--config", "missing.toml"], "missing.toml"),
    (["run", "lost", "--config", "bad.toml"], "bad.toml"),
    (["run", "esrp", "--config", "ok.toml"], "ok.toml: no table [esrp]"),
    (["run", "vsp", "--config", "unknown.toml"], "unknown.toml:[vsp]: unknown option(s) bogus"),
    (["run", "lost", "--config", "lost-nodata.toml"], "missing.json"),
    (["run", "lost", "--config", "lost-garbled.toml"], "garbled.json: not GeoJSON"),
    (["run", "lost", "--config", "lost-port.toml"], "lost-port.toml:[lost]: port"),
    (["run", "lost", "--config", "lost-portstr.toml"], "lost-portstr.toml:[lost]: port"),
    (["run", "lost", "--config", "lost-tls.toml"], "nocert.pem"),
    (["run", "lost", "--config", "lost-limit.toml"], "lost-limit.toml:[lost]: header_timeout"),
    (["run", "lost", "--config", "lost-busy.toml"], "('127.0.0.1', {busy})"),
    (["run", "vsp", "--config", "vsp-port.toml"], "vsp-port.toml:[vsp].listeners[0]"),
    (["run", "vsp", "--config", "vsp-tls.toml"], "nocert.pem"),
    (["run", "vsp", "--config", "vsp-busy.toml"], "('127.0.0.1', {busy})"),
    (["run"], "give ELEMENT and --config FILE"),
    (["testbed", "report", "notresults.json"], "notresults.json: not an ng911 results file"),
    (["testbed", "report", "list.json"], "list.json: not an ng911 results file"),
    (["testbed", "report", "garbled.json"], "garbled.json: not JSON"),
    (["testbed", "report", "missing.json"], "missing.json"),
    (["pki", "show", "missing.pem"], "missing.pem"),
    (["pki", "issue", "x", "--ca", "noca"], "noca holds no CA"),
    (["lost", "bogus"], "invalid choice: 'bogus'"),
]


@pytest.mark.parametrize(("argv", "names"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_an_error_is_one_line_naming_what_is_wrong_and_exit_2(tmp_path, busy_port, argv, names):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "lost-busy.toml").write_text(f'[lost]\nboundaries = "{NYC}"\nport = {busy_port}\n')
    (tmp_path / "vsp-busy.toml").write_text(
        f'[vsp]\nlisteners = [{{transport = "tcp", port = {busy_port}}}]\n'
    )
    argv = [a.replace("{busy}", str(busy_port)) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, "-m", "ng911", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert names.replace("{busy}", str(busy_port)) in lines[0]
    assert lines[0].startswith("ng911 ")
    assert proc.returncode == 2
    assert not (tmp_path / "report.html").exists()  # testbed report: nothing written
