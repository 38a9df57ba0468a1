"""``python -m flowlib {train,evaluate} ...``: see :mod:`flowlib.cli`."""

import sys

from .cli import main

sys.exit(main())
