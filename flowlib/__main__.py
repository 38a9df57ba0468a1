"""``python -m flowlib {train,evaluate,figure3} ...``: see :mod:`flowlib.cli`."""

import sys

from .cli import main

sys.exit(main())
