"""mypyc's class decorators for the compiled element runtime (`ng911.compiled`), and
stand-ins that do nothing when mypy_extensions is not installed (the pure build needs no
compiler's packages)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr, trait
else:
    try:
        from mypy_extensions import mypyc_attr, trait
    except ImportError:  # pragma: no cover - mypy is a test/compile extra

        def trait(cls):
            return cls

        def mypyc_attr(*_args, **_kw):
            return lambda cls: cls


__all__ = ["mypyc_attr", "trait"]
