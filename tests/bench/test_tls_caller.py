"""`bench/loadgen.py`'s TLS caller against a proxy that resets a connection it accepted."""

from __future__ import annotations

import asyncio
import ssl

from bench_scripts import load_bench


async def test_a_connection_reset_while_the_others_are_made_fails_calls_not_the_step(tmp_path):
    """Kamailio's TLS worker reset one of the 8 connections after its handshake, while the
    caller was still making the others (`bench/load.py`, 2026-12-06): the caller then read
    the closed connection's address, got None, and the whole Kamailio ladder was lost
    ("generator failed: TypeError"). Now its address is read as it is made, and a
    connection found reset before the first call is replaced: the step measures the proxy,
    not its start-up."""
    loadgen = load_bench("loadgen")
    pki = tmp_path / "pki"
    pki.mkdir()
    loadgen.make_pki(pki)
    server_ctx = loadgen.tls_context(pki, "proxy", server=True)
    accepted: list[asyncio.StreamWriter] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        if len(accepted) == 2:  # the second is up: reset the first (before the third)
            accepted[0].transport.abort()
        try:
            while await reader.read(65536):
                pass  # never answers: the calls on the live connection time out too
        except (ConnectionError, ssl.SSLError):
            pass

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await asyncio.wait_for(
            loadgen.tls_caller(port, 5060, rate=30, seconds=0.2, pki_dir=pki, connections=3),
            30,
        )
    finally:
        server.close()
        for w in accepted:
            w.transport.abort()
    assert result["calls"] == 6
    assert result["ok"] == 0 and result["failed"] == 6  # nobody answers here
    assert len(accepted) == 4  # the reset connection was replaced before the first call
