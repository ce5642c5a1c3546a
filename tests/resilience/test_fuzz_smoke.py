"""A small seeded fuzzing run against running elements (`bench/fuzz.py`, issue 11).

5,000 mutated SIP datagrams, TCP and TLS streams and LoST HTTP requests against the VSP,
the ESRP with its LoST server and psapd, each an `ng911 run` process: afterwards no element
logged a traceback, none died, and every one still answers (OPTIONS; a LoST findService).
The full run (1,000,000 inputs) is `make fuzz`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "bench" / "fuzz.py"


def test_fuzz_smoke(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [sys.executable, str(FUZZ), "--count", "5000", "--seed", "7", "--silent",
         "--out", str(out), "--settle", "60"],
        capture_output=True, text=True, timeout=280, env=env, cwd=REPO,
    )  # fmt: skip
    assert out.exists(), f"no result: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(out.read_text())
    assert r["inputs"] == 5000
    assert r["crashed"] == [], r["exit_codes"]
    assert r["silent_after"] == [], r["answered_after"]
    assert r["tracebacks"] == 0, "\n".join(
        [json.dumps(r["traceback_kinds"], indent=1), *r["traceback_samples"]]
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_fuzz_is_reproducible() -> None:
    """The same seed and index give the same input (so a failure can be replayed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
    )
    runs = [
        subprocess.run(
            [sys.executable, str(FUZZ), "--seed", "7", "--dump", str(i)],
            capture_output=True,
            timeout=60,
            env=env,
            check=True,
        ).stdout
        for i in (123, 123, 124)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
