"""Helpers for the connection-limit, timeout and peer-authorisation tests: a real element
(`SipElement`, which answers OPTIONS with 200) with TCP and mutual-TLS listeners on loopback,
raw sockets for the hostile side, and a transport layer for the well-behaved peer."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import ssl

import pytest

from ng911.elements.config import ElementConfig, ListenerConfig, TlsProfile
from ng911.elements.runtime import SipElement
from ng911.net import Address, SipTransportLayer, Source
from ng911.node.build import tls_contexts
from ng911.pki.testpki import TestPki
from ng911.sip.headers import new_branch, new_call_id, new_tag
from ng911.sip.message import Request, Response
from ng911.sip.uri import parse_uri


def raise_nofile(need: int) -> None:
    """Soft RLIMIT_NOFILE up to the hard limit; skip the test when even that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else max(soft, need)
    if limit < need:
        pytest.skip(f"needs {need} file descriptors; the hard RLIMIT_NOFILE is {hard}")
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def esrp_config(
    pki: TestPki,
    *,
    tcp: ListenerConfig | None = None,
    tls: ListenerConfig | None = None,
    **timers: float,
) -> ElementConfig:
    """An element with a plain TCP and a mutual-TLS listener (the ESRP's certificate)."""
    c = pki.cert("esrp")
    return ElementConfig(
        name="esrp",
        fqdn="esrp.esinet.example",
        listeners=(tcp or ListenerConfig("tcp"), tls or ListenerConfig("tls")),
        tls=TlsProfile(
            cert=str(c.chain_path),
            key=str(c.key_path),
            ca=tuple(str(p) for p in pki.ca_files()),
            require_client_cert=True,
        ),
        **timers,  # type: ignore[arg-type]
    )


async def start_element(cfg: ElementConfig) -> tuple[SipElement, Address, Address]:
    client, server = tls_contexts(cfg)
    el = SipElement(cfg, client_tls=client, server_tls=server)
    addrs = await el.start()
    tcp = next(a for a in addrs if a.transport == "tcp")
    tls = next(a for a in addrs if a.transport == "tls")
    return el, tcp, tls


def options_request(transport: str = "TLS", host: str = "127.0.0.1") -> Request:
    headers = [
        ("Via", f"SIP/2.0/{transport} {host}:5061;branch={new_branch()};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:proxy@vsp.example>;tag={new_tag()}"),
        ("To", "<sip:esrp.esinet.example>"),
        ("Call-ID", new_call_id("vsp.example")),
        ("CSeq", "1 OPTIONS"),
    ]
    return Request("OPTIONS", parse_uri("sip:esrp.esinet.example"), headers)


def options_bytes(host: str = "127.0.0.1") -> bytes:
    return options_request("TCP", host).to_bytes()


class Peer:
    """A well-behaved peer: a transport layer that collects the responses it gets."""

    def __init__(self, client_tls: ssl.SSLContext | None = None) -> None:
        self.layer = SipTransportLayer(element="peer", client_tls=client_tls)
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.layer.on_message = self._on_message

    def _on_message(self, msg: Request | Response, src: Source) -> None:
        if isinstance(msg, Response):
            self.responses.put_nowait(msg)

    async def options(self, dest: Address, timeout: float = 10.0) -> Response:
        """OPTIONS to `dest` (the ESRP, named esinet.example); the final response."""
        await self.layer.send(
            options_request(dest.transport.upper()), dest, server_name="esinet.example"
        )
        while True:
            resp = await asyncio.wait_for(self.responses.get(), timeout)
            if resp.status >= 200:
                return resp

    async def close(self) -> None:
        await self.layer.close()


async def open_idle(
    port: int, count: int, *, host: str = "127.0.0.1", source: str | None = None
) -> list[socket.socket]:
    """`count` TCP connections that never send a byte (non-blocking connects, in batches)."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []

    async def one() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if source is not None:
            s.bind((source, 0))
        socks.append(s)
        await asyncio.wait_for(loop.sock_connect(s, (host, port)), 10)

    for start in range(0, count, 100):
        await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


async def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the peer closes (FIN or RST) `sock` within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
