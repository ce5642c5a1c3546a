"""`ng911 lost serve`: run the LoST server (ECRF) on the embedded or PostGIS store."""

from __future__ import annotations

import argparse
import asyncio
import ssl
from dataclasses import fields
from pathlib import Path
from typing import Any

from ng911.lost.engine import EngineConfig, NextServer
from ng911.lost.limits import HttpLimits
from ng911.lost.server import LostServer, ServerConfig, serve
from ng911.lost.store import BoundaryStore, MappingConfig, ServiceArea


def register(sub: Any) -> None:
    lost = sub.add_parser("lost", help="the LoST server (ECRF, RFC 5222)")
    lsub = lost.add_subparsers(dest="lost_command", metavar="ACTION")
    p = lsub.add_parser(
        "serve",
        help="serve findService/listServices/getServiceBoundary over HTTP(S)",
        description=(
            "Answer LoST queries at /lost, /LoST (with or without a trailing /) and / from "
            "service boundaries (GeoJSON). "
            "Default data: the five NYC boroughs, a PSAP each (sip:psap-<borough>@esinet.example)."
        ),
    )
    p.add_argument("--data", type=Path, help="GeoJSON FeatureCollection of service areas")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--store", choices=("embedded", "postgis"), default="embedded")
    p.add_argument("--dsn", help="PostgreSQL DSN for --store postgis (data loaded at start)")
    p.add_argument("--source", default="ecrf.esinet.example", help="this server's LoST name")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds a mapping may be cached")
    p.add_argument("--uri-scheme", choices=("sip", "sips"), default="sip")
    p.add_argument("--domain", default="esinet.example", help="domain of generated PSAP URIs")
    p.add_argument("--next-server", help="URL of the LoST server for locations we do not cover")
    p.add_argument(
        "--redirect-status",
        type=int,
        choices=(301, 302, 303, 307, 308),
        help="answer iterative queries outside coverage with this HTTP redirect to"
        " --next-server (Location header) instead of a LoST <redirect>",
    )
    p.add_argument(
        "--default-uri", help="default route: answer this URI (with a warning) instead of notFound"
    )
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--tls-ca", type=Path, help="CA file to verify client certificates")
    p.add_argument("--require-client-cert", action="store_true", help="mutual TLS")
    add_limit_arguments(p)
    p.set_defaults(func=run_serve)
    lost.set_defaults(func=lambda args: (lost.print_help(), 2)[1])


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    """The connection limits (`ng911.lost.limits`) as flags; defaults from `HttpLimits`."""
    d = HttpLimits()
    g = p.add_argument_group("limits (a slow or greedy client costs seconds, not minutes)")
    late, shut = "must arrive within this; else 408", "are closed at once"
    for flag, kind, default, metavar, text in (
        ("--max-body", int, ServerConfig().max_body, "BYTES", "larger request bodies get 413"),
        ("--header-timeout", float, d.header_timeout, "S", f"a request's head {late}"),
        ("--body-timeout", float, d.body_timeout, "S", f"a request's body {late}"),
        ("--idle-timeout", float, d.idle_timeout, "S", "close idle keep-alive connections"),
        ("--max-connections", int, d.max_connections, "N", f"connections beyond this {shut}"),
        ("--max-per-source", int, d.max_per_source, "N", f"connections per client address {shut}"),
    ):
        g.add_argument(
            flag, type=kind, default=default, metavar=metavar, help=f"{text} (default %(default)s)"
        )


def limits_from_args(args: argparse.Namespace) -> HttpLimits:
    try:
        return HttpLimits(**{f.name: getattr(args, f.name) for f in fields(HttpLimits)})
    except ValueError as exc:
        raise SystemExit(f"ng911 lost serve: {exc}") from None


def server_ssl_context(
    cert: Path, key: Path, ca: Path | None, require_client_cert: bool
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def build_store(args: argparse.Namespace, mapping: MappingConfig) -> BoundaryStore:
    if args.store == "postgis":
        from ng911.lost.postgis import PostgisStore

        if not args.dsn:
            raise SystemExit("--store postgis needs --dsn")
        return PostgisStore.from_geojson(args.dsn, args.data, mapping)
    from ng911.lost.embedded import EmbeddedStore

    return EmbeddedStore.from_geojson(args.data, mapping)


def run_serve(args: argparse.Namespace) -> int:
    mapping = MappingConfig(uri_scheme=args.uri_scheme, domain=args.domain)
    store = build_store(args, mapping)
    default = None
    if args.default_uri:
        default = ServiceArea("default", "Default", (args.default_uri,), "Default PSAP")
    config = ServerConfig(
        engine=EngineConfig(
            source=args.source,
            ttl=args.ttl,
            next_server=NextServer(args.next_server) if args.next_server else None,
            default_area=default,
        ),
        max_body=args.max_body,
        limits=limits_from_args(args),
        redirect_status=args.redirect_status,
    )
    ctx = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("--tls-cert and --tls-key go together")
        ctx = server_ssl_context(args.tls_cert, args.tls_key, args.tls_ca, args.require_client_cert)
    server = LostServer(store, config)

    async def main() -> None:
        running = await serve(server.app, args.host, args.port, ssl_context=ctx)
        print(f"ng911 lost: serving {running.url} ({args.store} store)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await running.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0
