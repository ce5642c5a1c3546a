"""Kamailio as a peer of ng911: config writers and a process that is always torn down.

What `tests/interop/` and the benches (`bench/load.py`, `bench/resilience.py`) run. Three
configurations:

- `stateful_proxy_cfg`: the load-comparison peer. tm + rr + sl + maxfwd: `record_route()`
  and `t_relay()` of every initial request to one fixed next hop (`$du`), in-dialog
  requests by `loose_route()` (RFC 3261 §16.4), CANCEL and retransmissions matched by tm.
  UDP and TCP (or TLS) listeners on the same port. This is the set-up of ANCHORS.md's figures.
- `flood_limited_cfg`: the same proxy defending itself (`bench/resilience.py`): emergency and
  in-dialog requests pass untouched; every other initial request meets `pike` (per source)
  and `ratelimit` (one TAILDROP pipe), over either `503` + `Retry-After: 5`.
- `emergency_vsp_cfg`: an emergency VSP proxy over TLS with mutual authentication (tls
  module; `verify_certificate` + `require_certificate` both ways). Requests for
  `urn:service:sos*` (or a dialled 911, rewritten to `urn:service:sos`, NENA i3) get
  `Resource-Priority: esnet.1`, a Record-Route, and go to the configured ESRP; anything else
  is refused with 403.

`Kamailio(cfg_text, ...)` runs `kamailio -f cfg -DD -E -m MB -P pidfile` in the foreground
(its own process group: every worker dies with it), waits until it listens, and `stop()` (or
leaving the `with` block) terminates its process group, killing it when it does not exit in
5 s.
"""

from __future__ import annotations

import glob
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ng911.interop.procs import LOCAL, cpu_seconds, options_probe, stop, tail, tree

__all__ = [
    "KAMAILIO",
    "MODULE_DIR",
    "Kamailio",
    "KamailioError",
    "emergency_vsp_cfg",
    "flood_limited_cfg",
    "missing_reason",
    "stateful_proxy_cfg",
    "tls_cfg",
    "write_ca_bundle",
]

KAMAILIO = shutil.which("kamailio") or (
    "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
)
_MODULE_DIRS = sorted(
    {str(Path(p).parent) for p in glob.glob("/usr/lib/*/kamailio/modules/tm.so")}
    | {str(Path(p).parent) for p in glob.glob("/usr/lib/kamailio/modules/tm.so")}
)
MODULE_DIR = Path(_MODULE_DIRS[0]) if _MODULE_DIRS else None


class KamailioError(RuntimeError):
    """Kamailio did not start (bad config, port taken): carries the tail of its log."""


def missing_reason(*modules: str) -> str | None:
    """Why a Kamailio peer cannot run here (None when it can): for `pytest.skip`."""
    if KAMAILIO is None:
        return "kamailio not installed (Debian package kamailio; `make peers` installs it)"
    if MODULE_DIR is None:
        return "kamailio modules directory not found"
    for m in modules:
        if not (MODULE_DIR / f"{m}.so").exists():
            pkg = {"tls": "kamailio-tls-modules", "lost": "kamailio-utils-modules"}.get(
                m, "kamailio-utils-modules" if m == "http_client" else "kamailio"
            )
            return f"kamailio module {m}.so not installed (Debian package {pkg})"
    return None


_HEAD = """#!KAMAILIO
debug={debug}
log_stderror=yes
log_facility=LOG_LOCAL0
children={children}
tcp_children={children}
disable_tcp={disable_tcp}
enable_tls={enable_tls}
auto_aliases=no
dns=no
rev_dns=no
tcp_connection_lifetime=3605
tcp_max_connections=4096
tcp_accept_no_cl=no
{listen}
mpath="{mpath}/"
"""

# Both proxies handle requests inside a dialog, CANCEL and ACK the same way: in-dialog
# requests follow the Record-Route set (RFC 3261 §16.4), CANCEL and non-2xx ACK go to their
# transaction. `{host_table}` maps record-routed names no DNS here knows to addresses.
_SEQUENTIAL = """    if (has_totag()) {{
        # in-dialog: ACK, BYE follow the Record-Route set (RFC 3261 §16.4)
        if (loose_route()) {{
{host_table}            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("ACK")) {{
        exit;
    }}
"""

# what every configuration here loads, and how its request route starts (a format template)
_TLS_MODULE = 'loadmodule "tls.so"\nmodparam("tls", "config", "{tls_cfg}")\n'
_MODULES = """loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
{modules}modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)
modparam("rr", "enable_full_lr", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
"""

_STATEFUL = (
    "\n{tls}"
    + _MODULES
    + """{sequential}{limits}    if (!t_newtran()) {{
        sl_reply_error();
        exit;
    }}
    remove_hf("Route");
    if (is_method("INVITE|SUBSCRIBE")) {{
        record_route();
    }}
{relay}    if (!t_relay()) {{
        sl_reply_error();
    }}
}}
"""
)

# flood_limited_cfg: the modules, and the checks between in-dialog handling and relaying
_LIMIT_MODULES = """loadmodule "pike.so"
loadmodule "ratelimit.so"
# pike: per source address, more than {pike} requests in 2 s blocks the source
modparam("pike", "sampling_time_unit", 2)
modparam("pike", "reqs_density_per_unit", {pike})
modparam("pike", "remove_latency", 4)
# ratelimit: one TAILDROP pipe for non-emergency initial requests, {limit} a second
modparam("ratelimit", "timer_interval", 1)
modparam("ratelimit", "pipe", "1:TAILDROP:{limit}")
"""

_LIMITS = """    # emergency first: never limited (NENA i3)
    if ($ru =~ "^urn:service:sos" || $hdr(Resource-Priority) =~ "esnet\\.") {{
        if (!t_newtran()) {{
            sl_reply_error();
            exit;
        }}
        remove_hf("Route");
        record_route();
        $du = "{sos}";
        t_relay();
        exit;
    }}
    if (!pike_check_req()) {{
        append_to_reply("Retry-After: 5\\r\\n");
        sl_send_reply("503", "Flood from your address");
        exit;
    }}
    if (!rl_check("1")) {{
        append_to_reply("Retry-After: 5\\r\\n");
        sl_send_reply("503", "Over capacity");
        exit;
    }}
"""

_EMERGENCY = (
    "\n"
    + _TLS_MODULE
    + _MODULES
    + """    if (is_method("OPTIONS") && $rU == $null) {{
        sl_send_reply("200", "OK");
        exit;
    }}
{sequential}    if (is_method("INVITE") && ($rU == "911" || $ru =~ "^urn:service:sos")) {{
        # NENA i3 originating network: the service URN, and the emergency priority
        if ($rU == "911") {{
            $ru = "urn:service:sos";
        }}
        remove_hf("Route");
        remove_hf("Resource-Priority");
        append_hf("Resource-Priority: esnet.1\\r\\n");
        xlog("L_INFO", "emergency call $ci from $fu ($si:$sp $pr) to {esrp}\\n");
        record_route();
        $du = "{esrp}";
        if (!t_relay()) {{
            sl_reply_error();
        }}
        exit;
    }}
    sl_send_reply("403", "Only emergency calls here");
}}
"""
)

_TLS_SIDE = """method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = {key}
certificate = {cert}
ca_list = {ca}
"""
#: Both sides (Kamailio accepting and connecting) use the same mutual-TLS settings.
_TLS_CFG = f"[server:default]\n{_TLS_SIDE}\n[client:default]\n{_TLS_SIDE}"


def _mpath() -> str:
    if MODULE_DIR is None:
        raise KamailioError("kamailio modules directory not found")
    return str(MODULE_DIR)


def config_head(
    listen: str, *, tcp: bool = True, tls: bool = False, children: int = 1, debug: int = 2
) -> str:
    """The global part of a Kamailio config: `listen` lines (e.g. `listen=tls:127.0.0.1:5061`),
    worker counts, logging to stderr, no DNS, this machine's module directory."""
    return _HEAD.format(
        debug=debug,
        children=children,
        disable_tcp="no" if tcp or tls else "yes",
        enable_tls="yes" if tls else "no",
        listen=listen,
        mpath=_mpath(),
    )


def stateful_proxy_cfg(
    *,
    port: int,
    next_hop: str,
    children: int = 2,
    tcp: bool = True,
    host: str = LOCAL,
    debug: int = 1,
    tls_cfg_path: Path | None = None,
) -> str:
    """The comparison peer: `record_route(); t_relay()` to `next_hop` (a SIP URI, e.g.
    `sip:127.0.0.1:5070;transport=tcp`), listening on UDP and TCP `host:port` (`tcp=False`:
    UDP only; `tls_cfg_path`, a `tls_cfg` file: UDP and TLS)."""
    listen = f"listen=udp:{host}:{port}"
    if tls_cfg_path is not None:
        listen += f"\nlisten=tls:{host}:{port}"
    elif tcp:
        listen += f"\nlisten=tcp:{host}:{port}"
    tls = tls_cfg_path is not None
    head = config_head(listen, tcp=tcp, tls=tls, children=children, debug=debug)
    return head + _STATEFUL.format(
        tls=_TLS_MODULE.format(tls_cfg=tls_cfg_path) if tls else "",
        modules="",
        sequential=_SEQUENTIAL.format(host_table=""),
        limits="",
        relay=f'    $du = "{next_hop}";\n',
    )


def flood_limited_cfg(
    *, port: int, sos: str, limit: int, pike: int, children: int = 2, host: str = LOCAL
) -> str:
    """Kamailio defending itself, UDP on `host:port`: emergency requests (`urn:service:sos*`
    or `Resource-Priority: esnet.*`) go to `sos` (a SIP URI) unlimited; any other initial
    request meets `pike` (more than `pike` requests from one source in 2 s blocks it) and a
    `limit`-per-second TAILDROP pipe, then goes where its Request-URI says."""
    head = config_head(f"listen=udp:{host}:{port}", tcp=False, children=children, debug=1)
    return head + _STATEFUL.format(
        tls="",
        modules=_LIMIT_MODULES.format(pike=pike, limit=limit),
        sequential=_SEQUENTIAL.format(host_table=""),
        limits=_LIMITS.format(sos=sos),
        relay="",
    )


def tls_cfg(*, cert: Path, key: Path, ca: Path) -> str:
    """Kamailio's tls.cfg: one profile for both directions, mutual authentication required.
    `cert` should be the chain file (leaf + CA), `ca` a PEM bundle of every trusted CA."""
    return _TLS_CFG.format(cert=cert, key=key, ca=ca)


def emergency_vsp_cfg(
    *,
    port: int,
    esrp: str,
    tls_cfg_path: Path,
    children: int = 1,
    host: str = LOCAL,
    debug: int = 2,
    hosts: dict[str, str] | None = None,
) -> str:
    """Kamailio as the emergency VSP proxy over mutual TLS: 911 / urn:service:sos → `esrp`
    (a SIP URI such as `sip:127.0.0.1:5071;transport=tls`).

    `hosts` is a static host table for in-dialog requests (name → SIP URI of the next hop):
    ng911's elements record-route with their FQDN, which no DNS here knows; Kamailio's
    resolver does not read ng911's host table, so the route's next hop is mapped here."""
    head = config_head(f"listen=tls:{host}:{port}", tls=True, children=children, debug=debug)
    table = "".join(
        f'            if ($du =~ "^sips?:([^@]*@)?{re.escape(name)}[:;>]?") {{\n'
        f'                $du = "{uri}";\n'
        "            }\n"
        for name, uri in (hosts or {}).items()
    )
    sequential = _SEQUENTIAL.format(host_table=table)
    return head + _EMERGENCY.format(
        tls_cfg=tls_cfg_path, esrp=esrp, sequential=sequential, modules=""
    )


@dataclass
class Kamailio:
    """One Kamailio process tree running `cfg` (see the module docstring)."""

    cfg: str
    port: int
    transport: str = "udp"  # how readiness is probed: "udp" (OPTIONS) or "tcp"/"tls" (connect)
    shm_mb: int = 1024  # ANCHORS: the default 64 MB runs out near 400 cps with 2 KB INVITEs
    workdir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self._own_dir = self.workdir is None
        self.dir = Path(self.workdir or tempfile.mkdtemp(prefix="ng911-kamailio-"))
        self.cfg_path = self.dir / "kamailio.cfg"
        self.log_path = self.dir / "kamailio.log"
        self.pid_path = self.dir / "kamailio.pid"

    def start(self, timeout: float = 10.0) -> Kamailio:
        if KAMAILIO is None:
            raise KamailioError("kamailio not installed")
        self.cfg_path.write_text(self.cfg)
        check = subprocess.run(
            [KAMAILIO, "-c", "-f", str(self.cfg_path)], capture_output=True, text=True, timeout=20
        )
        if check.returncode != 0:
            raise KamailioError(f"kamailio -c refused the config:\n{check.stderr[-3000:]}")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    KAMAILIO, "-f", str(self.cfg_path), "-DD", "-E",
                    "-m", str(self.shm_mb), "-M", "16",
                    "-P", str(self.pid_path), "-Y", str(self.dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches every worker
            )  # fmt: skip
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KamailioError(f"kamailio exited ({self.proc.returncode}):\n{self.log()}")
            if self._probe():
                return
            time.sleep(0.05)
        raise KamailioError(f"kamailio not ready in {timeout} s:\n{self.log()}")

    def _probe(self) -> bool:
        if self.transport in ("tcp", "tls"):
            try:
                with socket.create_connection((LOCAL, self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        # UDP: any answer to an OPTIONS (483 to Max-Forwards 0) means the workers read
        return options_probe(self.port, timeout=0.2, max_forwards=0) is not None

    def pids(self) -> list[int]:
        """The main process and its workers (for CPU accounting)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return tree(self.proc.pid)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def log(self, n: int = 3000) -> str:
        return tail(self.log_path, n)

    def stop(self) -> None:
        stop(self.proc, group=True)  # its own process group: every worker goes with it
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def write_ca_bundle(paths: Sequence[Path], out: Path) -> Path:
    """Concatenate CA certificates into one PEM file (Kamailio's `ca_list`)."""
    out.write_text("".join(Path(p).read_text() for p in paths))
    return out
