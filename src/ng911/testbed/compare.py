"""`ng911 testbed compare RUN_A RUN_B ...`: two or more runs side by side.

Every later run is set against the first (the reference): for each scenario they share and
each row of the per-hop table (hop transit, element time, LoST, handshakes, SRD), warm and
cold, both medians and the difference (run − reference) with 95% bootstrap intervals of the
median and the mean, flagged "within noise" when the interval includes zero. Computed from
the runs' per-call records (`results.json` "call_records"), so a RUN is a `results.json` or
the run directory holding it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ng911.testbed.errors import TestbedError
from ng911.testbed.hoptable import ROW_KIND, compare
from ng911.testbed.report import (
    escape,
    html_page,
    interval_html,
    interval_text,
    load_results,
    ms_text,
)


def results_path(run: Path) -> Path:
    """A run directory or its results.json."""
    return run / "results.json" if run.is_dir() else run


def load_runs(runs: Sequence[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Each run's results and a label for it (its directory name, made unique)."""
    if len(runs) < 2:
        raise TestbedError("compare needs at least two runs")
    loaded: list[dict[str, Any]] = []
    labels: list[str] = []
    for run in runs:
        path = results_path(run)
        try:
            data = load_results(path)
        except (OSError, ValueError) as exc:
            raise TestbedError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("scenarios"), dict):
            raise TestbedError(f"{path}: not a testbed results.json (no scenarios)")
        if not any(r.get("call_records") for r in data["scenarios"].values()):
            raise TestbedError(
                f"{path}: no per-call records (written before results schema 1.0); "
                "re-run it to compare"
            )
        loaded.append(data)
        label = path.parent.name or str(path)
        while label in labels:
            label += "'"
        labels.append(label)
    return loaded, labels


def compare_runs(runs: Sequence[Path]) -> dict[str, Any]:
    loaded, labels = load_runs(runs)
    return compare(loaded, labels)


def format_compare(cmp: Mapping[str, Any], group: str = "warm") -> str:
    """The terminal table: one line per run, scenario and row."""
    ref = cmp["reference"]
    header = (
        f"{'run':<16} {'scenario':<13} {'hop / element':<10} {'median ref':>10} "
        f"{'median run':>10}  Δmedian [95% CI]"
    )
    lines = [
        f"Compared with {ref} ({group} calls, ms; {cmp.get('method', 'bootstrap')})",
        header,
        "-" * (len(header) + 20),
    ]
    for r in cmp["rows"]:
        if r["group"] != group:
            continue
        d = (r.get("diff") or {}).get("median")
        lines.append(
            f"{r['run']:<16} {r['scenario']:<13} {r['row']:<10} {ms_text(r['median'][0]):>10} "
            f"{ms_text(r['median'][1]):>10}  {interval_text(d)}"
        )
    return "\n".join(lines)


def render_compare_html(cmp: Mapping[str, Any]) -> str:
    ref = cmp["reference"]
    parts = [
        f"<h1>ng911 testbed: {escape(' vs '.join(cmp['runs']))}</h1>",
        f"<p class=note>Each run against <b>{escape(ref)}</b>: median (ms) of each, the "
        f"difference with its 95% interval ({escape(cmp.get('method', ''))}). "
        "<span class=noise>within noise</span>: the interval includes zero.</p>",
    ]
    for group in ("warm", "cold"):
        rows = [r for r in cmp["rows"] if r["group"] == group]
        if not rows:
            continue
        parts.append(f"<h2>{group} calls</h2>")
        parts.append(
            '<div class="scroll"><table><tr><th class=l>run</th><th class=l>scenario</th>'
            "<th class=l>hop / element</th><th>n</th><th>median ref</th><th>median run</th>"
            "<th>Δ median [95% CI]</th><th>Δ mean [95% CI]</th></tr>"
        )
        for r in rows:
            diff = r.get("diff") or {}
            cells = [f"<td>{interval_html(diff.get(k))}</td>" for k in ("median", "mean")]
            parts.append(
                f"<tr><td class=l>{escape(r['run'])}</td><td class=l>{escape(r['scenario'])}"
                f"</td><td class=l>{escape(r['row'])} <span class=note>"
                f"{escape(ROW_KIND.get(r['row'], ''))}</span></td>"
                f"<td>{r['n'][0]} / {r['n'][1]}</td><td>{ms_text(r['median'][0])}</td>"
                f"<td>{ms_text(r['median'][1])}</td>{''.join(cells)}</tr>"
            )
        parts.append("</table></div>")
    return html_page("ng911 testbed comparison", "\n".join(parts))
