"""`ng911 stats`: scrape the `/metrics` of running elements and print a table per element.

ng911's `kamcmd stats`: what each element of a running topology counted (calls by outcome,
requests and responses, TLS handshakes full/resumed and connections, LoST p50/p95, event-loop
lag, queues, overload). Where to scrape comes from explicit URLs, from bundle directories
(`ng911 testbed export`, or a `--processes` run's `bundles/`: the `metrics` of each host's
table, every worker's port), or from the tables of a TOML file. Parsing is
prometheus_client's own text parser, so anything a Prometheus server reads, this reads.
"""

from __future__ import annotations

import math
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ng911.elements.config import WORKERS_AUTO, ConfigError, metrics_address, metrics_spec
from ng911.node.bundle import BUNDLE_FILE, read_bundle
from ng911.node.workers import MAX_WORKERS, usable_cores

__all__ = ["Scrape", "quantile", "render", "scrape", "targets_of"]

MAX_BUNDLES = 1000  # bundle.toml files read under one directory
MAX_BODY = 8 << 20  # bytes of one /metrics page
MAX_SHOWN = 4  # peers named on the tls line (the busiest)


@dataclass
class Scrape:
    """One element's page: its samples by metric name (labels, value)."""

    name: str
    url: str
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def rows(self, name: str) -> list[tuple[dict[str, str], float]]:
        return self.samples.get(name, [])

    def value(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels`."""
        return sum(
            v for lab, v in self.rows(name) if all(lab.get(k) == x for k, x in labels.items())
        )

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for lab, v in self.rows(name):
            out[lab.get(label, "")] = out.get(lab.get(label, ""), 0.0) + v
        return out

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of histogram `name`, by bound."""
        return sorted((float(lab["le"]), v) for lab, v in self.rows(f"{name}_bucket"))


def url_of(target: str) -> str:
    """An element's metrics URL from `http(s)://...` (as given) or HOST:PORT."""
    if target.startswith(("http://", "https://")):
        return target
    host, port = metrics_address(target)
    return f"http://{metrics_spec(_reachable(host), port)}/metrics"


def _reachable(host: str) -> str:
    """A wildcard listening address is scraped over loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _table_targets(
    name: str, table: dict[str, Any], where: str, role: str = ""
) -> Iterator[tuple[str, str]]:
    """(name, URL) of each process of one element table that names `metrics`; `workers`
    absent is the role's default ("auto" for a VSP: one per core of this machine, where a
    testbed's elements run)."""
    spec = table.get("metrics")
    if not spec:
        return
    host, port = metrics_address(str(spec))
    if port == 0:
        raise ConfigError(f"{where}:[{name}]: metrics port 0: give the URL its ready line named")
    count = table.get("workers", WORKERS_AUTO if (role or name) == "vsp" else 1)
    workers = min(usable_cores(), MAX_WORKERS) if count == WORKERS_AUTO else int(count or 1)
    for i in range(workers):
        label = name if workers == 1 else f"{name}/w{i}"
        yield label, url_of(metrics_spec(host, port + i))


def _bundle_targets(directory: Path) -> Iterator[tuple[str, str]]:
    if (directory / BUNDLE_FILE).is_file():
        paths = [directory / BUNDLE_FILE]
    else:
        paths = []
        for p in directory.rglob(BUNDLE_FILE):
            paths.append(p)
            if len(paths) > MAX_BUNDLES:
                raise ConfigError(f"{directory}: more than {MAX_BUNDLES} bundles")
        if not paths:
            raise ConfigError(f"{directory}: no {BUNDLE_FILE} in it or below it")
    for path in sorted(paths):
        host, role, toml = read_bundle(path.parent)
        yield from _table_targets(host, _read(toml)[host], str(toml), role)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def _config_targets(path: Path) -> Iterator[tuple[str, str]]:
    """Every table (nested ones too: [psap.manhattan]) of a TOML file that names metrics."""

    def walk(prefix: str, node: dict[str, Any]) -> Iterator[tuple[str, str]]:
        if "metrics" in node:
            yield from _table_targets(prefix, node, str(path), prefix.split(".")[0])
            return
        for key, sub in node.items():
            if isinstance(sub, dict):
                yield from walk(f"{prefix}.{key}" if prefix else key, sub)

    found = list(walk("", _read(path)))
    if not found:
        raise ConfigError(f"{path}: no table names metrics")
    yield from found


def targets_of(items: Iterable[str], config: str | None = None) -> list[tuple[str, str]]:
    """(name, URL) to scrape: URLs and HOST:PORT as given, directories as bundles, and the
    tables of `config`. A `ConfigError` names what could not be read."""
    out: list[tuple[str, str]] = []
    for item in items:
        if Path(item).is_dir():
            out.extend(_bundle_targets(Path(item)))
        else:
            out.append((item, url_of(item)))
    if config is not None:
        out.extend(_config_targets(Path(config)))
    return out


def scrape(name: str, url: str, timeout: float = 3.0) -> Scrape:
    """GET and parse one page; a `ConfigError` saying why when it cannot."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # url_of: http(s) only
            body = resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(f"{url}: unreachable: {reason}") from None
    if len(body) > MAX_BODY:
        raise ConfigError(f"{url}: page larger than {MAX_BODY} bytes")
    result = Scrape(name, url)
    try:
        for family in text_string_to_metric_families(body.decode("utf-8", "replace")):
            for s in family.samples:
                result.samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ConfigError(f"{url}: not Prometheus text format: {exc}") from None
    if "ng911_element_info" in result.samples:
        info = result.rows("ng911_element_info")[0][0]
        result.name = info.get("name", name) + (f"/w{info['worker']}" if info.get("worker") else "")
    return result


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated within its bucket (as
    Prometheus' histogram_quantile); None when empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cum in buckets:
        if cum >= rank:
            if math.isinf(bound):
                return lower
            if cum == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (cum - below)
        lower, below = bound, cum
    return lower


def _n(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:.3g}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f} ms"


def _pairs(d: dict[str, float], order: Iterable[str] = (), *, zeros: bool = False) -> str:
    """ "k v  k v" in `order` first, then by name; zero values left out unless `zeros`."""
    first = [k for k in order if k in d]
    keys = [k for k in first + sorted(set(d) - set(first)) if zeros or d[k]]
    return "  ".join(f"{k} {_n(d[k])}" for k in keys) or "-"


def render(s: Scrape) -> str:
    """The compact table of one element."""
    info = s.rows("ng911_element_info")
    role = info[0][0].get("role", "?") if info else "process"
    lines = [f"{s.name}  ({role})  {s.url}"]

    def row(title: str, text: str) -> None:
        lines.append(f"  {title:<13} {text}")

    if info:
        outcomes = ("answered", "cancelled", "busy", "timeout", "redirected", "failed")
        row("calls", _pairs(s.by("ng911_calls_total", "outcome"), outcomes))
        for d in ("in", "out"):
            reqs = {
                lab["method"]: v for lab, v in s.rows("ng911_sip_requests_total") if lab["dir"] == d
            }
            codes: dict[str, float] = {}
            for lab, v in s.rows("ng911_sip_responses_total"):
                if lab["dir"] == d:
                    codes[lab["code"]] = codes.get(lab["code"], 0.0) + v
            row(f"requests {d}", _pairs(reqs, ("INVITE", "ACK", "BYE", "CANCEL")))
            row(f"responses {d}", _pairs(codes))
        row(
            "transactions",
            f"live {_n(s.value('ng911_transactions'))}  started "
            f"{_n(s.value('ng911_transactions_started_total', side='server'))} server, "
            f"{_n(s.value('ng911_transactions_started_total', side='client'))} client",
        )
        conns = s.by("ng911_connections", "peer")
        top = dict(sorted(conns.items(), key=lambda kv: -kv[1])[:MAX_SHOWN])
        more = f"  +{len(conns) - len(top)} more" if len(conns) > len(top) else ""
        row(
            "tls",
            f"full {_n(s.value('ng911_tls_handshakes_total', kind='full'))}  "
            f"resumed {_n(s.value('ng911_tls_handshakes_total', kind='resumed'))}  "
            f"failed {_n(s.value('ng911_transport_tls_refused_total'))}  "
            f"connections {_n(sum(conns.values()))}" + (f" ({_pairs(top)}{more})" if conns else ""),
        )
    lost = s.buckets("ng911_lost_query_seconds")
    if lost:
        row(
            "lost",
            f"{_n(lost[-1][1])} queries  p50 {_ms(quantile(lost, 0.5))}  "
            f"p95 {_ms(quantile(lost, 0.95))}  "
            f"cached {_n(s.value('ng911_lost_queries_cached_total'))}  "
            f"failed {_n(s.value('ng911_lost_query_failures_total'))}",
        )
    lag = s.buckets("ng911_event_loop_lag_seconds")
    top_lag = s.value("ng911_event_loop_lag_max_seconds")

    def lag_q(q: float) -> str:  # interpolation may overshoot the largest lag seen
        v = quantile(lag, q)
        return _ms(None if v is None else min(v, top_lag))

    row("loop lag", f"p50 {lag_q(0.5)}  p95 {lag_q(0.95)}  max {_ms(top_lag)}")
    if info:
        row("queues", _pairs(s.by("ng911_queue_length", "queue"), zeros=True))
        if not s.value("ng911_overload_enabled"):
            over = "off"
        else:
            state = "SHEDDING" if s.value("ng911_overload_shedding") else "ok"
            over = (
                f"{state}  shed {s.value('ng911_overload_shed_fraction'):.0%}  "
                f"refused {_n(s.value('ng911_overload_refused_total'))} "
                f"(emergency {_n(s.value('ng911_overload_refused_total', priority='emergency'))})"
                f"  source-limited {_n(s.value('ng911_source_limited_total'))}"
            )
        row("overload", over)
        steering = s.by("ng911_udp_steering_total", "what")
        if steering:  # a worker of several (`--udp-steering call-id`)
            order = ("handed_over", "taken_over", "dropped", "bad")
            row("udp steering", _pairs(steering, order, zeros=True))
    cpu = s.value("process_cpu_seconds_total")
    rss = s.value("process_resident_memory_bytes")
    row("process", f"cpu {cpu:.2f} s  rss {rss / 2**20:.0f} MB")
    return "\n".join(lines)
