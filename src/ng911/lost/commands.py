"""`ng911 lost serve`: run the LoST server (ECRF) on the embedded or PostGIS store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import uvloop

from ng911.errors import Ng911Error
from ng911.lost.engine import EngineConfig, NextServer
from ng911.lost.server import LostServer, ServerConfig, serve
from ng911.lost.store import BoundaryStore, MappingConfig, ServiceArea
from ng911.net.http1 import HttpLimits


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
    p.add_argument(
        "--data",
        type=Path,
        help="GeoJSON FeatureCollection of service areas (default: the packaged NYC boroughs)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument(
        "--port", type=port_number, default=8080, help="TCP port, 0-65535 (default %(default)s)"
    )
    p.add_argument(
        "--store",
        choices=("embedded", "postgis"),
        default="embedded",
        help="boundary store: in memory (shapely) or PostgreSQL/PostGIS (default %(default)s)",
    )
    p.add_argument("--dsn", help="PostgreSQL DSN for --store postgis (data loaded at start)")
    p.add_argument("--source", default="ecrf.esinet.example", help="this server's LoST name")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds a mapping may be cached")
    p.add_argument(
        "--uri-scheme",
        choices=("sip", "sips"),
        default="sip",
        help="scheme of generated PSAP URIs (default %(default)s)",
    )
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
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="the private key of --tls-cert (PEM)")
    p.add_argument("--tls-ca", type=Path, help="CA file to verify client certificates")
    p.add_argument("--require-client-cert", action="store_true", help="mutual TLS")
    add_limit_arguments(p)
    p.set_defaults(func=run_serve)
    lost.set_defaults(func=lambda args: (lost.print_help(), 2)[1])


def port_number(text: str) -> int:
    """argparse type: a TCP/UDP port, 0-65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} out of range 0-65535")
    return port


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    """The connection limits (`ng911.net.http1.HttpLimits`) as flags; defaults from `HttpLimits`."""
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
        raise CommandError(str(exc)) from None


class CommandError(Ng911Error):
    """A command-line mistake `lost serve` reports in one line (exit 2)."""


def build_store(args: argparse.Namespace, mapping: MappingConfig) -> BoundaryStore:
    if args.store == "postgis":
        from ng911.lost.postgis import PostgisStore

        if not args.dsn:
            raise CommandError("--store postgis needs --dsn")
        try:
            return PostgisStore.from_geojson(args.dsn, args.data, mapping)
        except Ng911Error:
            raise
        except Exception as exc:  # psycopg's errors: a bad DSN, no PostGIS
            raise CommandError(f"PostgreSQL {args.dsn}: {type(exc).__name__}: {exc}") from None
    from ng911.lost.embedded import EmbeddedStore

    return EmbeddedStore.from_geojson(args.data, mapping)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; a bad data file, TLS file, port or limit is one line, exit 2."""
    try:
        return _serve(args)
    except (Ng911Error, OSError) as exc:  # OSError: the address cannot be bound
        print(f"ng911 lost serve: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    from ng911.pki.tls import server_context

    ctx = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise CommandError("--tls-cert and --tls-key go together")
        cas = [args.tls_ca] if args.tls_ca is not None else []
        ctx = server_context(
            args.tls_cert, args.tls_key, cas, require_client_cert=args.require_client_cert
        )
    mapping = MappingConfig(uri_scheme=args.uri_scheme, domain=args.domain)
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
    store = build_store(args, mapping)
    server = LostServer(store, config)

    async def main() -> None:
        running = await serve(server.app, args.host, args.port, ssl_context=ctx)
        print(f"ng911 lost: serving {running.url} ({args.store} store)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await running.close()

    try:
        # uvloop: where `ng911.net.http1` pays (bench/lost.py measures both loops)
        uvloop.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0
