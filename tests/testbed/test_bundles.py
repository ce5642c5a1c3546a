"""Exported bundles: what a user copies to N machines, run as N machines.

`ng911 testbed export` writes one directory per host; each is copied elsewhere (nothing may
point back into the export) and started with `ng911 run --bundle DIR` in a network namespace
of its own, at the address the export planned, then calls are placed across them over TLS.
The export itself is checked without namespaces.
"""

import asyncio
import json
import shutil
import subprocess
import sys
import tomllib

import pytest
from smalltopo import small_topology

from ng911.node.bundle import read_bundle
from ng911.testbed.logexport import read_store
from ng911.testbed.netns import NetnsLab, list_ours, unavailable_reason
from ng911.testbed.topology import load_topology

REASON = unavailable_reason()
NG911 = (sys.executable, "-m", "ng911")


def _export(tmp_path, scenario="tls-e2e"):
    topo_file = small_topology(tmp_path)
    out = tmp_path / "export"
    proc = subprocess.run(
        [
            *NG911,
            "testbed",
            "export",
            "--topology",
            str(topo_file),
            "--scenario",
            scenario,
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return load_topology(topo_file), out


def test_export_writes_one_self_contained_bundle_per_host(tmp_path):
    topo, out = _export(tmp_path)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        h.name for h in topo.hosts
    )
    for h in topo.hosts:
        host, role, path = read_bundle(out / h.name)
        assert (host, role) == (h.name, h.role)
        text = path.read_text()
        assert str(tmp_path) not in text  # relative paths only: it can be copied anywhere
        for f in ("tls/cert.pem", "tls/key.pem", "tls/ca.pem"):
            assert (out / h.name / f).is_file()
        assert (out / h.name / "tls/key.pem").stat().st_mode & 0o077 == 0
        table = tomllib.loads(text)[h.name]
        if h.role not in ("lost", "logger"):
            assert {e["name"] for e in table["hosts"]} == {x.domain for x in topo.hosts}
            logger = tomllib.loads((out / "logger" / "bundle.toml").read_text())["logger"]
            url = f"http://{logger['host']}:{logger['port']}/"  # tls-e2e: LoST's http
            assert table.get("logger") == (None if h.role == "caller" else url), h.name
            assert table.get("agency_id"), h.name
    assert (out / "lost" / "boundaries.geojson").is_file()
    # the logger's bundle (the small topology names none: the default host): whose
    # signatures it accepts and its store, relative to the bundle
    logger = tomllib.loads((out / "logger" / "bundle.toml").read_text())["logger"]
    assert logger["signer_ca"] == ["tls/ca.pem"] and logger["store"] == "logevents.sqlite"
    # a second export into the same directory is refused, not mixed
    proc = subprocess.run(
        [*NG911, "testbed", "export", str(out)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "not empty" in proc.stderr


def test_run_bundle_refuses_a_directory_that_is_not_one(tmp_path):
    proc = subprocess.run(
        [*NG911, "run", "--bundle", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "not an ng911 bundle" in proc.stderr


async def _start(lab, name, directory, *, control=False):
    proc = await asyncio.create_subprocess_exec(
        *lab.exec_prefix(name),
        *NG911,
        "run",
        "--bundle",
        str(directory),
        "--ready",
        "--quiet",
        *(["--control"] if control else []),
        stdin=asyncio.subprocess.PIPE if control else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return proc


async def _ready(name, proc, timeout=30.0):
    async with asyncio.timeout(timeout):
        while True:
            line = await proc.stdout.readline()
            if not line:
                err = (await proc.stderr.read()).decode(errors="replace")[-2000:]
                raise AssertionError(f"{name} exited before ready: {err}")
            if b'"ready"' in line:
                return json.loads(line)


@pytest.mark.skipif(REASON is not None, reason=f"network namespaces unavailable: {REASON}")
async def test_exported_bundles_call_each_other_across_namespaces(tmp_path):
    topo, out = _export(tmp_path)
    machines = tmp_path / "machines"
    for h in topo.hosts:  # "copy to each machine": a tree of its own, the export removed
        shutil.copytree(out / h.name, machines / h.name)
    shutil.rmtree(out)
    lab = NetnsLab(topo)
    procs = {}
    try:
        lab.setup()
        for h in topo.hosts:  # the export's addresses are the ones the namespaces got
            table = tomllib.loads((machines / h.name / "bundle.toml").read_text())[h.name]
            http = h.role in ("lost", "logger")
            addr = table["host"] if http else table["listeners"][0]["host"]
            assert addr == lab.addresses[h.name]
        first = [h.name for h in topo.hosts if h.role in ("lost", "logger", "psap", "vsp")]
        then = [h.name for h in topo.hosts if h.role in ("esrp", "calltaker", "caller")]
        for wave in (first, then):
            for name in wave:
                role = topo.host(name).role
                procs[name] = await _start(lab, name, machines / name, control=role == "caller")
            for name in wave:
                await _ready(name, procs[name])
        caller = procs[topo.by_role("caller")[0].name]
        for i, loc in enumerate(topo.locations):
            req = {"call": i, "lat": loc.lat, "lon": loc.lon, "hangup_after": 0.05}
            caller.stdin.write((json.dumps(req) + "\n").encode())
            await caller.stdin.drain()
            async with asyncio.timeout(30):
                answer = json.loads(await caller.stdout.readline())
            assert answer.get("ok"), answer
            psap = topo.psap_for_borough(loc.borough)
            taker = topo.takers_of(psap.name)[0]
            assert taker.domain in answer["record"]["answered_by"], answer
        # TLS across the namespaces (tls-e2e): the caller's bundle holds its key log
        assert (machines / "caller" / "keys.log").stat().st_size > 0
        for p in procs.values():  # the elements drain their LogEvents as they stop
            if p.returncode is None:
                p.terminate()
        for name, p in procs.items():
            if topo.host(name).role != "logger":
                await asyncio.wait_for(p.wait(), 10)
        events = await read_store(machines / "logger" / "logevents.sqlite")
        assert {e.call_id_sip for e in events if e.log_event_type == "CallStartLogEvent"}
    finally:
        for p in procs.values():
            if p.returncode is None:
                p.terminate()
        for p in procs.values():
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                p.kill()
                await p.wait()
        lab.teardown()
    assert not [ns for ns in list_ours() if ns.startswith(lab.prefix)]
