"""Configuration → element: the one place that builds TLS contexts and clients from a config.

Why here, not in the element: an element takes its TLS contexts and its LoST client as
arguments (`client_tls=`, `server_tls=`, `lost=`), so a test or the in-process chain can
hand it contexts from a test PKI; reading certificate files named by a `TlsProfile` is
what a process starting from a TOML table (or the testbed's configs) does, once, here.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ng911.elements.calltaker import CallTaker
from ng911.elements.config import ConfigError, ElementConfig, EsrpConfig, VspConfig
from ng911.elements.esrp import Esrp
from ng911.elements.psap import Psapd
from ng911.elements.runtime import SipElement
from ng911.elements.ua import Caller
from ng911.elements.vsp import VspProxy
from ng911.i3log.jws import Signer
from ng911.i3log.sender import LogSender
from ng911.lost.client import LostClient
from ng911.node.logevents import LogEventMapper
from ng911.node.memory import release_freed_memory
from ng911.pki.errors import PkiError
from ng911.pki.tls import client_context, server_context

__all__ = [
    "ELEMENT_CLASSES",
    "attach_logger",
    "build_element",
    "close_element",
    "close_log_sender",
    "element_ids",
    "ids_of",
    "log_sender",
    "lost_client",
    "tls_contexts",
]

Observer = Callable[[Any], None]

ELEMENT_CLASSES: dict[str, type[SipElement]] = {
    "caller": Caller,
    "vsp": VspProxy,
    "esrp": Esrp,
    "psap": Psapd,
    "calltaker": CallTaker,
}


def _path(p: str) -> Path | None:
    return Path(p) if p else None


def tls_contexts(config: ElementConfig) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(client, server) contexts from `config.tls`: a client context when CAs are named, a
    server context when a certificate and key are (None otherwise)."""
    tls = config.tls
    client = None
    if tls.ca:
        client = client_context(
            [Path(p) for p in tls.ca],
            cert=_path(tls.cert),
            key=_path(tls.key),
            keylog=_path(tls.keylog),
        )
    server = None
    if tls.enabled:
        server = server_context(
            Path(tls.cert),
            Path(tls.key),
            [Path(p) for p in tls.ca],
            require_client_cert=tls.require_client_cert,
            keylog=_path(tls.keylog),
        )
    return client, server


def lost_client(
    cfg: EsrpConfig | VspConfig,
    *,
    observers: Sequence[Observer] | None = None,
    use_cache: bool = False,
    server: str = "lost",
) -> LostClient:
    """The LoST client of an ESRP (or of a VSP with `lost_url`): https with `lost_ca`, an
    ESRP's `lost_cert`/`lost_key`, and the element's TLS key log.

    `observers=None`: a client caching by `expires` (RFC 5222 §5.4), as deployed, unless the
    ESRP's table says `lost_cache = false`; a list: each query is reported to them
    (`ng911.lost.events.LostQueryEvent`), and answers are cached only with `use_cache` (the
    testbed's calls each pay the LoST round trip)."""
    ctx = None
    if cfg.lost_url.startswith("https:"):
        ctx = client_context(
            [Path(p) for p in cfg.lost_ca],
            cert=_path(getattr(cfg, "lost_cert", "")),
            key=_path(getattr(cfg, "lost_key", "")),
            keylog=_path(cfg.tls.keylog),
        )
    return LostClient(
        cfg.lost_url,
        ssl=ctx,
        timeout=getattr(cfg, "lost_timeout", 2.0),
        use_cache=use_cache or (observers is None and getattr(cfg, "lost_cache", True)),
        observers=list(observers or ()),
        element=cfg.name,
        server=server,
    )


def build_element(
    role: str,
    config: ElementConfig,
    *,
    observers: Iterable[Observer] = (),
    lost: LostClient | None = None,
    log_keep: int = 0,
) -> SipElement:
    """The element of `role` (caller, vsp, esrp, psap, calltaker) for `config`, with its TLS
    contexts built from `config.tls`, the LoST client of an ESRP (or of a VSP with a
    `lost_url`) from its config unless `lost` is given, and the process's memory release
    (malloc_trim) as its `release_memory` hook."""
    cls = ELEMENT_CLASSES[role]
    client, server = tls_contexts(config)
    obs = list(observers)
    kw: dict[str, Any] = {}
    if isinstance(config, EsrpConfig | VspConfig) and (cls is Esrp or config.lost_url):
        kw["lost"] = lost if lost is not None else lost_client(config)
    el = cls(config, log_keep=log_keep, observers=obs, client_tls=client, server_tls=server, **kw)
    el.release_memory = release_freed_memory
    if config.logger:
        attach_logger(el, config, client_tls=client)
    return el


def element_ids(config: ElementConfig) -> tuple[str, str]:
    """(elementId, agencyId) of an element's LogEvents (NENA-STA-010.3 §2.1.1, §2.1.3):
    its fqdn (its name when the fqdn is "localhost"), and `agency_id` or the fqdn's
    domain."""
    return ids_of(config.fqdn, config.name, config.agency_id)


def ids_of(fqdn: str, name: str, agency_id: str = "") -> tuple[str, str]:
    """(elementId, agencyId) from a name, the fqdn when there is one, and an agency."""
    element_id = fqdn if fqdn not in ("", "localhost") else name
    agency = agency_id or (element_id.split(".", 1)[1] if "." in element_id else element_id)
    return element_id, agency


def attach_logger(
    el: SipElement, config: ElementConfig, *, client_tls: ssl.SSLContext | None = None
) -> LogSender:
    """Give `el` a `LogSender` to `config.logger` and the mapper of its observations
    (`ng911.node.logevents`): on its transport's observers, its EventLog's sinks and its
    LoST client's observers. LogEvents are signed with the element's own TLS certificate
    and key; https to the logger uses `client_tls` (mutual TLS with that certificate)."""
    if not config.logger:
        raise ConfigError(f"{config.name}: no logger URL")
    if not config.tls.enabled:
        raise ConfigError(
            f"{config.name}: logger needs tls.cert and tls.key (LogEvents are signed with them)"
        )
    try:
        signer = Signer.from_files(config.tls.cert, config.tls.key)
    except PkiError as exc:
        raise ConfigError(f"{config.name}: logger signing key: {exc}") from None
    ctx = client_tls if config.logger.startswith("https:") else None
    sender = LogSender(config.logger, signer, ssl_context=ctx)
    element_id, agency_id = element_ids(config)
    mapper = LogEventMapper(sender, element_id, agency_id)
    el.transport.observers.append(mapper.observe)
    el.log.sinks.append(mapper.record)
    lost = getattr(el, "lost", None)
    if isinstance(lost, LostClient):
        lost.observers.append(mapper.observe)
    el.log_sender = sender
    return sender


def log_sender(el: SipElement) -> LogSender | None:
    """The element's LogSender, when its config names a logger."""
    sender = el.log_sender
    return sender if isinstance(sender, LogSender) else None


async def close_element(el: SipElement, drain: float = 1.0) -> None:
    """Close `el`, then its LogSender (what is still queued gets `drain` seconds)."""
    await el.close()
    await close_log_sender(el, drain)


async def close_log_sender(el: SipElement, drain: float = 1.0) -> None:
    """Close the LogSender of an element already closed (`close_element` is both): a chain
    stops its elements in order, then lets all their LogSenders drain at once."""
    sender, el.log_sender = log_sender(el), None
    if sender is not None:
        await sender.close(drain)
