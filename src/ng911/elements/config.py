"""Configuration of every call-chain element: one frozen dataclass per element.

Why dataclasses with defaults that work (STYLE: aioquic's `QuicConfiguration`): the testbed
writes a topology TOML out of these, an operator edits one table per element, and a test
builds one in a line. Everything an operator tunes is here, not in code (Kamailio's lesson).

Each config round-trips through plain dicts: `Config.from_dict(d)` / `cfg.to_dict()`,
and `load_toml(path, table)` reads one table of a TOML file (`tomllib`). Unknown keys are
an error (`ConfigError`), so a misspelt option fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar, Union

from ng911.elements.i3state import QUEUE_STATES, SECURITY_POSTURES, SERVICE_STATES
from ng911.elements.prf import (
    DEFAULT_SKIP_QUEUE,
    DEFAULT_SKIP_SERVICE,
    PolicyError,
    Prf,
    compile_policy,
)
from ng911.elements.routing import RoutingPolicy
from ng911.errors import Ng911Error
from ng911.sip.digest import ALGORITHMS as DIGEST_ALGORITHMS

__all__ = [
    "EVENT_LOOPS",
    "WORKERS_AUTO",
    "AlternateRoute",
    "CallTakerConfig",
    "CallerConfig",
    "ConfigError",
    "ElementConfig",
    "EsrpConfig",
    "HostEntry",
    "ListenerConfig",
    "OverloadConfig",
    "PolicyRule",
    "PsapConfig",
    "QueuePolicy",
    "StateConfig",
    "TlsProfile",
    "VspConfig",
    "check_workers",
    "load_toml",
    "metrics_address",
    "metrics_spec",
    "prf_of",
    "routing_policy_of",
]

TRANSPORTS = ("udp", "tcp", "tls")


# the `loop` choices of an element (`ng911.node.loop` says what each means)
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


class ConfigError(Ng911Error):
    """A configuration value is missing, misspelt or of the wrong type."""


T = TypeVar("T")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Turn a TOML/JSON value into the annotated field type (nested dataclasses, tuples)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {'; '.join(errors)}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        pairs = zip(args, value, strict=True)
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(pairs))
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return {_convert(kt, k, where): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")


def _from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError, ConfigError) as exc:
        # a required field missing, a value __post_init__ refuses: say which file and table
        raise ConfigError(f"{where}: {exc}") from None
    return obj


def _to_plain(value: Any) -> Any:
    """Dataclass → dict of TOML-friendly values (tuples → lists, None dropped by caller)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is None:
                continue  # TOML has no null: absent means default
            out[f.name] = _to_plain(v)
        return out
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


class _Plain:
    """Mixin: `from_dict` / `to_dict` for the config dataclasses."""

    __slots__ = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return _from_dict(cls, dict(data), cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = _to_plain(self)
        return result


@dataclass(frozen=True, slots=True)
class ListenerConfig(_Plain):
    """One listening socket. Port 0 = an ephemeral port (tests, the in-process chain).

    TCP and TLS listeners each have their own connection caps (`ng911.net.admission`), so
    plain TCP cannot starve TLS: `max_connections` at once, `max_per_source` of them from
    one IP address. `allowed_peers` (TLS): the SIP domains (RFC 5922) a client certificate
    must name one of, checked at the handshake; empty = any peer the CAs in `tls.ca` vouch
    for. A non-empty list on a TLS listener refuses clients without a certificate too.
    """

    transport: str = "udp"
    host: str = "127.0.0.1"
    port: int = 0
    max_connections: int = 1024
    max_per_source: int = 256
    allowed_peers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"listener transport must be one of {TRANSPORTS}, not {self.transport!r}"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"listener port out of range: {self.port}")
        if self.max_connections < 1 or self.max_per_source < 1:
            raise ConfigError(
                f"listener {self.transport}:{self.port}: max_connections and max_per_source "
                f"must be >= 1, not {self.max_connections} and {self.max_per_source}"
            )
        if self.allowed_peers and self.transport != "tls":
            raise ConfigError(
                f"listener {self.transport}:{self.port}: allowed_peers needs a tls listener"
            )
        for d in self.allowed_peers:
            if not d or d != d.strip() or " " in d or "," in d:
                raise ConfigError(f"allowed_peers: {d!r} is not a SIP domain")


@dataclass(frozen=True, slots=True)
class TlsProfile(_Plain):
    """Certificates and peer checks of one element (RFC 5922 identities, RFC 5630 sips).

    Outgoing TLS always checks that the server's certificate names the host of the URI we
    connect to (RFC 5922 §7.2). `expected_peer` (comma-separated SIP domains) adds a check
    of incoming TLS requests: the client's certificate must name one of them, else 403
    (RFC 5922 §7.3); empty = any client the CAs in `ca` vouch for.
    """

    cert: str = ""
    key: str = ""
    ca: tuple[str, ...] = ()
    require_client_cert: bool = False
    expected_peer: str = ""
    keylog: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert and self.key)


def _check_timeouts(cfg: ElementConfig) -> None:
    if cfg.stop_drain < 0:
        raise ConfigError(f"{cfg.name}: stop_drain must be >= 0 s, not {cfg.stop_drain}")
    if not cfg.timer_c > 0:
        raise ConfigError(f"{cfg.name}: timer_c must be > 0 s (RFC 3261: > 180), not {cfg.timer_c}")
    for name in ("handshake_timeout", "first_message_timeout", "idle_timeout"):
        value = getattr(cfg, name)
        if value < 0:
            raise ConfigError(f"{cfg.name}: {name} must be >= 0 (0 = off), not {value}")
    hs, first = cfg.handshake_timeout, cfg.first_message_timeout
    if hs > 0 and 0 < first < hs:
        raise ConfigError(
            f"{cfg.name}: first_message_timeout ({first}) is shorter than handshake_timeout "
            f"({hs}); the first message comes after the handshake"
        )


def _check_logger(cfg: ElementConfig) -> None:
    if cfg.logger is not None and not cfg.logger.startswith(("http://", "https://")):
        raise ConfigError(f"{cfg.name}: logger must be an http(s) URL, not {cfg.logger!r}")


def metrics_address(text: str) -> tuple[str, int]:
    """(host, port) of a `metrics` value or `--metrics` argument: "HOST:PORT" with an IPv4
    address or a name, "[V6]:PORT", or ":PORT" (127.0.0.1). Port 0 picks a free one."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]") or ("127.0.0.1" if sep else "")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"metrics: want HOST:PORT (e.g. 127.0.0.1:9100), not {text!r}")
    return host, int(port)


def metrics_spec(host: str, port: int) -> str:
    """`metrics_address` written back: HOST:PORT, [V6]:PORT."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


WORKERS_AUTO = "auto"


def check_workers(workers: int | str) -> None:
    """`workers`: a count >= 1 or "auto" (`ng911.node.workers.worker_count` caps it)."""
    if workers == WORKERS_AUTO or (isinstance(workers, int) and workers >= 1):
        return
    raise ConfigError(f'workers must be a number >= 1 or "auto", not {workers!r}')


def _check_element(cfg: ElementConfig) -> None:
    """What every element's table is checked for, whatever its subclass adds."""
    _check_timeouts(cfg)
    _check_logger(cfg)
    if cfg.metrics:
        metrics_address(cfg.metrics)
    if cfg.loop not in EVENT_LOOPS:
        raise ConfigError(f"loop: {cfg.loop!r} is not one of {', '.join(EVENT_LOOPS)}")


@dataclass(frozen=True, slots=True)
class OverloadConfig(_Plain):
    """Overload control and per-source limits (`ng911.elements.overload` says why).

    Above `lag_target` seconds of event-loop lag the element sheds a growing fraction of new
    non-emergency requests with 503 + Retry-After; above `max_transactions` it sheds all of
    them; above `hard_max_transactions` even emergency ones (so upstream fails over).
    `source_rate`/`source_burst`: requests/s per source address (0 = no per-source limit);
    `trusted`: networks (CIDR) never limited per source, besides the host table's peers and
    mutually authenticated TLS peers.
    """

    enabled: bool = True
    lag_target: float = 0.05
    # UDP datagrams still queued at every wake-up of a sample: judged only where the socket
    # gives no arrival stamp; elsewhere the wait of that queue's head is, against lag_target
    backlog_target: int = 32
    sample_interval: float = 0.02
    # no request arrived since the last sample and nothing is shed: sample this seldom (the
    # next request brings the sampler back to `sample_interval` at once)
    idle_sample_interval: float = 0.5
    # a UDP call holds ~3 transactions for 32 s (RFC 3261/6026 wait timers): 1,000 calls/s
    # is ~100,000 live ones, a few KB each
    max_transactions: int = 150_000
    hard_max_transactions: int = 300_000
    # request text held by server transactions (RSS is ~3x: parsed values, copies, objects);
    # 1,000 calls/s of 1.7 KB INVITEs hold ~70 MB
    max_held_mb: int = 256
    hard_max_held_mb: int = 512
    retry_after: int = 10
    source_rate: float = 500.0
    source_burst: float = 1000.0
    trusted: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.lag_target <= 0 or self.sample_interval <= 0 or self.idle_sample_interval <= 0:
            raise ConfigError(
                "overload.lag_target, sample_interval and idle_sample_interval must be > 0"
            )
        if not 0 < self.max_transactions <= self.hard_max_transactions:
            raise ConfigError("overload: need 0 < max_transactions <= hard_max_transactions")
        if not 0 < self.max_held_mb <= self.hard_max_held_mb:
            raise ConfigError("overload: need 0 < max_held_mb <= hard_max_held_mb")
        if self.source_rate < 0 or self.source_burst < 0 or self.retry_after < 0:
            raise ConfigError("overload: rates, bursts and retry_after must be >= 0")
        for net in self.trusted:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"overload.trusted: {net!r} is not a network") from None


@dataclass(frozen=True, slots=True)
class StateConfig(_Plain):
    """i3 state notifications (RFC 6665 SUBSCRIBE/NOTIFY, NENA-STA-010.3; `elements/events.py`).

    As notifier (every element: emergency-ElementState and emergency-SecurityPosture of
    itself; psapd also QueueState and ServiceState): `posture` is what SecurityPosture says;
    a SUBSCRIBE asking less than `min_expires` s gets 423, more than `max_expires` is cut to
    it, none gets `default_expires`; at most `max_subscriptions` at once, `max_per_source`
    of them from one host (then 503 + Retry-After `retry_after`); state changes within
    `notify_interval` s go out as one NOTIFY. As subscriber (the ESRP, to its PSAPs' queue
    and service states, when `subscribe`): it asks for `subscribe_expires` s (refreshed
    before they run out; the ESRP's board forgets a state after twice that) and retries a
    failed subscription after `retry_min`, doubling up to `retry_max` s.
    """

    posture: str = "Green"
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_subscriptions: int = 256
    max_per_source: int = 32
    retry_after: int = 30
    notify_interval: float = 0.1
    subscribe: bool = True
    subscribe_expires: int = 90
    retry_min: float = 1.0
    retry_max: float = 60.0

    def __post_init__(self) -> None:
        if self.posture not in SECURITY_POSTURES:
            raise ConfigError(f"state.posture must be one of {', '.join(SECURITY_POSTURES)}")
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise ConfigError("state: need 0 < min_expires <= default_expires <= max_expires")
        if self.max_subscriptions < 1 or self.max_per_source < 1 or self.retry_after < 0:
            raise ConfigError("state: max_subscriptions, max_per_source >= 1, retry_after >= 0")
        if self.notify_interval < 0 or self.subscribe_expires < 1:
            raise ConfigError("state: notify_interval >= 0, subscribe_expires >= 1")
        if not 0 < self.retry_min <= self.retry_max:
            raise ConfigError("state: need 0 < retry_min <= retry_max")


@dataclass(frozen=True, slots=True)
class HostEntry(_Plain):
    """Static resolution of a host name (RFC 3263 without DNS): name → IP address."""

    name: str
    address: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ElementConfig(_Plain):
    """What every element has: a name for logs, listeners, TLS, static host table, timers."""

    name: str = "element"
    fqdn: str = "localhost"
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    tls: TlsProfile = field(default_factory=TlsProfile)
    hosts: tuple[HostEntry, ...] = ()
    t1: float = 0.5  # RFC 3261 §17.1.1.1 T1; tests on loopback may shorten it
    # RFC 3261 §16.6 item 11 Timer C (s): a proxy's INVITE branch with no final answer this
    # long after its request or its last provisional answer is CANCELled (§16.8); the RFC
    # wants more than 3 minutes, tests on loopback may shorten it
    timer_c: float = 180.0
    # a proxy that stops gives the calls it is setting up this long (s) to be answered (new
    # ones get 503 meanwhile), then hands the rest back: CANCEL on, 503 + Retry-After back
    stop_drain: float = 2.0
    # stream connections accepted by the listeners (seconds, counted from the accept; 0 = off):
    # a TLS handshake not finished, or no complete SIP message, in this time closes them
    handshake_timeout: float = 5.0
    first_message_timeout: float = 10.0
    idle_timeout: float = 300.0  # any connection with no byte either way for this long
    log_file: str = ""  # JSON lines; empty = stderr
    overload: OverloadConfig = field(default_factory=OverloadConfig)
    state: StateConfig = field(default_factory=StateConfig)
    # the i3 Logging Service (NENA-STA-010.3 §4.12) this element sends signed LogEvents to:
    # its base URL ("https://logger.esinet.example:8443/"; POSTs go to .../LogEvents). None =
    # no LogEvents. Signed with `tls.cert`/`tls.key` (required then); https uses `tls.ca`.
    logger: str | None = None
    # i3 Agency Identifier (§2.1.1, a domain) in every LogEvent; "" = fqdn minus its host
    agency_id: str = ""
    # serve Prometheus text format at http://HOST:PORT/metrics (`ng911.node.metrics`);
    # "" = off. With workers, worker i serves PORT + i. `ng911 run --metrics` overrides it.
    metrics: str = ""
    # the event loop `ng911 run` runs the element on (`ng911.node.loop`): "auto" = uvloop when
    # installed, else asyncio's; "uvloop" (required); "asyncio". `ng911 run --loop` overrides it
    loop: str = "auto"

    def __post_init__(self) -> None:
        _check_element(self)


@dataclass(frozen=True, slots=True)
class CallerConfig(ElementConfig):
    """The caller UA: registers with its VSP, dials 911, sends PIDF-LO by value."""

    name: str = "caller"
    aor: str = "sip:alice@vsp.example"
    proxy: str = "sip:vsp.example"  # outbound proxy URI (transport param / sips: select the hop)
    register: bool = True
    register_expires: int = 3600
    auth_user: str = ""  # answer the VSP's Digest challenge (RFC 3261 §22.2); "" = AoR's user
    auth_password: str = ""  # empty = no credentials: a 401/407 is final
    dial: str = "911"  # "911", "urn:service:sos", "sip:911@vsp.example", ...
    hangup_after: float = 0.2  # seconds after the 200 OK; 0 = leave the call up
    rtp_host: str = "127.0.0.1"
    lat: float = 40.7580
    lon: float = -73.9855
    radius: float = 0.0  # > 0: send a Circle instead of a Point (RFC 5491 §5.2.3)
    answer_timeout: float = 30.0  # give up (CANCEL) when no final answer in this time


@dataclass(frozen=True, slots=True)
class VspConfig(ElementConfig):
    """The VSP proxy: registrar of its domain, outbound proxy, emergency call recogniser."""

    name: str = "vsp"
    fqdn: str = "vsp.example"
    domain: str = "vsp.example"
    country: str = "US"
    dial_strings: tuple[str, ...] = ()  # empty = the country's defaults (emergency.DIAL_STRINGS)
    esrp: str = "sip:esrp.esinet.example"  # next hop for emergency calls
    lost_url: str = ""  # when set, the VSP asks LoST itself and routes to the answer
    lost_ca: tuple[str, ...] = ()
    record_route: bool = True
    max_expires: int = 7200
    # Digest authentication (RFC 3261 §22, RFC 8760; elements/auth.py). Off by default in the
    # testbed. On: REGISTER needs credentials for the AoR's own user (401, else 403), and with
    # auth_invites every other non-emergency out-of-dialog request too (407). Emergency calls
    # are never challenged.
    auth: bool = False
    auth_realm: str = ""  # empty = domain
    auth_invites: bool = True  # (only when auth is on)
    auth_algorithms: tuple[str, ...] = ("SHA-256", "MD5")  # offered in this order (§2.4)
    auth_nonce_ttl: float = 300.0  # seconds a nonce is good for; then stale=true
    auth_secret: str = ""  # nonce HMAC key; empty = random per process (set it with workers > 1)
    users: dict[str, str] = field(default_factory=dict)  # user -> password
    users_file: str = ""  # `user:realm:HA1` lines (MD5 32 hex, SHA-256 64 hex)
    # processes sharing the listeners under `ng911 run` (ng911.node.workers): N, or "auto" =
    # one per usable core (a proxy is CPU-bound); auto is 1 with auth on and no auth_secret
    # (nonces must verify at every worker) and with `--events` (one event file). 1 by
    # default: the registrar's bindings are per worker, so a call TO a registered user (a
    # PSAP's callback) would find its binding only at the worker that took the REGISTER
    workers: int | str = 1

    def __post_init__(self) -> None:
        _check_element(self)
        check_workers(self.workers)
        bad = [a for a in self.auth_algorithms if a not in DIGEST_ALGORITHMS]
        if bad or not self.auth_algorithms:
            raise ConfigError(
                f"auth_algorithms: each one of {DIGEST_ALGORITHMS}, at least one; got {bad}"
            )


@dataclass(frozen=True, slots=True)
class AlternateRoute(_Plain):
    """PSAP URI → the URIs to try, in order, when it fails (5xx/6xx/480/486/no answer)."""

    psap: str
    alternates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyRule(_Plain):
    """One rule of the ESRP's Policy Routing Function (`elements/prf.py` has the language):
    when every condition of `when` holds (queue_state, service_state, time, weekdays,
    service, source), do `action` ("normal" | "route" | "overflow" | "default") to
    `recipient`, logging `cause` (an RFC 4458 cause value or an i3 reason)."""

    name: str
    action: str = "normal"
    recipient: str = ""
    cause: str = ""
    when: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueuePolicy(_Plain):
    """A queue's rules (i3 NormalNextHopRoutePolicy): `queue` is the PSAP URI as LoST
    returns it, or "*" for every queue (evaluated after the queue's own rules); `owner` is
    the i3 policyOwner logged (empty = the queue URI's host; the ESRP's domain for "*")."""

    queue: str
    owner: str = ""
    rules: tuple[PolicyRule, ...] = ()


@dataclass(frozen=True, slots=True)
class EsrpConfig(ElementConfig):
    """The ESRP: location → LoST → policy → PSAP, with alternate and default routes."""

    name: str = "esrp"
    fqdn: str = "esrp.esinet.example"
    lost_url: str = "http://127.0.0.1:8080/lost"
    lost_ca: tuple[str, ...] = ()  # CA files for https LoST; empty = system store
    lost_cert: str = ""  # client certificate for mutual TLS to LoST
    lost_key: str = ""
    lost_timeout: float = 2.0
    # keep LoST answers for their `expires` (RFC 5222 §5.4, as deployed); false: ask LoST for
    # every call (a load test of the whole ESRP + LoST path, or a LoST that must see each)
    lost_cache: bool = True
    service: str = "urn:service:sos"  # asked of LoST for urn:service:sos calls
    default_route: str = "sip:default-psap.esinet.example"
    alternates: tuple[AlternateRoute, ...] = ()
    # how a LoST `sip:` URI becomes the next hop (routing.apply_hop_policy, lost.policy):
    # "hop" (sips: when psap_transport is tls) | "upgrade" | "require" | "keep"
    sips_policy: str = "hop"
    psap_transport: str = ""  # hop 3: "" (as the URI says) | "udp" | "tcp" | "tls"
    failover_timeout: float = 2.0  # no response beyond 100 in this time → next route
    # a PSAP answering one of these (or a whole class below) → the next route; 480/486: a
    # PSAP whose takers are all busy or gone must not end the call (NENA i3 alternate routing)
    failover_on: tuple[int, ...] = (408, 480, 486, 500, 502, 503, 504, 600, 603)
    failover_classes: tuple[int, ...] = (5, 6)  # whole classes that fail over
    # PSAP health (elements/health.py, as Kamailio's dispatcher): a PSAP that times out, fails
    # at the transport or answers 503 `down_after` times in a row is marked down and skipped
    # (tried last) until it answers `up_after` OPTIONS pings; up ones are pinged every
    # `ping_interval` s (0 = only while down), down ones every `ping_interval_down` s
    ping_interval: float = 10.0
    ping_interval_down: float = 1.0
    ping_timeout: float = 2.0  # an OPTIONS unanswered this long is a failure
    down_after: int = 1
    up_after: int = 1
    default_lat: float = 40.7128  # default location added when the call has none usable
    default_lon: float = -74.0060
    # intake (elements/intake.py): every INVITE reaching the ESRP is routed as an emergency
    # call (NENA-STA-010.3 §4.2); the dial plan only names the rule logged for `sip:911@…`
    country: str = "US"
    dial_strings: tuple[str, ...] = ()  # empty = the country's defaults (emergency.DIAL_STRINGS)
    # hosts (names in `hosts` or IP addresses) whose INVITEs to a non-emergency URI are
    # proxied as they are, i.e. the PSAPs' callbacks (RFC 7090); empty = none: such an
    # INVITE from anyone else is an emergency call that reached the ESRP
    callbacks_from: tuple[str, ...] = ()
    # processes sharing the listeners (ng911.node.workers): N or "auto" (one per core). 1 by
    # default: the i3 state subscriptions (their NOTIFYs), the LoST cache and the PSAP pings
    # live in one process, and a NOTIFY for one worker's subscription may reach another
    workers: int | str = 1
    # Policy Routing Function (elements/prf.py): rules per queue, first match wins; none
    # configured = LoST URI, its alternates, the default route (as before rules existed)
    policy: tuple[QueuePolicy, ...] = ()
    policy_timezone: str = ""  # IANA zone of the rules' `time` windows; "" = the host's
    # a PSAP whose last i3 state (SUBSCRIBE/NOTIFY, `Esrp.states`) is one of these is tried
    # after the others, with no INVITE waiting on it first
    skip_queue_states: tuple[str, ...] = DEFAULT_SKIP_QUEUE
    skip_service_states: tuple[str, ...] = DEFAULT_SKIP_SERVICE

    def __post_init__(self) -> None:
        _check_element(self)
        check_workers(self.workers)
        for what, values, allowed in (
            ("skip_queue_states", self.skip_queue_states, QUEUE_STATES),
            ("skip_service_states", self.skip_service_states, SERVICE_STATES),
        ):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ConfigError(f"{self.name}: {what}: {bad} not among {', '.join(allowed)}")
        if self.policy_timezone:
            try:
                zoneinfo.ZoneInfo(self.policy_timezone)
            except (ValueError, zoneinfo.ZoneInfoNotFoundError):
                raise ConfigError(
                    f"{self.name}: policy_timezone {self.policy_timezone!r} is not a known zone"
                ) from None
        try:
            prf_of(self)
        except PolicyError as exc:
            raise ConfigError(f"{self.name}: {exc}") from None


def routing_policy_of(cfg: EsrpConfig) -> RoutingPolicy:
    """The routing facts of an ESRP config that its policy rules are checked against."""
    return RoutingPolicy(
        default_route=cfg.default_route,
        alternates=tuple((a.psap, a.alternates) for a in cfg.alternates),
        sips_policy=cfg.sips_policy,
        hop_transport=cfg.psap_transport,
        failover_on=frozenset(cfg.failover_on),
        failover_classes=frozenset(cfg.failover_classes),
        owner=cfg.fqdn,
    )


def prf_of(cfg: EsrpConfig) -> Prf:
    """The PRF of an ESRP config; raises `PolicyError` for rules that cannot be used."""
    routing = routing_policy_of(cfg)
    return Prf(
        routing,
        compile_policy(cfg.policy, routing),
        frozenset(cfg.skip_queue_states),
        frozenset(cfg.skip_service_states),
    )


@dataclass(frozen=True, slots=True)
class PsapConfig(ElementConfig):
    """psapd: accepts calls for its PSAP, queues them, offers them to its call takers."""

    name: str = "psap"
    fqdn: str = "psap.esinet.example"
    domain: str = "psap.esinet.example"
    queue_size: int = 10
    offer_timeout: float = 10.0  # no 200 from a call taker in this time → offer to another
    retry_after: int = 30  # seconds, in 486/480 when everyone is busy and the queue full
    # an answered call whose ACK has not come in this time is hung up (BYE both ways) and its
    # taker freed: a spoofed INVITE never ACKed must not hold a taker for 64*T1
    ack_timeout: float = 4.0
    # once no call taker is registered, queued calls wait this long for one to register
    # again, then get 480 (the ESRP tries the alternate PSAP)
    unstaffed_wait: float = 10.0
    # SQLite file keeping the call takers' registrations across a restart ("" = memory only)
    registrations: str = ""
    # call-taker AORs this psapd accepts REGISTERs for (empty = any AOR of its domain)
    takers: tuple[str, ...] = ()
    # hosts (names in `hosts` or IP addresses) whose new INVITEs psapd takes, i.e. its
    # ESRPs: a spoofed INVITE sent straight to psapd from elsewhere gets 403 (empty = any)
    calls_from: tuple[str, ...] = ()
    call_log: str = ""  # JSON lines per call; empty = the element log
    # `urn:service:test.sos` test calls (RFC 6881 §15): psapd answers them itself, never a
    # call taker. Off: 404. More than `test_call_limit` at once: 486 (NENA: the PSAP may
    # limit test calls). `test_calls_when_busy` off: 486 too while a call waits in the
    # queue or every call taker is busy (the PSAP may refuse tests under load). A test
    # call is hung up (BYE) after `test_call_max` seconds if the caller has not.
    test_calls: bool = True
    test_call_limit: int = 2
    test_calls_when_busy: bool = False
    test_call_max: float = 30.0
    rtp_host: str = "127.0.0.1"  # where a test call's media port is bound (and its SDP says)
    # the queueUri of its i3 QueueState notifications (`queue_size` is queueMaxLength);
    # empty = sip:<domain>
    queue_uri: str = ""


@dataclass(frozen=True, slots=True)
class CallTakerConfig(ElementConfig):
    """A call taker: registers with its psapd, rings, auto-answers, hangs up."""

    name: str = "calltaker"
    aor: str = "sip:taker1@psap.esinet.example"
    psap: str = "sip:psap.esinet.example"  # where to REGISTER (and its outbound proxy)
    register_expires: int = 3600
    auth_user: str = ""  # Digest credentials for psapd's registrar; "" = AoR's user
    auth_password: str = ""  # empty = no credentials
    # OPTIONS keep-alive to psapd every N s; when psapd answers again after not answering
    # (a restart), REGISTER at once instead of at the next refresh (0 = off)
    keepalive: float = 5.0
    ring_delay: float = 0.0  # before the 180
    answer_delay: float = 0.0  # after the 180, before the 200; < 0 = never answer
    hangup_after: float = 0.0  # 0 = wait for the caller's BYE
    rtp_host: str = "127.0.0.1"


def load_toml(path: str | Path, table: str, cls: type[T]) -> T:
    """Read `[table]` of a TOML file into `cls` (a config class above).

    `table` may be dotted (`"psap.manhattan"`) to reach a nested table.
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    node: Any = data
    for part in table.split(".") if table else []:
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{path}: no table [{table}]")
        node = node[part]
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: [{table}] is not a table")
    return _from_dict(cls, node, f"{path}:[{table}]")


# TOML out: what the testbed writes for `ng911 run` (bundles), and the benchmarks


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    """A TOML value: strings as JSON strings (a subset of TOML basic strings), tables inline."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return (
            "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
        )
    raise TypeError(f"no TOML form for {type(v).__name__}")


def toml_table(name: str, data: Mapping[str, Any]) -> str:
    """`[name]` and one `key = value` line per item (None left out: TOML has no null)."""
    lines = [f"[{_toml_key(name)}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if v is not None]
    return "\n".join(lines) + "\n"
