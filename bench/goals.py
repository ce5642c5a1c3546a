"""Issue 16's goals table: each speed goal beside what the benches measured, in one place.

`bench/load.py`, `bench/lost.py`, `bench/chain.py` and `bench/parse.py --ab` (pure and
compiled builds alternating) each put a `goals` list in their JSON (rows built with
`goal_row`, each ratio taken from ONE run of its bench, ng911 and its peer measured side by
side: these machines are too noisy for figures from different runs to be compared). This
script gathers them into the table the README shows:

    .venv/bin/python bench/goals.py            # print the table from bench/results/*.json
    .venv/bin/python bench/goals.py --readme   # and rewrite the README's copy of it

The README's table sits between `<!-- goals:begin -->` and `<!-- goals:end -->`; nothing
else of the README is touched. Under it, a line per bench says when it ran, which build, and
its `yardstick_ns` (`rig.yardstick_ns`: how fast the machine ran the interpreter then), by
which a row without a peer (an absolute goal) is read across days.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BENCHES = ("load", "lost", "chain", "parse-ab")
BEGIN, END = "<!-- goals:begin -->", "<!-- goals:end -->"


def goal_row(
    what: str,
    value: float | None,
    unit: str,
    goal: float,
    *,
    peer: str | None = None,
    peer_value: float | None = None,
    lower_is_better: bool = False,
    note: str | None = None,
) -> dict[str, Any]:
    """One goal. With a peer, the goal is on the ratio ng911 / peer (measured in the same
    run); without one, on the value itself. `lower_is_better` for costs (CPU per call);
    `note` is shown beside the ratio (e.g. the same ratio taken by CPU per request)."""
    ratio = None
    if peer_value and value is not None:
        ratio = value / peer_value
    judged = ratio if peer is not None else value
    met = None
    if judged is not None:
        met = judged <= goal if lower_is_better else judged >= goal
    return {
        "what": what,
        "ng911": value,
        "unit": unit,
        "peer": peer,
        "peer_value": peer_value,
        "ratio": ratio,
        "goal": goal,
        "goal_on": "ratio" if peer is not None else "value",
        "lower_is_better": lower_is_better,
        "met": met,
        "note": note,
    }


def _num(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}".rstrip("0").rstrip(".")


def _goal_text(row: Mapping[str, Any]) -> str:
    sign = "≤" if row["lower_is_better"] else "≥"
    if row["goal_on"] == "ratio":
        return f"{sign} {row['goal']:g}" + ("×" if row["lower_is_better"] else "")
    return f"{sign} {_num(row['goal'])} {row['unit']}"


def table(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The rows as a Markdown table (what | ng911 | peer, same run | ratio | goal | met)."""
    out = [
        "| what | ng911 | peer, same run | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        peer = f"{r['peer']} {_num(r['peer_value'])}" if r.get("peer") else "–"
        ratio = "–"
        if r.get("ratio") is not None:
            ratio = f"{r['ratio']:.2f}" + ("×" if r["lower_is_better"] else "")
        if r.get("note"):
            ratio = f"{ratio} ({r['note']})" if ratio != "–" else r["note"]
        met = {True: "yes", False: "**no**", None: "not measured"}[r.get("met")]
        value = f"{_num(r['ng911'])} {r['unit']}" if r.get("ng911") is not None else "–"
        out.append(f"| {r['what']} | {value} | {peer} | {ratio} | {_goal_text(r)} | {met} |")
    return out


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    """What each bench prints at its end: its own goal rows."""
    if rows:
        print("\n".join(["", "goals (issue 16):", *table(rows)]))


def gather(results: Path = RESULTS) -> tuple[list[dict[str, Any]], list[str]]:
    """Every bench's goal rows, and a line per bench saying which run they come from."""
    rows: list[dict[str, Any]] = []
    sources: list[str] = []
    for name in BENCHES:
        path = results / f"{name}.json"
        if not path.exists():
            sources.append(f"`bench/{name.split('-')[0]}.py`: no results yet")
            continue
        data = json.loads(path.read_text())
        got = data.get("goals") or []
        rows.extend(got)
        build = f", {data['build']} build" if data.get("build") else ""
        speed = data.get("yardstick_ns")
        pace = f", yardstick {speed:.0f} ns" if isinstance(speed, (int, float)) else ""
        script = f"bench/{name.split('-')[0]}.py" + (" --ab" if name.endswith("-ab") else "")
        sources.append(f"`{script}`: {data.get('date', '?')}{build}{pace}, {len(got)} goals")
    return rows, sources


def rewrite_readme(lines: Sequence[str], readme: Path = README) -> bool:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"goals: {readme} has no {BEGIN} … {END} block", file=sys.stderr)
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--readme", action="store_true", help="rewrite the README's goals table")
    ap.add_argument("--results", type=Path, default=RESULTS, help="bench/results directory")
    args = ap.parse_args(argv)
    rows, sources = gather(args.results)
    lines = [*table(rows), "", *(f"- {s}" for s in sources)]
    print("\n".join(lines))
    if args.readme and not rewrite_readme(lines):
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
