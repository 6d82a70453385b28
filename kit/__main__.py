"""`python -m kit` runs the CLI (used by scheduled jobs when `kit` is not on PATH)."""

import sys

from kit.cli import main

sys.exit(main())
