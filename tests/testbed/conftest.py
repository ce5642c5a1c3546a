"""tests/testbed reuses the synthetic call chain of tests/observe."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "observe"))
