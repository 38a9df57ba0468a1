"""``python -m flowlib <subcommand> ...`` (train, evaluate, run, table, status, figure3, fits2d,
posterior2d): see :mod:`flowlib.cli`."""

import sys

from .cli import main

sys.exit(main())
