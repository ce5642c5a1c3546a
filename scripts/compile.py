#!/usr/bin/env python3
"""Compile the hot paths with mypyc, in place: `make compile` (and `make pure` to undo).

The modules are `ng911.compiled.GROUPS` (the SIP core, the LoST point path, the elements'
and the transports' hot paths); one mypyc run builds them, each module an extension module
beside its `.py` in src/ and each group its own shared library (e.g.
`src/ng911/sip__mypyc*.so`) that calls the groups it links to natively
(`ng911.compiled.LINKS`, checked against the generated C). Python's importer prefers an
extension module over the `.py`. The C sources
and objects go to build/mypyc/. Needs mypy (mypyc ships in it: the `test` extra), setuptools
and a C compiler with Python's headers.

When compiling fails the tree is left pure (no half-built group: a group's compiled modules
call each other, and the groups they link to, natively, so they run all together or not at
all), and this says so: exit
1, or 0 with `--optional` (the pure build works either way).

    python scripts/compile.py [--optional]      # compile (about 85 s on 2 cores from scratch)
    python scripts/compile.py --clean           # back to pure Python
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
BUILD = REPO / "build" / "mypyc"
sys.path.insert(0, str(SRC))
os.environ["NG911_PURE"] = "1"  # this process never runs the core; no stale-build notice

from ng911 import compiled  # noqa: E402 - after the path is set

CHECK = (
    "import ng911.compiled as c, ng911.sip.parse as p, ng911.sip.samples as s; "
    "import ng911.lost.fast_request as f, ng911.lost.protocol as lp; "
    "import ng911.elements.vsp, ng911.elements.esrp; "
    "m = p.parse_message(s.emergency_invite()); m.validate(); "
    "assert f.parse_fast(lp.build_request(lp.FindServiceRequest((lp.LostLocation("
    "'l', 'geodetic-2d', f.Point(40.7, -73.9)),)))) is not None; print(c.build())"
)


def built_files() -> list[Path]:
    """Every extension module under src/ng911 (any ABI suffix, not only this one's): the
    groups' modules and libraries, and those of a module since taken out of a group, which
    would otherwise shadow its `.py` for good (the project has no other extension modules)."""
    pkg = SRC / "ng911"
    return sorted(
        f
        for pattern in ("*.so", "*.pyd")
        for f in pkg.rglob(pattern)
        if "__pycache__" not in f.parts
    )


def strays() -> list[Path]:
    """Extension modules of modules no group holds (taken out of one since): Python's
    importer would keep preferring them to the `.py`, old code run with no notice."""
    wanted = {
        Path(compiled.source_path(n)).with_suffix("") for n in (*compiled.MODULES, *compiled.GROUPS)
    }
    return [f for f in built_files() if f.parent / f.name.split(".", 1)[0] not in wanted]


def clean() -> None:
    for f in built_files():
        f.unlink()
    shutil.rmtree(BUILD, ignore_errors=True)


def build(jobs: int) -> None:
    """mypycify + setuptools build_ext --inplace, run from src/ so that module paths map
    to their packages."""
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]

    os.environ.setdefault("MYPY_CACHE_DIR", str(BUILD / "mypy-cache"))  # not src/.mypy_cache
    here = Path.cwd()
    os.chdir(SRC)
    try:
        # one mypyc run over every group, each its own library (`separate`): a group
        # calls another's classes and functions natively (mypyc's export tables), where
        # separate runs left every call across groups (the elements reading a Request's
        # fields, the transport calling an element) to Python's generic attribute lookup
        # and call, ~400 per proxied call (callgrind: 14 % of the proxy's instructions)
        groups = [
            ([os.path.relpath(compiled.source_path(m), SRC) for m in modules],
             group.removesuffix("__mypyc"))
            for group, modules in compiled.GROUPS.items()
        ]  # fmt: skip
        ext_modules = mypycify(
            [path for paths, _ in groups for path in paths],
            opt_level="3",
            separate=groups,
            target_dir=str(BUILD / "c"),
        )
        setup(
            name="ng911-compiled",
            ext_modules=ext_modules,
            script_args=[
                "-q", "build_ext", "--inplace", "-j", str(jobs),
                "--build-temp", str(BUILD / "tmp"), "--build-lib", str(BUILD / "lib"),
            ],
        )  # fmt: skip
    finally:
        os.chdir(here)


def build_fresh_if_needed(jobs: int) -> None:
    """`build`, and once more from scratch when an incremental build fails: mypyc 1.x's
    incremental mode with linked groups (`separate=`) can fail on its own cache after an
    edit to a group others link to (ValueError in `emit_undefined_attr_check`), where a
    build from an empty cache succeeds."""
    try:
        build(jobs)
    except (Exception, SystemExit) as e:
        if not (BUILD / "mypy-cache").exists():
            raise
        print(
            f"compile: the incremental build failed ({type(e).__name__}: {e}); "
            "building from scratch",
            file=sys.stderr,
            flush=True,
        )
        shutil.rmtree(BUILD, ignore_errors=True)
        build(jobs)


def check_links() -> None:
    """What each group's generated C imports natively must be what `ng911.compiled.LINKS`
    says: the pure fallback sets a group aside with the groups it links to, from that table."""
    import re

    for group in compiled.GROUPS:
        c_file = (
            BUILD / "c" / "ng911" / f"__native_{group.split('.')[-1].removesuffix('__mypyc')}.c"
        )
        text = c_file.read_text(encoding="utf-8", errors="replace")
        found = set(re.findall(r'PyImport_ImportModuleLevel\("(ng911\.\w+__mypyc)"', text))
        found.discard(group)
        said = set(compiled.LINKS.get(group, ()))
        if found != said:
            raise RuntimeError(
                f"{group} links to {sorted(found)}, ng911.compiled.LINKS says "
                f"{sorted(said)}: update LINKS"
            )


def check() -> str:
    """Import the compiled build in a fresh interpreter and parse a message with it."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop(compiled.PURE_ENV, None)
    out = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "check failed")
    return out.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules")
    ap.add_argument("--optional", action="store_true", help="exit 0 when compiling fails")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if args.clean:
        n = len(built_files())
        clean()
        print(f"compile: removed {n} compiled files: the pure-Python build runs")
        return 0
    t0 = time.monotonic()
    groups = ", ".join(compiled.GROUPS)
    print(f"compile: mypyc {len(compiled.MODULES)} modules ({groups}) ...", flush=True)
    try:
        for f in strays():
            print(f"compile: removing {f.relative_to(REPO)} (its module is in no group)")
            f.unlink()
        build_fresh_if_needed(args.jobs)
        check_links()
        for f in built_files():  # setuptools keeps the old time of a shim it did not rebuild:
            os.utime(f)  # all are newer than the sources now (ng911.compiled.stale_modules)
        got = check()
        if got != "compiled":
            raise RuntimeError(f"the build imports as {got!r}")
    except (Exception, SystemExit) as e:  # setuptools raises SystemExit on compiler errors
        clean()
        print(
            f"compile: FAILED ({type(e).__name__}: {e}); compiled modules removed, "
            "the pure-Python build stays in use",
            file=sys.stderr,
        )
        return 0 if args.optional else 1
    took = time.monotonic() - t0
    print(f"compile: done in {took:.0f} s: {len(built_files())} files, {got} build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
