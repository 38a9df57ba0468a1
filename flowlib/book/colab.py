"""The first code cell of every chapter: on Colab (or wherever flowlib is missing) it clones the
book's repository, which holds flowlib and the committed results, installs flowlib from it, and
points flowlib at the clone; where flowlib is installed it does nothing. ``tests/test_notebooks.py``
checks that every chapter starts with exactly this cell."""

REPOSITORY = "https://github.com/flows-in-vaes/flows-in-vaes"

CELL = f'''\
# Colab (or any Python without flowlib): clone the book's repository and install flowlib from it.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("flowlib") is None:
    subprocess.run(["git", "clone", "--depth", "1",
                    "{REPOSITORY}", "flows-in-vaes"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "./flows-in-vaes[data,notebooks]"], check=True)
    os.environ["FLOWLIB_REPO"] = os.path.abspath("flows-in-vaes")  # where the results are
    importlib.invalidate_caches()'''
