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
- `vsp_cfg` / `esrp_cfg`: Kamailio in the testbed chain (`ng911.testbed.peers`): the
  emergency VSP on any listeners (`listen_lines`), and a plain routing proxy in the ESRP's
  place whose `lost` module asks the ECRF (RFC 5222) and routes to the PSAP it names, as
  ng911's ESRP sends it (what it leaves out is in `esrp_cfg`'s docstring). Kamailio's resolver
  knows neither the testbed's names nor its host table: `host_table` maps names to addresses.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ng911.interop.procs import LOCAL, cpu_seconds, options_probe, stop, tail, tree

__all__ = [
    "KAMAILIO",
    "MODULE_DIR",
    "Kamailio",
    "KamailioError",
    "LostTls",
    "emergency_vsp_cfg",
    "esrp_cfg",
    "flood_limited_cfg",
    "host_table",
    "listen_lines",
    "missing_reason",
    "stateful_proxy_cfg",
    "tls_cfg",
    "version",
    "vsp_cfg",
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

# the emergency proxies' start: TLS when asked, OPTIONS to the proxy itself answered (a
# keep-alive ping, as the ESRP sends), requests inside a dialog and CANCEL/ACK handled
_PROXY_HEAD = (
    "\n{tls}"
    + _MODULES
    + """    if (is_method("OPTIONS") && $rU == $null) {{
        sl_send_reply("200", "OK");
        exit;
    }}
{sequential}"""
)

_EMERGENCY = (
    _PROXY_HEAD
    + """    if (is_method("INVITE") && ($rU == "911" || $ru =~ "^urn:service:sos")) {{
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

# esrp_cfg: Kamailio as a plain routing proxy in the ESRP's place (its `lost` module asks
# the ECRF). No failover, no PRF, no default location: see `esrp_cfg`'s docstring.
# http_client reads its parameters in order: a connection (httpcon) takes the values set above
# it, so the TLS files and timeouts come first. keep_connections: one keep-alive connection per
# worker, as ng911's LoST client keeps one session (else every call pays a TLS handshake).
_LOST_MODULES = """loadmodule "http_client.so"
loadmodule "lost.so"
modparam("http_client", "query_result", 0)
modparam("http_client", "connection_timeout", 2)
modparam("http_client", "keep_connections", 1)
{lost_tls}modparam("http_client", "httpcon", "ecrf=>{lost_url}")
"""

_ESRP = (
    _PROXY_HEAD
    + """    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Only INVITE here");
        exit;
    }}
    if (!t_newtran()) {{
        sl_reply_error();
        exit;
    }}
    # the only Route a VSP preloads is ours (RFC 3261 §16.4)
    remove_hf("Route");
    # NENA i3 intake: every INVITE here is an emergency call, with the emergency priority
    if (!($ru =~ "^urn:service:")) {{
        $ru = "urn:service:sos";
    }}
    if (!is_present_hf("Resource-Priority")) {{
        append_hf("Resource-Priority: esnet.1\\r\\n");
    }}
    # NENA i3 call and incident identifiers, when the call has none (the first ESInet element)
    if (!search("^Call-Info:.*purpose=emergency-CallId")) {{
        $var(inc) = $ci + "/incident";
{call_info}
    }}
    # RFC 5222 findService: the PIDF-LO from the body (Geolocation cid:), the URN from the R-URI
    $var(uri) = "";
    $var(name) = "";
    $var(err) = "";
    $var(res) = lost_query("ecrf", "$var(uri)", "$var(name)", "$var(err)");
    if ($var(res) != 200 || $var(uri) == "") {{
        xlog("L_WARN", "LoST gave no route for $ci ($var(res) $var(err)): default route\\n");
        $var(uri) = "{default_route}";
    }}
    $var(host) = $(var(uri){{uri.host}});
    $var(user) = $(var(uri){{uri.user}});
    $du = $null;
{psaps}    if ($du == $null) {{
        xlog("L_WARN", "LoST URI $var(uri) names no known PSAP: default route\\n");
        $var(uri) = "{default_route}";
        $var(host) = $(var(uri){{uri.host}});
        $var(user) = $(var(uri){{uri.user}});
        $du = "{default_du}";
    }}
    # like ng911's ESRP: the R-URI stays the service URN, the PSAP goes in a pushed Route
    insert_hf("Route: <{scheme}:$var(user)@$var(host){param};lr>\\r\\n");
    xlog("L_INFO", "emergency call $ci to $var(user)@$var(host) via $du\\n");
    record_route();
    if (!t_relay()) {{
        sl_reply_error();
    }}
}}
"""
)

_TLS_SIDE = """method = TLSv1.2+
verify_certificate = yes
require_certificate = {require}
private_key = {key}
certificate = {cert}
ca_list = {ca}
"""


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


def tls_cfg(*, cert: Path, key: Path, ca: Path, require_client_cert: bool = True) -> str:
    """Kamailio's tls.cfg: one profile for both directions, mutual authentication required
    (`require_client_cert=False`: a client certificate is verified when sent, as ng911's VSP
    does for its callers). `cert` should be the chain file (leaf + CA), `ca` a PEM bundle of
    every trusted CA."""
    server = _TLS_SIDE.format(
        cert=cert, key=key, ca=ca, require="yes" if require_client_cert else "no"
    )
    client = _TLS_SIDE.format(cert=cert, key=key, ca=ca, require="yes")
    return f"[server:default]\n{server}\n[client:default]\n{client}"


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
    return head + _EMERGENCY.format(
        tls=_TLS_MODULE.format(tls_cfg=tls_cfg_path),
        esrp=esrp,
        sequential=_SEQUENTIAL.format(host_table=host_table(hosts or {})),
        modules="",
    )


def host_table(hosts: Mapping[str, str], indent: int = 12) -> str:
    """If-statements that point `$du` at an address when it names a host of `hosts`
    (name → SIP URI of that host): Kamailio's resolver knows neither the testbed's host table
    nor its names, so the next hop a Route names is mapped here (RFC 3263 on static records)."""
    pad = " " * indent
    return "".join(
        f'{pad}if ($du =~ "^sips?:([^@]*@)?{re.escape(name)}([:;>]|$)") {{\n'
        f'{pad}    $du = "{uri}";\n'
        f"{pad}}}\n"
        for name, uri in hosts.items()
    )


def listen_lines(
    address: str, transports: Sequence[str], ports: Mapping[str, int], alias: str = ""
) -> str:
    """`listen=` lines for `address` on each transport's port (its outgoing TCP/TLS
    connections leave from it too, so the peer sees who connected), `alias=` lines so that
    Kamailio takes a Route naming `alias` (its domain) as itself. Its Via and Record-Route
    carry the address: Kamailio's `advertise` wants a name its resolver knows, and the
    testbed's names live in host tables only."""
    out = [f"listen={t}:{address}:{ports[t]}" for t in transports]
    if {"tcp", "tls"} & set(transports):  # connections it opens leave from it too
        out.append(f"tcp_source_ipv4={address}")
    if alias:
        out += sorted({f"alias={alias}:{ports[t]}" for t in transports})
    return "\n".join(out)


def vsp_cfg(
    *,
    listen: str,
    esrp: str,
    tls_cfg_path: Path | None = None,
    hosts: Mapping[str, str] | None = None,
    children: int = 2,
    debug: int = 1,
) -> str:
    """Kamailio in the testbed's VSP place: `emergency_vsp_cfg`'s routing on any listeners
    (`listen_lines`), TLS only when `tls_cfg_path` is given. `esrp` is the ESRP's SIP URI
    with its address (`sip:10.0.0.3:5061;transport=tls`); `hosts` maps names of in-dialog
    Routes to such URIs (see `host_table`)."""
    tls = tls_cfg_path is not None
    head = config_head(listen, tls=tls, children=children, debug=debug)
    return head + _EMERGENCY.format(
        tls=_TLS_MODULE.format(tls_cfg=tls_cfg_path) if tls else "",
        esrp=esrp,
        sequential=_SEQUENTIAL.format(host_table=host_table(hosts or {})),
        modules="",
    )


@dataclass(frozen=True, slots=True)
class LostTls:
    """The ECRF's https for Kamailio's http_client: the CA file, and a client certificate
    for mutual TLS (both empty: server authentication only)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def modparams(self) -> str:
        out = [
            f'modparam("http_client", "cacert", "{self.ca}")',
            'modparam("http_client", "verify_peer", 1)',
            # the ECRF's certificate names its domain; the URL carries its address
            'modparam("http_client", "verify_host", 0)',
        ]
        if self.cert is not None and self.key is not None:
            out += [
                f'modparam("http_client", "client_cert", "{self.cert}")',
                f'modparam("http_client", "client_key", "{self.key}")',
            ]
        return "\n".join(out) + "\n"


def _call_info(fqdn: str) -> str:
    """append_hf lines for the i3 call and incident identifiers (NENA-STA-010 §2.1.6):
    `urn:emergency:uid:<kind>:<32 hex>:<fqdn>`, the hex an MD5 of the Call-ID."""
    ids = (("callid", "$(ci{s.md5})", "CallId"), ("incidentid", "$(var(inc){s.md5})", "IncidentId"))
    return "".join(
        f'        append_hf("Call-Info: <urn:emergency:uid:{kind}:{value}:{fqdn}>;'
        f'purpose=emergency-{purpose}\\r\\n");\n'
        for kind, value, purpose in ids
    )


def esrp_cfg(
    *,
    listen: str,
    fqdn: str,
    lost_url: str,
    psaps: Mapping[str, str],
    default_route: str,
    psap_transport: str,
    tls_cfg_path: Path | None = None,
    lost_tls: LostTls | None = None,
    hosts: Mapping[str, str] | None = None,
    children: int = 2,
    debug: int = 1,
) -> str:
    """Kamailio as a plain routing proxy in the ESRP's place (NENA i3 ESRP, the routing only).

    For each INVITE: the preloaded Route is dropped, a non-URN Request-URI becomes
    `urn:service:sos`, `Resource-Priority: esnet.1` and the i3 Call-Info identifiers are
    added when absent, the `lost` module asks `lost_url` (RFC 5222 findService) with the
    PIDF-LO of the body and the URN of the Request-URI, and the call goes to the PSAP it
    names as ng911's ESRP sends it: Request-URI kept, `Route: <sips:psap@domain;lr>` (or
    `sip:…;transport=udp|tcp`, by `psap_transport`) pushed, Record-Route added. `psaps`
    maps each PSAP domain to the URI Kamailio sends to (its address: Kamailio's resolver
    does not know the testbed's names); LoST failing or naming another domain sends the
    call to `default_route`.

    What it does not do, unlike ng911's ESRP: no failover to alternates or the default route
    when a PSAP refuses or does not answer (the PSAP's answer goes back as is), no Policy
    Routing Function, no PSAP health (OPTIONS pings), no default location for a call
    without one, no i3 state subscriptions, no i3 LogEvents; LoST is asked on every call
    (no cache); and it trusts any client certificate of the run's CA (no per-listener
    `allowed_peers`)."""
    tls = tls_cfg_path is not None
    tls_hop = psap_transport == "tls"
    scheme, param = ("sips", "") if tls_hop else ("sip", f";transport={psap_transport}")
    table = "".join(
        f'    if ($var(host) == "{domain}") {{\n        $du = "{uri}";\n    }}\n'
        for domain, uri in psaps.items()
    )
    default_host = default_route.split("@", 1)[-1].split(";", 1)[0]
    head = config_head(listen, tls=tls, children=children, debug=debug)
    lost = _LOST_MODULES.format(
        lost_url=lost_url, lost_tls=lost_tls.modparams() if lost_tls is not None else ""
    )
    body = _ESRP.format(
        tls=_TLS_MODULE.format(tls_cfg=tls_cfg_path) if tls else "",
        modules=lost,
        sequential=_SEQUENTIAL.format(host_table=host_table(hosts or {})),
        call_info=_call_info(fqdn),
        default_route=default_route,
        psaps=table,
        default_du=psaps.get(default_host, ""),
        scheme=scheme,
        param=param,
    )
    return head + body


@dataclass
class Kamailio:
    """One Kamailio process tree running `cfg` (see the module docstring)."""

    cfg: str
    port: int
    transport: str = "udp"  # how readiness is probed: "udp" (OPTIONS) or "tcp"/"tls" (connect)
    shm_mb: int = 1024  # ANCHORS: the default 64 MB runs out near 400 cps with 2 KB INVITEs
    workdir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    host: str = LOCAL  # the address readiness is probed on

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
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        # UDP: any answer to an OPTIONS (483 to Max-Forwards 0) means the workers read
        return options_probe(self.port, timeout=0.2, host=self.host, max_forwards=0) is not None

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


_VERSION: list[str] = []


def version() -> str:
    """ "kamailio 5.6.3" (from `kamailio -v`), what a report labels its elements with."""
    if not _VERSION:
        label = "kamailio"
        if KAMAILIO is not None:
            try:
                out = subprocess.run(
                    [KAMAILIO, "-v"], capture_output=True, text=True, timeout=10
                ).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            m = re.search(r"version:\s*kamailio\s+(\S+)", out)
            label = f"kamailio {m.group(1)}" if m else "kamailio"
        _VERSION.append(label)
    return _VERSION[0]


def write_ca_bundle(paths: Sequence[Path], out: Path) -> Path:
    """Concatenate CA certificates into one PEM file (Kamailio's `ca_list`)."""
    out.write_text("".join(Path(p).read_text() for p in paths))
    return out
