"""The two builds of the sans-I/O core (ng911.compiled): which one runs, and that a stale or
unwanted compiled build is set aside for the pure one, all modules together.

Each case runs a fresh interpreter (the choice is made once, when `ng911` is imported).
The compiled cases need `make compile` to have run (as `make test` does); on a pure tree
they are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ng911 import compiled

SRC = Path(compiled.__file__).resolve().parents[1]
IS_COMPILED = all(compiled.extension_paths(m) for m in (*compiled.MODULES, compiled.GROUP))
needs_compiled = pytest.mark.skipif(not IS_COMPILED, reason="no compiled build (make compile)")

PROBE = (
    "import ng911.compiled as c, ng911.sip.parse as p, ng911.sip.message as m, "
    "ng911.sip.samples as s\n"
    "msg = p.parse_message(s.emergency_invite()); msg.validate()\n"
    "assert isinstance(msg, m.Request)\n"
    "print(c.build(), m.__file__.rsplit('.', 1)[-1])"
)


def run(src: Path, *, pure: bool = False, code: str = PROBE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    env["PYTHONPATH"] = str(src)
    if pure:
        env[compiled.PURE_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_pure_when_asked() -> None:
    out = run(SRC, pure=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["pure", "py"]
    assert out.stderr == ""  # asked for: no notice


def test_version_names_the_build() -> None:
    out = run(SRC, pure=True, code="import sys; from ng911.cli import main; main(['--version'])")
    assert "pure-Python build (NG911_PURE is set)" in out.stdout


@needs_compiled
def test_compiled_build_runs_when_present() -> None:
    out = run(SRC)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["compiled", "so"]


@needs_compiled
def test_a_stale_build_runs_pure_all_together(tmp_path: Path) -> None:
    """A `.py` edited after `make compile`: its extension is old code, so the whole group
    runs pure (a compiled `parse` beside a pure `message` would make two Request classes),
    and stderr says why."""
    pkg = tmp_path / "ng911"
    pkg.mkdir()
    for name in ("__init__.py", "compiled.py", "errors.py"):
        shutil.copy2(SRC / "ng911" / name, pkg / name)
    shutil.copytree(SRC / "ng911" / "sip", pkg / "sip")
    for lib in compiled.extension_paths(compiled.GROUP):
        shutil.copy2(lib, pkg)
    assert run(tmp_path).stdout.split() == ["compiled", "so"]

    later = time.time() + 10
    os.utime(pkg / "sip" / "uri.py", (later, later))
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["pure", "py"]
    assert "older than their source (ng911.sip.uri)" in out.stderr
