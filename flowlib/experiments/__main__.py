"""``python -m flowlib.experiments run|table|status EXPERIMENT_DIR ...``: see :mod:`.tables`."""

import sys

from .tables import main

sys.exit(main())
