"""Per-host bundles: what a user copies to N machines to run one chain across them.

`ng911 testbed export --topology T DIR` plans the chain (`ng911.testbed.plan`) for addresses
the hosts really have (each host's `address`, else the next one of `--subnet`) and writes one
self-contained directory per host:

    DIR/<host>/bundle.toml     [bundle] (host, role) + [<host>] (the element's config)
    DIR/<host>/tls/            its certificate chain and key, the CA certificate
    DIR/<host>/boundaries.geojson   (the LoST host only)
    DIR/<host>/logevents.sqlite     (the logger host only: its store, once it runs)
    DIR/<host>/state/          psapd's registrations survive a restart here
    DIR/<host>/keys.log        its TLS key log (NSS format), once it runs

Every path in `bundle.toml` is relative to the bundle, and `ng911 run --bundle DIR` runs in
it, so a bundle works wherever it is copied. Names resolve through the host table each
config carries (every host's domain → its address); on real hosts that table can be dropped
for DNS (see the README: SRV/NAPTR records per RFC 3263 §4). `--processes` and `--netns` run
exactly these bundles, so what a user copies is what every process run exercises.
"""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ng911.elements.config import ConfigError, toml_table
from ng911.node.bundle import BUNDLE_FILE, FORMAT
from ng911.testbed.plan import ChainOptions, ChainPlan, build_plan
from ng911.testbed.topology import Topology


def subnet_addresses(topo: Topology, subnet: str) -> dict[str, str]:
    """Host name → its own address, or the next free one of `subnet` (in host order)."""
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as exc:
        raise ConfigError(f"--subnet {subnet!r}: {exc}") from None
    taken = {h.address for h in topo.hosts if h.address not in ("auto", "")}
    free = (str(a) for a in net.hosts() if str(a) not in taken)
    out: dict[str, str] = {}
    for h in topo.hosts:
        if h.address not in ("auto", ""):
            out[h.name] = h.address
            continue
        addr = next(free, None)
        if addr is None:
            raise ConfigError(f"--subnet {subnet}: too small for {len(topo.hosts)} hosts")
        out[h.name] = addr
    return out


def _relative(table: dict[str, Any], moves: Mapping[str, str]) -> dict[str, Any]:
    """Every string value (nested too) that names a moved file, renamed to its new place."""

    def fix(v: Any) -> Any:
        if isinstance(v, str):
            return moves.get(v, v)
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    out: dict[str, Any] = fix(table)
    return out


def _copy(host: str, src: Path, dst: Path) -> None:
    try:
        shutil.copyfile(src, dst)
    except OSError as exc:
        raise ConfigError(f"{host}: cannot copy {src} into its bundle: {exc.strerror}") from None


def export_bundles(plan: ChainPlan, out: Path) -> dict[str, Path]:
    """Write one bundle per host of `plan` under `out`; host name → its directory."""
    topo = plan.topology
    written: dict[str, Path] = {}
    for h in topo.hosts:
        if h.role == "logger" and plan.logger is None:
            continue  # the run has no logger (ChainOptions.logger off)
        d = out / h.name
        (d / "tls").mkdir(parents=True, exist_ok=True)
        cert, key = plan.pki.certs[h.name]
        _copy(h.name, cert, d / "tls" / "cert.pem")
        _copy(h.name, key, d / "tls" / "key.pem")
        (d / "tls" / "key.pem").chmod(0o600)
        _copy(h.name, plan.pki.ca.cert_path, d / "tls" / "ca.pem")
        if h.role == "lost":
            tls = plan.lost.tls
        elif h.role == "logger" and plan.logger is not None:
            tls = plan.logger.tls
        else:
            tls = plan.configs[h.name].tls
        moves = {
            str(cert): "tls/cert.pem",
            str(key): "tls/key.pem",
            str(plan.pki.ca.cert_path): "tls/ca.pem",
            tls.keylog: "keys.log",
        }
        if h.role == "lost":
            _copy(h.name, plan.lost.boundaries, d / "boundaries.geojson")
            moves[str(plan.lost.boundaries)] = "boundaries.geojson"
            table = plan.lost.to_dict()
        elif h.role == "logger" and plan.logger is not None:
            moves[str(plan.logger.store)] = plan.logger.store.name
            table = plan.logger.to_dict()
        else:
            table = plan.configs[h.name].to_dict()
            if table["log_file"]:  # the testbed's --element-logs: where the run keeps them
                table["log_file"] = str(Path(table["log_file"]).resolve())
            if h.role == "psap":
                (d / "state").mkdir(exist_ok=True)
                table["registrations"] = "state/registrations.sqlite"
        head = (
            f"# ng911 bundle for host {h.name} ({h.role}) of topology {topo.name!r}, "
            f"transports {','.join(topo.transports)} / {topo.lost}.\n"
            f"# Run it on the machine that has address {plan.addresses[h.name]}:\n"
            f"#   ng911 run --bundle {h.name}\n"
            "# Paths are relative to this directory.\n"
        )
        body = toml_table("bundle", {"host": h.name, "role": h.role, "format": FORMAT})
        body += "\n" + toml_table(h.name, _relative(table, moves))
        (d / BUNDLE_FILE).write_text(head + body, encoding="utf-8")
        written[h.name] = d
    return written


def export_topology(
    topo: Topology, out: Path, *, subnet: str = "10.91.0.0/24", opts: ChainOptions | None = None
) -> dict[str, Path]:
    """Plan `topo` on `subnet` (hosts without an address) and export its bundles to `out`.
    The CA's key stays in `out/.pki` (only certificates and each host's own key travel)."""
    addresses = subnet_addresses(topo, subnet)
    plan = build_plan(topo, out / ".pki", opts or ChainOptions(), addresses=addresses)
    return export_bundles(plan, out)
