"""`ng911 run vsp --workers 2` over TCP and mutual TLS (ng911.node.workers).

Real processes and sockets on loopback, real TLS with certificates of the project's CA
(`ng911.pki.testpki`): the VSP's two workers share its stream port (SO_REUSEPORT, the kernel
hands each accepted connection to one of them), several callers each open their own
connection, and a call taker stands in for the ESRP. The call taker hangs up, so its BYE
comes back over the connection of the worker that proxied the INVITE, which may not be the
worker holding the caller's connection: that worker proxies it by the Route set, opening
its own connection to the caller's Contact (RFC 3261 §16.12, connection reuse per worker,
RFC 5923). Each worker's own metrics (PORT+i, here port 0: each picks one) show that both
carried calls; a killed worker is restarted by its parent and new calls succeed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.request
from pathlib import Path

import pytest
from test_workers import _alive, _start  # the same start and liveness checks as over UDP

from ng911.elements.config import CallerConfig, CallTakerConfig, load_toml
from ng911.elements.ua import Caller
from ng911.node.build import build_element
from ng911.node.workers import free_ports
from ng911.pki.testpki import build_test_pki

LOCAL = "127.0.0.1"
CALLERS = 6
NAMES = {"vsp": "proxy.vsp.example", "bob": "bob.vsp.example"} | {
    f"alice{i}": f"alice{i}.vsp.example" for i in range(CALLERS)
}  # each caller its own name and certificate: a TLS request to a domain reuses any
# connection authenticated as that domain (RFC 5923), so UAs must not share one


def _topology(tmp_path: Path, transport: str, vsp_port: int, bob_port: int) -> Path:
    """The TOML of the VSP (2 workers), the call taker and the callers over `transport`."""
    tls_tables: dict[str, str] = {}
    if transport == "tls":
        pki = build_test_pki(tmp_path / "pki", elements=())
        ca = ", ".join(f'"{p}"' for p in pki.ca_files())
        for name, fqdn in NAMES.items():
            c = pki.issue(name, ca="vsp", dns=(fqdn,), sip_domains=(fqdn,))
            tls_tables[name] = (
                f'tls = {{cert = "{c.chain_path}", key = "{c.key_path}", ca = [{ca}], '
                "require_client_cert = true}"
            )
    hosts = "hosts = [" + ", ".join(
        f'{{name = "{h}", address = "{LOCAL}"}}' for h in NAMES.values()
    ) + "]"  # fmt: skip

    def uri(name: str, port: int) -> str:
        if transport == "tls":
            return f"sips:{NAMES[name]}:{port}"
        return f"sip:{NAMES[name]}:{port};transport=tcp"

    def table(name: str, body: str, port: int = 0) -> str:
        return (
            f'[{name}]\nname = "{name}"\nfqdn = "{NAMES[name]}"\n{body}\n'
            f'listeners = [{{transport = "{transport}", host = "{LOCAL}", port = {port}}}]\n'
            f"{tls_tables.get(name, '')}\n{hosts}\n"
        )

    topo = tmp_path / "topo.toml"
    topo.write_text(
        table("vsp", f'esrp = "{uri("bob", bob_port)}"\nworkers = 2', vsp_port)
        + table(
            "bob",
            f'aor = "sip:bob@vsp.example"\npsap = "{uri("vsp", vsp_port)}"\n'
            "keepalive = 0.0\nhangup_after = 0.01",
            bob_port,
        )
        + "".join(
            table(
                f"alice{i}",
                f'proxy = "{uri("vsp", vsp_port)}"\nregister = false\nhangup_after = 5.0',
            )
            for i in range(CALLERS)
        )
    )
    return topo


def _invites_in(url: str) -> int:
    """INVITEs a worker received, from its own /metrics."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    m = re.search(r'ng911_sip_requests_total\{dir="in",method="INVITE"\} (\d+)', text)
    return int(float(m.group(1))) if m else 0


async def _calls(topo: Path) -> list[tuple[int | None, str | None]]:
    """CALLERS callers, each on its own connection, one 911 call each at once."""
    callers = [
        build_element("caller", load_toml(topo, f"alice{i}", CallerConfig), log_keep=100)
        for i in range(CALLERS)
    ]
    try:
        for c in callers:
            await c.start()
        recs = await asyncio.gather(
            *(asyncio.wait_for(c.place_call(), 15) for c in callers if isinstance(c, Caller))
        )
        return [(r.status, r.ended_by) for r in recs]
    finally:
        for c in callers:
            await c.close()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_two_stream_workers_carry_calls_and_survive_a_killed_worker(tmp_path, transport):
    vsp_port, bob_port = free_ports("tcp", LOCAL, 2)
    topo = _topology(tmp_path, transport, vsp_port, bob_port)
    proc, ready = await _start(topo, "--metrics", f"{LOCAL}:0")
    bob = build_element("calltaker", load_toml(topo, "bob", CallTakerConfig), log_keep=200)
    workers = ready["workers"]
    try:
        assert ready["addresses"] == [f"{transport}:{LOCAL}:{vsp_port}"] and len(workers) == 2
        await bob.start()
        # connections spread by the kernel: more callers until both workers carried calls
        # (bounded); every call answered, and ended by the call taker's BYE
        for _ in range(6):
            assert await _calls(topo) == [(200, "remote")] * CALLERS
            per_worker = [_invites_in(u) for u in ready["metrics"]]
            if all(per_worker):
                break
        assert all(per_worker), f"the kernel gave every connection to one worker: {per_worker}"
        assert sum(per_worker) >= CALLERS
        # a worker killed: the parent restarts it, and new calls (new connections) succeed
        os.kill(workers[0], signal.SIGKILL)
        assert proc.stderr is not None
        new = None
        for _ in range(20):
            rec = json.loads(await asyncio.wait_for(proc.stderr.readline(), 15))
            if rec["what"] == "worker_restarted":
                new = rec["pid"]
                break
        assert new is not None and new not in workers and _alive(new)
        assert await _calls(topo) == [(200, "remote")] * CALLERS
    finally:
        await bob.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-2000:]
