"""``python -m flowlib.experiments.posterior2d run --out DIR --runs DIR``: see :mod:`.cli`."""

import sys

from .cli import main

sys.exit(main())
