"""The testbed's outputs: `results.json`, a self-contained `report.html`, terminal tables.

`report.html` has no script and no external file: tables, and inline SVG for the CDF of the
Session Request Delay, the stacked bar of where that delay goes, and one ladder diagram per
scenario in the manner of the source paper's Figure 2 (each hop's arrows green when the hop
is encrypted, red when it is plaintext). Everything is rendered from the results dict alone,
so `ng911 testbed report results.json` can redraw a report from an old run.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ng911.observe.hops import HOP_LABELS, HOPS
from ng911.observe.stats import METRICS, PERCENTILE_METHOD, percentile
from ng911.testbed.hoptable import ROW_KIND
from ng911.testbed.logexport import call_anchor
from ng911.testbed.measure import SEGMENTS
from ng911.testbed.results import validate

GREEN = "#1a7f37"
RED = "#cf222e"
GREY = "#6e7781"
PALETTE = ("#0969da", "#bf3989", "#1a7f37", "#bc4c00", "#8250df", "#116329", "#cf222e")
SEGMENT_COLOURS: dict[str, str] = {
    "hop1": "#54aeff",
    "vsp": "#8c959f",
    "hop2": "#0969da",
    "esrp": "#6e7781",
    "lost": "#bf8700",
    "hop3": "#0550ae",
    "psap": "#57606a",
    "hop4": "#033d8b",
    "calltaker": "#424a53",
    "handshake": "#cf222e",
    "other": "#d0d7de",
}
COLUMN_TITLES: dict[str, str] = {
    "caller": "caller",
    "vsp": "VSP proxy",
    "esrp": "ESRP",
    "lost": "LoST (ECRF)",
    "psap": "PSAP server",
    "calltaker": "call taker",
}
LADDER_COLUMNS: tuple[str, ...] = tuple(COLUMN_TITLES)
KIND_ORDER: tuple[str, ...] = (
    "INVITE",
    "INVITE+LoST",
    "100 INVITE",
    "180 INVITE",
    "200 INVITE",
    "ACK",
    "BYE",
    "200 BYE",
)


def escape(text: object) -> str:
    """HTML-escape anything (quotes too)."""
    return html.escape(str(text), quote=True)


def ms_text(v: float | None, digits: int = 3) -> str:
    """A time in ms for a table cell: "—" when absent."""
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


_e = escape
_ms = ms_text


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:+.1f}%"


def _delta(v: float | None) -> str:
    return "—" if v is None else f"{v:+.3f}"


# ------------------------------------------------------------------------------ JSON


def write_results(results: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


# the top-level keys every results.json has (a minimal check; the full JSON Schema of
# results.json, when there is one, checks the rest)
RESULTS_KEYS = ("meta", "scenarios")


def load_results(path: Path) -> dict[str, Any]:
    """A run's results.json; ValueError (one line) for a file that is not JSON, not
    results (an object with the `RESULTS_KEYS`, each an object), or not of the packaged
    results schema (`ng911/data/results.schema.json`, checked by `results.validate`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"not an ng911 results file: a JSON {type(data).__name__}, not an object")
    missing = [k for k in RESULTS_KEYS if not isinstance(data.get(k), dict)]
    if missing:
        keys = ", ".join(repr(k) for k in missing)
        raise ValueError(f"not an ng911 results file: no {keys} object at the top level")
    problems = validate(data)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"results do not match the results schema: {problems[0]}{more}")
    return data


# ------------------------------------------------------------------------------ terminal


def _get(d: Mapping[str, Any] | None, *keys: str) -> Any:
    cur: Any = d
    for k in keys:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(k)
    return cur


def _delta_ci(d: Mapping[str, Any]) -> str:
    ci = d.get("ci95_ms")
    noise = "~" if d.get("within_noise") else ""  # ~: the interval includes zero
    return noise + _delta(d.get("ms")) + (f" ±{ci:.3f}" if ci is not None else "")


def _handshake_cell(res: Mapping[str, Any]) -> str:
    hs = res.get("handshakes") or {}
    full = sum(int(v.get("full", 0)) for v in hs.values())
    resumed = sum(int(v.get("resumed", 0)) for v in hs.values())
    return f"{full}/{resumed}" if hs else "—"


def format_table(results: Mapping[str, Any], group: str = "warm") -> str:
    """One line per scenario: SRD and INVITE→200 percentiles, difference from plain, failures."""
    header = (
        f"{'scenario':<13} {'hops':<16} {'calls':>5} {'fail':>4} "
        f"{'SRD mean':>9} {'p50':>8} {'p95':>8} {'p99':>8} {'Δmean ±95%':>16} {'Δ%':>7} "
        f"{'→200 mean':>9} {'p95':>8} {'TLS f/r':>8}"
    )
    lines = [
        f"Session Request Delay (RFC 6076 §4.2, INVITE→180) and INVITE→200, ms, {group} calls",
        header,
        "-" * len(header),
    ]
    for name, res in results.get("scenarios", {}).items():
        srd = _get(res, group, "srd") or {}
        ans = _get(res, group, "invite_to_200") or {}
        d = _get(res, "diff", group, "srd", "mean") or {}
        hops = ",".join(res.get("transports", {}).get(h, "?") for h in HOPS)
        lines.append(
            f"{name:<13} {hops:<16} {res.get('calls', 0):>5} {res.get('failed', 0):>4} "
            f"{_ms(srd.get('mean')):>9} {_ms(srd.get('p50')):>8} {_ms(srd.get('p95')):>8} "
            f"{_ms(srd.get('p99')):>8} {_delta_ci(d):>16} {_pct(d.get('pct')):>7} "
            f"{_ms(ans.get('mean')):>9} {_ms(ans.get('p95')):>8} {_handshake_cell(res):>8}"
        )
    if any(
        _get(r, "diff", group, "srd", "mean", "within_noise")
        for r in results.get("scenarios", {}).values()
    ):
        lines.append("~ the difference is within noise: its 95% interval includes zero")
    cold = [
        (name, _get(res, "cold", "srd", "mean"), _get(res, "cold", "invite_to_200", "mean"))
        for name, res in results.get("scenarios", {}).items()
    ]
    if any(c[1] is not None for c in cold):
        lines.append(
            "cold (new connections, full TLS handshakes), mean: "
            + "; ".join(f"{n} SRD {_ms(s)} / →200 {_ms(a)}" for n, s, a in cold)
        )
    impl = implementations_line(results.get("scenarios", {}))
    if impl is not None:
        lines.append(impl)
    return "\n".join(lines)


def implementations_line(scenarios: Mapping[str, Any]) -> str | None:
    """Who ran each element, in one line: ng911 everywhere except where a scenario put
    another implementation (`results["scenarios"][name]["implementations"]`, host → label;
    None for results written before the field existed)."""
    mine: set[str] = set()
    other: dict[str, list[str]] = {}
    for name, res in scenarios.items():
        for host, label in (res.get("implementations") or {}).items():
            if str(label).startswith("ng911"):
                mine.add(str(label))
            else:
                other.setdefault(f"{label} as {host}", []).append(name)
    if not mine and not other:
        return None
    text = f"Implementations: {', '.join(sorted(mine)) or 'ng911'} for every element"
    if other:
        text += ", except " + "; ".join(f"{k} in {', '.join(v)}" for k, v in other.items())
        text += (
            " (Kamailio reports no events: its segment of the SRD breakdown is the whole "
            "transit through it, both of its hops included)"
        )
    return text


def format_scenario(res: Mapping[str, Any]) -> str:
    """A short block for one scenario, printed as soon as it finishes."""
    warm = res.get("warm", {})
    srd, ans = warm.get("srd") or {}, warm.get("invite_to_200") or {}
    lines = [
        f"{res['name']} ({res.get('summary', '')}): {res.get('calls', 0)} calls, "
        f"{res.get('failed', 0)} failed",
        f"  SRD ms       mean {_ms(srd.get('mean'))}  p50 {_ms(srd.get('p50'))}  "
        f"p95 {_ms(srd.get('p95'))}  p99 {_ms(srd.get('p99'))}",
        f"  INVITE→200   mean {_ms(ans.get('mean'))}  p50 {_ms(ans.get('p50'))}  "
        f"p95 {_ms(ans.get('p95'))}  p99 {_ms(ans.get('p99'))}",
    ]
    cold = _get(res, "cold", "srd", "mean")
    if cold is not None:
        lines.append(
            f"  cold calls   SRD mean {_ms(cold)}  INVITE→200 "
            f"{_ms(_get(res, 'cold', 'invite_to_200', 'mean'))}"
        )
    for hop in HOPS:
        b = _get(res, "bytes", hop)
        if not b:
            continue
        hs = _get(res, "handshakes", hop)
        tls = ""
        if hs:
            tls = (
                f"  TLS full {hs['full']} ({_ms(hs.get('full_mean_ms'))} ms) "
                f"resumed {hs['resumed']} ({_ms(hs.get('resumed_mean_ms'))} ms)"
            )
        lines.append(
            f"  {hop} {res['transports'].get(hop, '?'):<4} {b['messages']:>5} msgs, "
            f"SIP {b['sip_mean']:.0f} B / wire {b['wire_mean']:.0f} B per message{tls}"
        )
    lost = res.get("lost")
    if lost:
        lines.append(f"  LoST query   mean {_ms(lost['mean'])}  p95 {_ms(lost['p95'])} ms")
    return "\n".join(lines)


def interval_text(d: Mapping[str, Any] | None, *, noise: str = " within noise") -> str:
    """ "+1.234 [+0.900, +1.600]" (ms, 95% CI), `noise` appended when it includes zero."""
    if not d:
        return "—"
    txt = f"{d['ms']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    return txt + (noise if d.get("within_noise") else "")


def interval_html(d: Mapping[str, Any] | None) -> str:
    """`interval_text` for a table cell, the noise flag styled."""
    return interval_text(d, noise=" <span class=noise>within noise</span>")


def format_hop_table(results: Mapping[str, Any], group: str = "warm") -> str:
    """Per scenario and hop: median and mean (ms), and the median's difference from the
    baseline with its 95% bootstrap interval, flagged when the interval includes zero."""
    table = results.get("hop_table") or {}
    rows = [r for r in table.get("rows", []) if r["group"] == group]
    if not rows:
        return ""
    base = table.get("baseline") or "the baseline"
    header = (
        f"{'scenario':<13} {'row':<10} {'n':>5} {'median':>9} {'mean':>9}  "
        f"Δmedian vs {base} [95% CI]"
    )
    lines = [
        f"Per hop, {group} calls (ms); intervals: {table.get('method', 'bootstrap')}",
        "rows: " + "; ".join(f"{k} {v}" for k, v in ROW_KIND.items()),
        header,
        "-" * (len(header) + 12),
    ]
    for r in rows:
        d = (r.get("diff") or {}).get("median")
        lines.append(
            f"{r['scenario']:<13} {r['row']:<10} {r['n']:>5} {_ms(r['median']):>9} "
            f"{_ms(r['mean']):>9}  {interval_text(d) if d else ''}"
        )
    return "\n".join(lines)


def format_between_runs(results: Mapping[str, Any]) -> str:
    """With --repeat: each scenario's warm SRD median in each run, and their spread."""
    items = [
        (name, res["between_runs"])
        for name, res in (results.get("scenarios") or {}).items()
        if res.get("between_runs") and len(res["between_runs"]["repeats"]) > 1
    ]
    if not items:
        return ""
    lines = ["Between runs: warm SRD median of each run (ms), range and standard deviation"]
    for name, b in items:
        runs = "  ".join(_ms(v) for v in b["srd_p50"])
        lines.append(
            f"  {name:<13} {runs}   range {_ms(b['p50_range_ms'])}  sd {_ms(b['p50_stdev_ms'])}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ SVG


def _svg(width: int, height: int, body: Iterable[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}" '
        f'font-family="system-ui, sans-serif" font-size="12">' + "".join(body) + "</svg>"
    )


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def cdf_svg(series: Mapping[str, Sequence[float]], *, title: str = "SRD (ms)") -> str:
    """Empirical CDF of each scenario's delays (step lines), with a legend."""
    w, h, ml, mr, mt, mb = 760, 340, 56, 170, 16, 44
    pw, ph = w - ml - mr, h - mt - mb
    values = [v for s in series.values() for v in s]
    # the x axis spans the bulk of every curve: from below the fastest call to past the
    # slowest p95 (a handful of outliers would otherwise flatten every curve to a wall);
    # calls beyond the right edge are drawn at it
    p95s = [percentile(list(s), 95) for s in series.values() if s]
    hi = max(p95s) * 1.25 if p95s else 1.0
    lo = min(values) if values else 0.0
    step = _nice_max((hi - (lo if lo > 0.4 * hi else 0.0)) / 5)
    xmin = math.floor(lo / step) * step if lo > 0.4 * hi else 0.0
    xmax = xmin + 5 * step
    while xmax < hi:
        xmax += step
    ticks = round((xmax - xmin) / step)
    body = [f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fff" stroke="#d0d7de"/>']
    for i in range(ticks + 1):
        x = ml + pw * i / ticks
        body.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#eaeef2"/>')
        body.append(
            f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle">{xmin + step * i:g}</text>'
        )
    for i in range(5):
        y = mt + ph - ph * i / 4
        body.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#eaeef2"/>')
        body.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end">{i / 4:.2f}</text>')
    body.append(
        f'<text x="{ml + pw / 2}" y="{h - 6}" text-anchor="middle">{_e(title)}</text>'
        f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {mt + ph / 2})">fraction of calls</text>'
    )
    clipped = {name: sum(1 for v in s if v > xmax) for name, s in series.items()}
    if any(clipped.values()):
        # the slow tail beyond the axis is drawn at its edge: say so on the plot
        x = ml + pw
        body.append(
            f'<line x1="{x}" y1="{mt}" x2="{x}" y2="{mt + ph}" stroke="{RED}" '
            f'stroke-width="2" stroke-dasharray="4 3"/>'
            f'<text class="clip" x="{x - 4}" y="{mt + 12}" text-anchor="end" fill="{RED}">'
            f"▶ slower calls drawn at {xmax:g} ms</text>"
        )
    for k, (name, s) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        xs = sorted(s)
        if xs:
            pts = [f"{ml:.1f},{mt + ph:.1f}"]
            n = len(xs)
            for i, v in enumerate(xs):
                x = ml + pw * (min(max(v, xmin), xmax) - xmin) / (xmax - xmin)
                pts.append(f"{x:.1f},{mt + ph - ph * i / n:.1f}")
                pts.append(f"{x:.1f},{mt + ph - ph * (i + 1) / n:.1f}")
            body.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                f'points="{" ".join(pts)}"><title>{_e(name)}</title></polyline>'
            )
        ly = mt + 14 + 18 * k
        body.append(
            f'<line x1="{ml + pw + 14}" y1="{ly - 4}" x2="{ml + pw + 34}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="3"/>'
            f'<text x="{ml + pw + 40}" y="{ly}">{_e(name)} (n={len(xs)}'
            + (f", {clipped[name]} beyond" if clipped.get(name) else "")
            + ")</text>"
        )
    return _svg(w, h, body, "CDF of " + title)


def stacked_bar_svg(breakdowns: Mapping[str, Mapping[str, float]]) -> str:
    """One horizontal bar per scenario: mean SRD split into hop transit and element time."""
    rows = list(breakdowns.items())
    w, ml, mr, mt, row = 760, 110, 80, 12, 30
    legend_rows = 2
    h = mt + row * max(1, len(rows)) + 40 + 18 * legend_rows
    pw = w - ml - mr
    total_max = _nice_max(max((sum(b.values()) for _, b in rows), default=1.0))
    body: list[str] = []
    for i in range(6):
        x = ml + pw * i / 5
        y2 = mt + row * max(1, len(rows))
        body.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{y2}" stroke="#eaeef2"/>')
        body.append(
            f'<text x="{x:.1f}" y="{y2 + 14}" text-anchor="middle">{total_max * i / 5:g}</text>'
        )
    for r, (name, b) in enumerate(rows):
        y = mt + row * r + 5
        body.append(f'<text x="{ml - 8}" y="{y + 14}" text-anchor="end">{_e(name)}</text>')
        x = float(ml)
        for seg in SEGMENTS:
            v = b.get(seg, 0.0)
            if v <= 0:
                continue
            wd = pw * v / total_max
            body.append(
                f'<rect x="{x:.2f}" y="{y}" width="{wd:.2f}" height="20" '
                f'fill="{SEGMENT_COLOURS[seg]}"><title>{_e(seg)}: {v:.3f} ms</title></rect>'
            )
            x += wd
        body.append(f'<text x="{x + 6:.1f}" y="{y + 14}">{sum(b.values()):.3f} ms</text>')
    ly = mt + row * max(1, len(rows)) + 34
    for i, seg in enumerate(SEGMENTS):
        lx = ml + (i % 6) * 105
        yy = ly + 18 * (i // 6)
        body.append(
            f'<rect x="{lx}" y="{yy - 10}" width="12" height="12" fill="{SEGMENT_COLOURS[seg]}"/>'
            f'<text x="{lx + 16}" y="{yy}">{_e(seg)}</text>'
        )
    return _svg(w, h, body, "mean SRD by hop and element")


def ladder_svg(
    arrows: Sequence[Mapping[str, Any]],
    *,
    hop_transports: Mapping[str, str] | None = None,
    title: str = "",
) -> str:
    """A ladder diagram: one lifeline per column, one arrow per message, in time order.

    Green arrows crossed an encrypted hop (TLS, HTTPS), red ones crossed in plaintext.
    Each arrow is labelled with its first line and its send time (ms since the INVITE).
    """
    cols = LADDER_COLUMNS
    w, mt, row, ml = 1100, 64, 24, 70
    step = (w - 2 * ml) / (len(cols) - 1)
    xs = {c: ml + step * i for i, c in enumerate(cols)}
    shown = [a for a in arrows if a.get("src") in xs and a.get("dst") in xs]
    h = mt + row * (len(shown) + 1) + 24
    body: list[str] = [
        "<defs>"
        f'<marker id="g" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto">'
        f'<path d="M0,0 L8,4 L0,8 z" fill="{GREEN}"/></marker>'
        f'<marker id="r" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto">'
        f'<path d="M0,0 L8,4 L0,8 z" fill="{RED}"/></marker>'
        "</defs>"
    ]
    if title:
        body.append(f'<text x="{ml - 60}" y="14" font-weight="bold">{_e(title)}</text>')
    for c in cols:
        x = xs[c]
        body.append(
            f'<text x="{x:.1f}" y="34" text-anchor="middle" font-weight="bold">'
            f"{_e(COLUMN_TITLES[c])}</text>"
            f'<line x1="{x:.1f}" y1="42" x2="{x:.1f}" y2="{h - 10}" stroke="#8c959f" '
            f'stroke-dasharray="4 3"/>'
        )
    if hop_transports:
        pairs = {
            "hop1": ("caller", "vsp"),
            "hop2": ("vsp", "esrp"),
            "hop3": ("esrp", "psap"),
            "hop4": ("psap", "calltaker"),
        }
        for hop, (up, down) in pairs.items():
            t = hop_transports.get(hop)
            if not t:
                continue
            colour = GREEN if t in ("tls", "https", "wss") else RED
            xm = (xs[up] + xs[down]) / 2 if hop != "hop3" else (xs["lost"] + xs["psap"]) / 2
            body.append(
                f'<text x="{xm:.1f}" y="52" text-anchor="middle" fill="{colour}" '
                f'font-size="11">{_e(hop)} {_e(t)}</text>'
            )
    for i, a in enumerate(shown):
        y = mt + row * (i + 1)
        x1, x2 = xs[a["src"]], xs[a["dst"]]
        if a.get("kind") == "handshake":
            body.append(_handshake_band(a, x1, x2, y, ml))
            continue
        enc = bool(a.get("encrypted"))
        colour = GREEN if enc else RED
        marker = "g" if enc else "r"
        dash = ' stroke-dasharray="6 3"' if a.get("dst") == "lost" or a.get("src") == "lost" else ""
        body.append(
            f'<line x1="{x1:.1f}" y1="{y}" x2="{x2:.1f}" y2="{y}" stroke="{colour}" '
            f'stroke-width="2" marker-end="url(#{marker})"{dash}>'
            f"<title>{_e(a.get('hop') or '')} {_e(a.get('transport', ''))}: "
            f"{a.get('sip_bytes', 0)} B SIP, {a.get('wire_bytes', 0)} B on the wire</title></line>"
        )
        lx = min(x1, x2) + 6
        label = str(a.get("label", ""))
        room = max(8, int((abs(x2 - x1) - 10) / 6.2))  # ~6.2 px per character at 11 px
        short = label if len(label) <= room else label[: room - 1] + "…"
        body.append(
            f'<text x="{lx:.1f}" y="{y - 4}" font-size="11">{_e(short)}'
            f"<title>{_e(label)}</title></text>"
        )
        tx = ml - 60
        body.append(
            f'<text x="{tx}" y="{y + 4}" font-size="10" fill="{GREY}">'
            f"{float(a.get('t_send', 0.0)):.3f} ms</text>"
        )
    return _svg(int(w), int(h), body, title or "ladder diagram")


def _handshake_band(a: Mapping[str, Any], x1: float, x2: float, y: int, ml: int) -> str:
    """A TLS handshake on a ladder: a wide translucent band between the two ends."""
    lo, hi = min(x1, x2), max(x1, x2)
    dur = float(a.get("t_recv") or a.get("t_send", 0.0)) - float(a.get("t_send", 0.0))
    return (
        f'<rect class="handshake" x="{lo:.1f}" y="{y - 7}" width="{hi - lo:.1f}" height="10" '
        f'fill="{GREEN}" fill-opacity="0.25" stroke="{GREEN}" stroke-dasharray="3 2">'
        f"<title>{_e(a.get('hop') or '')}: {_e(a.get('label', ''))}</title></rect>"
        f'<text x="{lo + 6:.1f}" y="{y - 9}" font-size="11" fill="{GREEN}">'
        f"{_e(a.get('label', ''))}</text>"
        f'<text x="{ml - 60}" y="{y + 4}" font-size="10" fill="{GREY}">'
        f"{float(a.get('t_send', 0.0)):.3f} ms</text>"
        + (f"<desc>{dur:.3f} ms</desc>" if dur > 0 else "")
    )


# ------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#1f2328;max-width:1180px}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #d0d7de}
h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right}
th{background:#f6f8fa} td.l,th.l{text-align:left}
.ok{color:#1a7f37;font-weight:bold} .bad{color:#cf222e;font-weight:bold}
.enc{background:#dafbe1;color:#1a7f37} .clr{background:#ffebe9;color:#cf222e}
.note{color:#57606a;font-size:12px} code{font-size:12px}
.scroll{max-width:100%;overflow-x:auto} svg{max-width:100%;height:auto}
.noise{color:#9a6700;font-style:italic} .warn{background:#fff8c5;padding:6px 10px}
@media (max-width:900px){body{margin:8px} table{font-size:12px} th,td{padding:2px 4px}}
"""


def _chip(transport: str, encrypted: bool) -> str:
    return f'<span class="{"enc" if encrypted else "clr"}">&nbsp;{_e(transport)}&nbsp;</span>'


def _summary_cells(s: Mapping[str, Any] | None) -> str:
    if not s:
        return "<td>—</td>" * 4
    return "".join(f"<td>{_ms(s.get(k))}</td>" for k in ("mean", "p50", "p95", "p99"))


def _diff_cells(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "<td>—</td><td>—</td>"
    m = d.get("mean") or {}
    ci = m.get("ci95_ms")
    ci_txt = f" ± {ci:.3f}" if ci is not None else ""
    noise = " <span class=noise>within noise</span>" if m.get("within_noise") else ""
    return f"<td>{_delta(m.get('ms'))}{ci_txt}{noise}</td><td>{_pct(m.get('pct'))}</td>"


def _scenario_detail(res: Mapping[str, Any]) -> str:
    out = [
        f'<h3 id="sc-{_e(res["name"])}">{_e(res["name"])} — {_e(res.get("description", ""))}</h3>'
    ]
    # hops: transport, bytes, handshakes
    out.append(
        "<table><tr><th class=l>hop</th><th>transport</th><th>messages</th>"
        "<th>SIP B/msg</th><th>wire B/msg</th><th>overhead</th><th>wire total B</th>"
        "<th>TLS full</th><th>full ms</th><th>resumed</th><th>resumed ms</th>"
        "<th class=l>TLS</th></tr>"
    )
    for hop in HOPS:
        b = _get(res, "bytes", hop) or {}
        hs = _get(res, "handshakes", hop) or {}
        t = res.get("transports", {}).get(hop, "?")
        enc = bool(res.get("encrypted", {}).get(hop))
        tls = ", ".join([*hs.get("versions", []), *hs.get("ciphers", [])])
        out.append(
            f"<tr><td class=l>{_e(hop)} {_e(HOP_LABELS[hop])}</td><td>{_chip(t, enc)}</td>"
            f"<td>{b.get('messages', 0)}</td><td>{_ms(b.get('sip_mean'), 1)}</td>"
            f"<td>{_ms(b.get('wire_mean'), 1)}</td><td>{_pct(b.get('overhead_pct'))}</td>"
            f"<td>{b.get('wire_total', '—')}</td>"
            f"<td>{hs.get('full', '—')}</td><td>{_ms(hs.get('full_mean_ms'))}</td>"
            f"<td>{hs.get('resumed', '—')}</td><td>{_ms(hs.get('resumed_mean_ms'))}</td>"
            f"<td class=l>{_e(tls)}</td></tr>"
        )
    out.append("</table>")
    # elements' own processing: one row per element, one column per message kind
    proc = res.get("processing") or {}
    if proc:
        kinds = [k for k in KIND_ORDER if any(k in (proc.get(r) or {}) for r in proc)]
        kinds += sorted({k for r in proc.values() for k in r} - set(kinds))
        out.append(
            "<p class=note>Each element's own time (ms, mean / p95) from receiving a message "
            "to sending what it caused; LoST queries and TLS handshakes it waited for are "
            "not counted (<code>INVITE+LoST</code> includes the ESRP's query).</p>"
        )
        out.append(
            "<table><tr><th class=l>element</th>"
            + "".join(f"<th>{_e(k)}</th>" for k in kinds)
            + "</tr>"
        )
        order = ("vsp", "esrp", "psap", "calltaker")
        for role in (*order, *sorted(set(proc) - set(order))):
            row = proc.get(role)
            if not row:
                continue
            cells = []
            for k in kinds:
                sm = row.get(k)
                cells.append(
                    f"<td>{_ms(sm['mean'])} / {_ms(sm['p95'])}</td>" if sm else "<td>—</td>"
                )
            out.append(
                f"<tr><td class=l>{_e(COLUMN_TITLES.get(role, role))}</td>{''.join(cells)}</tr>"
            )
        out.append("</table>")
    cpu = res.get("cpu_us_per_call") or {}
    if cpu:
        out.append(
            "<p class=note>CPU per call (µs, <code>time.thread_time</code> around each "
            "element's handlers): " + ", ".join(f"{_e(k)} {v:.0f}" for k, v in cpu.items()) + "</p>"
        )
    out.extend(_ladders(res))
    files = res.get("files") or {}
    if files:
        items = []
        for kind, m in files.items():
            if isinstance(m, Mapping):
                for k, v in m.items():
                    items.append(f'<a href="{_e(v)}">{_e(k)} {_e(kind)}</a>')
        if items:
            out.append("<p class=note>Files: " + " · ".join(items) + "</p>")
        notes = files.get("capture_notes") if isinstance(files, Mapping) else None
        if notes:
            out.append(f"<p class=note>Capture notes: {_e(notes)}</p>")
    page = "\n".join(out)  # narrow screens: each table scrolls in its own box
    return page.replace("<table>", '<div class="scroll"><table>').replace(
        "</table>", "</table></div>"
    )


def _ladders(res: Mapping[str, Any]) -> list[str]:
    """The warm ladder (median SRD) and, beside it, the cold one (median cold SRD) with the
    TLS handshakes each hop opened."""
    out: list[str] = []
    for key, title in (("ladder", ""), ("ladder_cold", " (cold call)")):
        ladder = res.get(key)
        if not ladder or not ladder.get("arrows"):
            continue
        which = "cold call" if ladder.get("cold") else "warm call"
        hs = sum(1 for a in ladder["arrows"] if a.get("kind") == "handshake")
        out.append(
            f"<p class=note>Ladder of the {which} with the median SRD, Call-ID "
            f"<code>{_e(ladder['call_id'])}</code>, SRD {_ms(ladder.get('srd'))} ms"
            + (f", {hs} TLS handshake(s) (bands)" if hs else "")
            + ". Green: encrypted hop; red: plaintext."
            + f"{logevents_link(res, ladder['call_id'])}</p>"
        )
        out.append(
            '<div class="scroll">'
            + ladder_svg(
                ladder["arrows"],
                hop_transports={**res.get("transports", {})},
                title=f"{res['name']}: {res.get('summary', '')}{title}",
            )
            + "</div>"
        )
    return out


def _hop_table_html(results: Mapping[str, Any]) -> str:
    """The per-hop table: one row per scenario and hop/element, warm and cold side by side,
    each with its median, mean and the median's difference from the baseline [95% CI]."""
    table = results.get("hop_table") or {}
    rows = table.get("rows") or []
    if not rows:
        return ""
    cells: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["scenario"], r["row"]), {})[r["group"]] = r
    base = table.get("baseline") or "baseline"
    out = [
        f"<h2>Per hop: transit and element time, and the difference from {_e(base)}</h2>",
        f"<p class=note>ms over successful calls; Δ: median minus {_e(base)}'s median for the "
        f"same hop, with its 95% interval ({_e(table.get('method', ''))}). "
        "<span class=noise>within noise</span>: the interval includes zero, so this run "
        "cannot tell the difference from none. Δ mean intervals are in results.json.</p>",
        '<div class="scroll"><table class="hops"><tr><th class=l rowspan=2>scenario</th>'
        "<th class=l rowspan=2>hop / element</th><th colspan=4>warm</th>"
        "<th colspan=4>cold</th></tr><tr>"
        + "<th>n</th><th>median</th><th>mean</th><th>Δ median [95% CI]</th>" * 2
        + "</tr>",
    ]
    for (name, row), by in cells.items():
        tds = []
        for group in ("warm", "cold"):
            r = by.get(group)
            if r is None:
                tds.append("<td>—</td>" * 4)
                continue
            dtxt = interval_html((r.get("diff") or {}).get("median"))
            tds.append(
                f"<td>{r['n']}</td><td>{_ms(r['median'])}</td><td>{_ms(r['mean'])}</td>"
                f"<td>{dtxt}</td>"
            )
        out.append(
            f"<tr><td class=l>{_e(name)}</td><td class=l>{_e(row)} "
            f"<span class=note>{_e(ROW_KIND.get(row, ''))}</span></td>{''.join(tds)}</tr>"
        )
    out.append("</table></div>")
    return "\n".join(out)


def _between_runs_html(results: Mapping[str, Any]) -> str:
    text = format_between_runs(results)
    if not text:
        return ""
    scenarios = results.get("scenarios") or {}
    n = max(len(r["between_runs"]["repeats"]) for r in scenarios.values() if r.get("between_runs"))
    out = [
        "<h2>Between runs</h2><p class=note>The whole set ran "
        f"{n} times on fresh chains; the warm SRD median of each run, and their spread. "
        "The per-hop intervals above pool the runs' calls; a spread wider than those "
        "intervals is drift between runs that they do not show.</p>",
        '<div class="scroll"><table><tr><th class=l>scenario</th>'
        + "".join(f"<th>run {i + 1}</th>" for i in range(n))
        + "<th>range</th><th>sd</th></tr>",
    ]
    for name, res in scenarios.items():
        b = res.get("between_runs")
        if not b:
            continue
        vals = "".join(f"<td>{_ms(v)}</td>" for v in b["srd_p50"])
        out.append(
            f"<tr><td class=l>{_e(name)}</td>{vals}<td>{_ms(b['p50_range_ms'])}</td>"
            f"<td>{_ms(b['p50_stdev_ms'])}</td></tr>"
        )
    out.append("</table></div>")
    return "\n".join(out)


def logevents_link(res: Mapping[str, Any], call_id: str) -> str:
    """` Its LogEvents` linking to the call's section of the scenario's logevents.html (by
    its SIP Call-ID, `ng911.testbed.logexport.call_anchor`); "" when the run logged none."""
    page = _get(res, "logevents", "html")
    if not page or not _get(res, "logevents", "count"):
        return ""
    return f' <a href="{_e(page)}#{_e(call_anchor(call_id))}">Its i3 LogEvents</a>.'


def logevents_section(scenarios: Mapping[str, Any]) -> str:
    """The i3 Logging Service's share of the report: per scenario, the LogEvents stored,
    how many verified, by type, and the page listing them by call."""
    rows = []
    for name, res in scenarios.items():
        lg = res.get("logevents")
        if not lg:
            continue
        kinds = ", ".join(
            f"{k.removesuffix('LogEvent')} {v}" for k, v in (lg.get("by_type") or {}).items()
        )
        link = f'<a href="{_e(lg["html"])}">by call</a>' if lg.get("html") else "—"
        sent = lg.get("senders") or {}
        lost = ", ".join(f"{k} {sent[k]}" for k in ("failed", "refused", "dropped") if sent.get(k))
        rows.append(
            f"<tr><td class=l>{_e(name)}</td><td>{_e(lg.get('logger', ''))}</td>"
            f"<td>{lg.get('count', 0)}</td><td>{lg.get('verified', 0)}</td>"
            f"<td>{lg.get('calls', 0)}</td><td class=l>{_e(kinds)}</td>"
            f"<td class=l>{_e(lost) or '—'}</td><td>{link}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<h2>i3 LogEvents (NENA-STA-010.3 §4.12 Logging Service)</h2>"
        "<p class=note>Every element but the caller signs a LogEvent (JWS, x5c) for each call "
        "event and SIP message and POSTs it to the run's logger; read back from its store "
        'and verified again after the run. "deferred": the elements sent them once the calls '
        'were over, so logging took no CPU from a measured call; "live": as they happened.'
        "</p><table><tr><th class=l>scenario</th><th>logger</th><th>LogEvents</th>"
        "<th>verified</th><th>calls</th><th class=l>by type</th><th class=l>not stored</th>"
        "<th>page</th></tr>" + "".join(rows) + "</table>"
    )


def render_html(results: Mapping[str, Any]) -> str:
    """The whole report as one HTML string (no scripts, no external resources)."""
    meta = results.get("meta", {})
    scenarios: Mapping[str, Any] = results.get("scenarios", {})
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>ng911 testbed report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>ng911 testbed: what TLS costs on each hop of an emergency call</h1>",
        f"<p class=note>Run {_e(meta.get('started', ''))} · topology "
        f"{_e(meta.get('topology', ''))} · {meta.get('calls', '?')} calls per scenario at "
        f"{_e(meta.get('rate', '?'))} calls/s"
        f"{' interleaved' if meta.get('interleaved') else ''} · "
        f"{_e(meta.get('platform', ''))} · Python {_e(meta.get('python', ''))}"
        + (f" · impaired: {_e('; '.join(meta['impairments']))}" if meta.get("impairments") else "")
        + _isolation_note(meta.get("isolation"))
        + "</p>",
    ]
    if meta.get("interrupted"):
        parts.append(
            "<p class=warn><b>Interrupted</b> (Ctrl-C): this report covers only the calls "
            "that ended before the run was stopped.</p>"
        )
    if meta.get("cold_design"):
        parts.append(f"<p class=note>Cold calls: {_e(meta['cold_design'])}.</p>")
    impl = implementations_line(scenarios)
    if impl is not None:
        parts.append(f"<p class=note>{_e(impl)}</p>")
    failed = sum(int(r.get("failed", 0)) for r in scenarios.values())
    parts.append(
        f"<p>Failed calls: <span class={'ok' if failed == 0 else 'bad'}>{failed}</span> "
        f"of {sum(int(r.get('calls', 0)) for r in scenarios.values())}.</p>"
    )
    # main tables (warm)
    parts.append("<h2>Call set-up delay (warm calls: connections and TLS sessions reused)</h2>")
    parts.append(
        '<div class="scroll"><table class="main"><tr><th class=l rowspan=2>scenario</th>'
        "<th rowspan=2>hop1</th>"
        "<th rowspan=2>hop2</th><th rowspan=2>hop3</th><th rowspan=2>hop4</th>"
        "<th rowspan=2>LoST</th><th rowspan=2>calls</th><th rowspan=2>failed</th>"
        "<th colspan=4>SRD: INVITE → 180 (ms)</th><th colspan=2>Δ mean vs plain (95% CI)</th>"
        "<th rowspan=2>LoST query ms</th></tr><tr>"
        "<th>mean</th><th>p50</th><th>p95</th><th>p99</th><th>ms</th><th>%</th></tr>"
    )
    for name, res in scenarios.items():
        chips = "".join(
            f"<td>{_chip(res['transports'].get(h, '?'), bool(res['encrypted'].get(h)))}</td>"
            for h in HOPS
        )
        lost_t = res.get("lost_transport", "?") + (" mutual" if res.get("lost_mutual") else "")
        lost_chip = _chip(lost_t, res.get("lost_transport") == "https")
        f = int(res.get("failed", 0))
        parts.append(
            f'<tr><td class=l><a href="#sc-{_e(name)}">{_e(name)}</a></td>{chips}'
            f"<td>{lost_chip}</td><td>{res.get('calls', 0)}</td>"
            f"<td class={'ok' if f == 0 else 'bad'}>{f}</td>"
            f"{_summary_cells(_get(res, 'warm', 'srd'))}"
            f"{_diff_cells(_get(res, 'diff', 'warm', 'srd'))}"
            f"<td>{_ms(_get(res, 'lost', 'mean'))}</td></tr>"
        )
    parts.append("</table></div>")
    parts.append(
        '<div class="scroll"><table><tr><th class=l rowspan=2>scenario</th>'
        "<th colspan=4>INVITE → 200 (ms)</th>"
        "<th colspan=2>Δ mean vs plain</th><th colspan=4>SDD: BYE → 200 (ms)</th>"
        "<th rowspan=2>SER %</th></tr><tr>"
        + "<th>mean</th><th>p50</th><th>p95</th><th>p99</th>"
        + "<th>ms</th><th>%</th>"
        + "<th>mean</th><th>p50</th><th>p95</th><th>p99</th></tr>"
    )
    for name, res in scenarios.items():
        parts.append(
            f"<tr><td class=l>{_e(name)}</td>"
            f"{_summary_cells(_get(res, 'warm', 'invite_to_200'))}"
            f"{_diff_cells(_get(res, 'diff', 'warm', 'invite_to_200'))}"
            f"{_summary_cells(_get(res, 'warm', 'sdd'))}"
            f"<td>{_ms(res.get('ser_pct'), 1)}</td></tr>"
        )
    parts.append("</table></div>")
    parts.append(_hop_table_html(results))
    parts.append(_between_runs_html(results))
    # cold vs warm
    parts.append("<h2>Cold (new connections, full TLS handshakes) vs warm</h2>")
    parts.append(
        '<div class="scroll"><table><tr><th class=l>scenario</th>'
        "<th>cold SRD mean</th><th>warm SRD mean</th>"
        "<th>cold − warm</th><th>cold INVITE→200 mean</th><th>warm INVITE→200 mean</th>"
        "<th>TLS handshakes full / resumed (all hops)</th><th>mean full handshake ms</th></tr>"
    )
    for name, res in scenarios.items():
        cs, ws = _get(res, "cold", "srd", "mean"), _get(res, "warm", "srd", "mean")
        ca, wa = (
            _get(res, "cold", "invite_to_200", "mean"),
            _get(res, "warm", "invite_to_200", "mean"),
        )
        hs = res.get("handshakes") or {}
        fulls = [v["full_mean_ms"] for v in hs.values() if v.get("full_mean_ms") is not None]
        parts.append(
            f"<tr><td class=l>{_e(name)}</td><td>{_ms(cs)}</td><td>{_ms(ws)}</td>"
            f"<td>{_delta(cs - ws) if cs is not None and ws is not None else '—'}</td>"
            f"<td>{_ms(ca)}</td><td>{_ms(wa)}</td><td>{_handshake_cell(res)}</td>"
            f"<td>{_ms(sum(fulls) / len(fulls)) if fulls else '—'}</td></tr>"
        )
    parts.append("</table></div>")
    # plots
    parts.append("<h2>Distribution of the SRD (warm calls)</h2>")
    parts.append(cdf_svg({n: r.get("srd_samples", []) for n, r in scenarios.items()}))
    parts.append("<h2>Where the SRD goes (mean of warm calls)</h2>")
    parts.append(
        "<p class=note>Hop segments: transit of the INVITE down and the 180 back up (send event "
        "to receive event, both sides' transports). Element segments: from receiving a message "
        "to sending what it caused. <code>lost</code>: the ESRP's LoST query; "
        "<code>handshake</code>: TLS handshakes an element waited for.</p>"
    )
    parts.append(
        stacked_bar_svg({n: _get(r, "breakdown", "warm") or {} for n, r in scenarios.items()})
    )
    cold = {n: _get(r, "breakdown", "cold") or {} for n, r in scenarios.items()}
    if any(cold.values()):
        parts.append("<h3>Cold calls: the same split, handshakes included</h3>")
        parts.append(stacked_bar_svg(cold))
    parts.append("<h2>Per scenario: hops, elements, one call's ladder</h2>")
    for res in scenarios.values():
        parts.append(_scenario_detail(res))
    parts.append(logevents_section(scenarios))
    parts.append("<h2>Method</h2><ul class=note>")
    for desc in METRICS.values():
        parts.append(f"<li>{_e(desc)}</li>")
    parts.append(
        f"<li>Percentiles: {_e(PERCENTILE_METHOD)}.</li>"
        "<li>All times come from the transports' own events (<code>time.perf_counter()</code> "
        "in one process; with --processes, CLOCK_MONOTONIC, one clock for every process of the "
        "machine): the caller's INVITE leaving its transport to the 180 arriving at it. "
        "The per-hop <code>hopN.jsonl</code> logs hold every event; every figure here can be "
        "recomputed from them.</li>"
        "<li>Wire bytes: for TLS the TLS records that carried the message (headers, AEAD tags); "
        "IP/TCP/UDP headers are not counted on any transport.</li>"
        "<li>Captures: <code>hopN.pcapng</code> are synthesised from the transports' events "
        "with well-known ports (5060, 5061 for TLS); each carries the run's TLS keys (a "
        "Decryption Secrets Block) and the element names (a Name Resolution Block), so "
        "<code>tshark -N n -r hop2.pcapng -Y sip</code> or Wireshark shows decrypted SIP "
        "between named elements with no option. With --netns, "
        "<code>captured-hopN.pcapng</code> are the real captures on the namespaces' bridge, "
        "with the same keys and names inside.</li></ul>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


_ISOLATION = {
    "processes": "each element its own OS process (loopback)",
    "netns": "each element its own process and network namespace (veth + bridge)",
}


def html_page(title: str, body: str) -> str:
    """A self-contained page in the report's style (no script, no external resource)."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>"
    )


def _isolation_note(isolation: Any) -> str:
    """How the chain ran (absent in results written before --processes existed)."""
    text = _ISOLATION.get(str(isolation)) if isolation else None
    return f" · {_e(text)}" if text else " · all elements in one process"


def write_report(results: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results), encoding="utf-8")
    return path
