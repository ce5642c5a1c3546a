"""`ng911 pki`: make test CAs and element certificates from the command line.

    ng911 pki init ca/esinet --name "ESInet test CA"
    ng911 pki issue esrp --ca ca/esinet --domain esinet.example --dns esrp.esinet.example \
        --ip 127.0.0.1 --out certs/
    ng911 pki show certs/esrp.pem

Make one CA per administrative domain (VSP, ESInet, PSAP) and configure, per peer domain,
which CA to trust (a TLS profile, like Kamailio's tls.cfg sections).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ng911.pki.ca import init_ca, load_ca
from ng911.pki.certs import issue
from ng911.pki.errors import PkiError
from ng911.pki.keys import KEY_TYPES


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pki",
        help="make test CAs and element certificates (RFC 5922 SIP identities)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    psub = p.add_subparsers(dest="pki_command", metavar="ACTION")

    pi = psub.add_parser("init", help="create a test CA in DIR (ca.pem, ca.key)")
    pi.add_argument("dir", type=Path, help="directory to create the CA in")
    pi.add_argument("--name", default="ng911 Test CA", help="CA common name")
    pi.add_argument(
        "--key-type", choices=KEY_TYPES, default="ec", help="ec = P-256 (default), rsa = 2048"
    )
    pi.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    pi.set_defaults(func=_run, pki_run=_init)

    ps = psub.add_parser(
        "issue",
        help="issue an element certificate (EKU serverAuth+clientAuth)",
        description="Writes NAME.pem, NAME.key and NAME-chain.pem (leaf + CA) into --out.",
    )
    ps.add_argument("name", help="element name (file names and subject CN)")
    ps.add_argument("--ca", type=Path, required=True, help="CA directory made by `pki init`")
    ps.add_argument(
        "--domain",
        action="append",
        default=[],
        help="SIP domain: becomes a URI:sip:DOMAIN subjectAltName (RFC 5922 §7.1); repeatable",
    )
    ps.add_argument("--dns", action="append", default=[], help="DNS subjectAltName; repeatable")
    ps.add_argument("--ip", action="append", default=[], help="IP subjectAltName; repeatable")
    ps.add_argument("--out", type=Path, default=Path("."), help="output directory (default .)")
    ps.add_argument(
        "--key-type", choices=KEY_TYPES, default="ec", help="ec = P-256 (default), rsa = 2048"
    )
    ps.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    ps.set_defaults(func=_run, pki_run=_issue)

    pw = psub.add_parser("show", help="print a certificate's subject, validity and SIP identities")
    pw.add_argument("cert", type=Path, help="certificate file (PEM)")
    pw.set_defaults(func=_show)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _run(args: argparse.Namespace) -> int:
    """Run the action (`pki_run`): print the line it returns (0) or, on stderr, its
    `PkiError` (2: one line, like every ng911 error)."""
    try:
        line = args.pki_run(args)
    except PkiError as exc:
        print(f"ng911 pki {args.pki_command}: {exc}", file=sys.stderr)
        return 2
    print(line)
    return 0


def _init(args: argparse.Namespace) -> str:
    ca = init_ca(args.dir, name=args.name, key_type=args.key_type, days=args.days)
    return f"CA {ca.name!r}: {ca.cert_path} (key {ca.key_path})"


def _issue(args: argparse.Namespace) -> str:
    ca = load_ca(args.ca)
    c = issue(
        ca,
        args.name,
        dns=args.dns,
        sip_domains=args.domain,
        ips=args.ip,
        out_dir=args.out,
        key_type=args.key_type,
        days=args.days,
    )
    return f"certificate {c.cert_path}, key {c.key_path}, chain {c.chain_path} (CA {ca.cert_path})"


def _show(args: argparse.Namespace) -> int:
    from cryptography import x509

    from ng911.pki.tls import peer_identities

    try:
        cert = x509.load_pem_x509_certificate(args.cert.read_bytes())
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        print(f"ng911 pki show: cannot read {args.cert}: {reason}", file=sys.stderr)
        return 2
    print(f"subject:    {cert.subject.rfc4514_string()}")
    print(f"issuer:     {cert.issuer.rfc4514_string()}")
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    print(f"valid:      {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC")
    print(f"identities: {', '.join(sorted(peer_identities(cert))) or '(none)'}  (RFC 5922 §7.1)")
    return 0
