"""`bench/goals.py`: the README's goals table is rebuilt from the benches' JSON, and only it."""

from __future__ import annotations

import json
from pathlib import Path

from bench_scripts import load_bench


def test_ratio_goals_judge_the_ratio_and_costs_judge_downwards() -> None:
    g = load_bench("goals")
    rate = g.goal_row("proxy UDP", 750, "cps", 0.6, peer="Kamailio", peer_value=2250)
    assert rate["met"] is False and abs(rate["ratio"] - 1 / 3) < 1e-9
    cpu = g.goal_row("CPU", 600, "µs", 1.3, peer="Kamailio", peer_value=500, lower_is_better=True)
    assert cpu["met"] is True
    absolute = g.goal_row("chain", 520, "cps", 500)
    assert absolute["met"] is True and absolute["ratio"] is None
    missing = g.goal_row("chain --processes", None, "cps", 1000)
    assert missing["met"] is None
    lines = g.table([rate, cpu, absolute, missing])
    assert lines[2].startswith("| proxy UDP | 750 cps | Kamailio 2,250 | 0.33 | ≥ 0.6 | **no** |")
    assert "| ≤ 1.3× | yes |" in lines[3]
    assert lines[5].endswith("| not measured |")


def test_readme_block_is_rewritten_and_nothing_else(tmp_path: Path) -> None:
    g = load_bench("goals")
    results = tmp_path / "results"
    results.mkdir()
    row = g.goal_row("LoST point", 5000, "req/s", 0.8, peer="HTTP floor", peer_value=6000)
    (results / "lost.json").write_text(json.dumps({"date": "D", "goals": [row]}))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{g.BEGIN}\nold\n{g.END}\nafter\n")
    rows, sources = g.gather(results)
    assert len(rows) == 1 and "`bench/load.py`: no results yet" in sources
    assert g.rewrite_readme(g.table(rows), readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\nafter\n") and "old" not in text
    assert "| LoST point | 5,000 req/s | HTTP floor 6,000 | 0.83 | ≥ 0.8 | yes |" in text
    readme.write_text("no block\n")
    assert not g.rewrite_readme(["x"], readme)


def test_each_source_line_says_how_fast_the_machine_was(tmp_path: Path) -> None:
    """An absolute goal (the chain's cps) is read beside the machine's yardstick of its run;
    a result written before the yardstick existed still gives its line, without one."""
    g = load_bench("goals")
    rig = load_bench("rig")
    results = tmp_path / "results"
    row = g.goal_row("chain", 300, "cps", 500)
    rig.write_result("chain", {"goals": [row]}, results / "chain.json")
    (results / "lost.json").write_text(json.dumps({"date": "D", "goals": []}))
    written = json.loads((results / "chain.json").read_text())
    assert 0 < written["yardstick_ns"] < 10_000
    _, sources = g.gather(results)
    chain = next(s for s in sources if s.startswith("`bench/chain.py`"))
    assert f", yardstick {written['yardstick_ns']:.0f} ns, 1 goals" in chain
    assert "`bench/lost.py`: D, 0 goals" in sources
