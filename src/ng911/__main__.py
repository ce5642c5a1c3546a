"""`python -m ng911 ...`: the `ng911` command, for a venv whose scripts are not on PATH."""

import sys

from ng911.cli import main

sys.exit(main())
