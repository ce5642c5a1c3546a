"""The layers of docs/architecture.md, held against the imports of the code.

Read from the source with `ast` (nothing is imported): every `import ng911.x...` and
`from ng911.x... import name` of every module under src/ng911, at any depth (function-level
imports count), except those under `if TYPE_CHECKING:` (annotations only, never run).
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "ng911"

# package → the ng911 packages it must never import (each layer imports only downwards)
FORBIDDEN: dict[str, set[str]] = {
    "sip": {
        "net",
        "elements",
        "node",
        "observe",
        "testbed",
        "lost",
        "pki",
        "interop",
        "i3log",
        "console",
    },
    "location": {
        *(
            "sip",
            "net",
            "elements",
            "node",
            "observe",
            "testbed",
            "lost",
            "interop",
            "i3log",
            "console",
        ),
    },
    "pki": {"net", "elements", "node", "observe", "testbed", "lost", "interop", "i3log", "console"},
    "net": {"elements", "node", "observe", "testbed", "lost", "interop", "i3log", "console"},
    "lost": {"elements", "node", "observe", "testbed", "interop", "i3log", "console"},
    # the i3 Logging Service: beside lost/ (both serve HTTP on net/http1)
    "i3log": {"elements", "node", "observe", "testbed", "interop", "console"},
    "elements": {"node", "observe", "testbed", "interop", "i3log", "console"},
    "node": {"testbed", "interop", "console"},
    "observe": {"node", "testbed", "interop", "console"},
    "interop": {"testbed", "console"},
    # the live console sits beside testbed/ (it starts a chain); testbed never imports it
    "testbed": {"console"},
}
# modules of a lower layer that one layer must not reach either
FORBIDDEN_MODULES: dict[str, set[str]] = {
    "elements": {"ng911.lost.server", "ng911.lost.commands"},
    "sip": {"asyncio"},
    "location": {"asyncio", "socket"},
}


def _imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names) for each import, skipping `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    out: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.extend((a.name, ()) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, tuple(a.name for a in node.names)))
    return out


def _modules() -> list[tuple[str, Path]]:
    return [
        (str(p.relative_to(SRC.parent).with_suffix("")).replace("/", "."), p)
        for p in sorted(SRC.rglob("*.py"))
    ]


def test_no_layer_imports_one_above_it():
    bad = []
    for name, path in _modules():
        parts = name.split(".")
        if len(parts) < 3:
            continue
        pkg = parts[1]
        for mod, _names in _imports(path):
            top = mod.split(".")
            if top[0] == "ng911" and len(top) > 1 and top[1] in FORBIDDEN.get(pkg, ()):
                bad.append(f"{name} imports {mod}")
            if any(mod == m or mod.startswith(m + ".") for m in FORBIDDEN_MODULES.get(pkg, ())):
                bad.append(f"{name} imports {mod}")
    assert bad == []


def test_no_module_imports_another_packages_private_names():
    bad = []
    for name, path in _modules():
        pkg = name.split(".")[:2]
        for mod, names in _imports(path):
            if not mod.startswith("ng911.") or mod.split(".")[:2] == pkg:
                continue
            private = [n for n in names if n.startswith("_")]
            if private or any(part.startswith("_") for part in mod.split(".")):
                bad.append(f"{name}: from {mod} import {', '.join(private) or '(module)'}")
    assert bad == []


def test_elements_hold_no_process_machinery():
    """`elements/` is the elements and their policy: no subprocesses, signals or workers."""
    bad = []
    for name, path in _modules():
        if not name.startswith("ng911.elements."):
            continue
        for mod, _names in _imports(path):
            if mod.split(".")[0] in {"subprocess", "signal", "multiprocessing"}:
                bad.append(f"{name} imports {mod}")
    assert bad == []
