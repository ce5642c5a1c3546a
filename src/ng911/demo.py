"""`ng911 demo`: what `make demo` runs.

For now it parses and prints a sample emergency INVITE; the testbed issue turns it into
the full run of every scenario.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the main demo on the embedded defaults")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("ng911 demo: the SIP core is being built; nothing to show yet.")
    return 0
