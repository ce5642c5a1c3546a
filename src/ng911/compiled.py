"""Which build is running: the mypyc-compiled sans-I/O core, or pure Python.

`scripts/compile.py` (`make compile`) compiles the modules in `MODULES` with mypyc into
extension modules beside their sources (`message.cpython-311-x86_64-linux-gnu.so` next to
`message.py`, and the group's shared library `sip__mypyc…so`); Python's importer prefers an
extension module over a `.py` in the same directory, so nothing else changes. `make pure`
removes them. The `.py` files stay the source of truth and the pure build always works.

The compiled modules form one group (one shared library, `GROUP`): they call each
other natively, so they are used all together or not at all (a pure `message` beside a
compiled `parse` would make two `Request` classes). `choose()`, run when `ng911` is first
imported, keeps the whole group pure when

- `NG911_PURE` is set (not empty, not `0`): the pure build from a compiled tree, as CI's
  second run and the benchmarks' A/B use it; child processes inherit it;
- any `.py` of the group is newer than its extension module (edited since `make compile`):
  the stale extension would silently run old code, so the pure build runs instead, with
  one line on stderr saying so.

`build()` says which build this process runs (`compiled`, `pure`), for `ng911 --version`
and the benchmarks' JSON.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

# The sans-I/O core that mypyc compiles: what every message and transaction passes through
# (see docs/architecture.md, "Compiled build"). One list, read by scripts/compile.py too.
MODULES: tuple[str, ...] = (
    "ng911.sip.errors",
    "ng911.sip.uri",
    "ng911.sip.headers",
    "ng911.sip.message",
    "ng911.sip.parse",
    "ng911.sip.body",
    "ng911.sip.transaction",
    "ng911.sip.dialog",
    "ng911.sip.digest",
    "ng911.sip.priority",
    "ng911.sip.subscription",
)
# the group's shared library (mypyc's `group_name` + `__mypyc`), inside the package so that
# any way of installing it finds it
GROUP = "ng911.sip__mypyc"
PURE_ENV = "NG911_PURE"
_SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_pure_reason: str | None = None


def source_path(name: str) -> str:
    """The `.py` file of module `name` (one of `MODULES`)."""
    return os.path.join(_SRC, *name.split(".")) + ".py"


def extension_paths(name: str) -> list[str]:
    """The extension module files of `name` present on disk (any ABI suffix)."""
    base = os.path.join(_SRC, *name.split("."))
    return [base + s for s in importlib.machinery.EXTENSION_SUFFIXES if os.path.exists(base + s)]


def stale_modules() -> list[str]:
    """Modules whose extension is missing or older than their `.py` (empty when none is
    compiled at all: then there is nothing stale, just a pure tree)."""
    out: list[str] = []
    any_built = False
    for name in (*MODULES, GROUP):
        exts = extension_paths(name)
        if not exts:
            out.append(name)
            continue
        any_built = True
        if name == GROUP:
            continue
        if os.path.getmtime(source_path(name)) > min(os.path.getmtime(e) for e in exts):
            out.append(name)
    return out if any_built else []


class _PureFinder:
    """Finds the `.py` of the group's modules, ahead of the extension modules beside them (a
    meta path finder; not derived from `importlib.abc.MetaPathFinder`, whose import costs
    every `ng911` process 25 ms)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        import importlib.util  # here: `import ng911` stays cheap

        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def choose() -> None:
    """Use the pure build when asked (`NG911_PURE`) or when the compiled one is stale."""
    global _pure_reason
    if any(m in sys.modules for m in MODULES) or _pure_reason is not None:
        return  # too late to choose, or chosen already
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        _pure_reason = f"{PURE_ENV} is set"
    else:
        stale = stale_modules()
        if not stale:
            return
        _pure_reason = "the compiled modules are older than their source"
        print(
            f"ng911: {_pure_reason} ({', '.join(stale)}): running pure Python "
            "(`make compile` rebuilds them, `make pure` removes them)",
            file=sys.stderr,
        )
    sys.meta_path.insert(0, _PureFinder())


def build() -> str:
    """`compiled` when the group runs as mypyc extension modules, else `pure`."""
    import importlib.util

    spec = importlib.util.find_spec(MODULES[0])
    origin = spec.origin if spec is not None else None
    compiled = origin is not None and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    return "compiled" if compiled else "pure"


def describe() -> str:
    """`compiled build`, `pure-Python build`, with why when a compiled one was set aside."""
    if build() == "compiled":
        return "compiled build (mypyc)"
    return "pure-Python build" + (f" ({_pure_reason})" if _pure_reason else "")


__all__ = [
    "GROUP",
    "MODULES",
    "PURE_ENV",
    "build",
    "choose",
    "describe",
    "extension_paths",
    "source_path",
    "stale_modules",
]
