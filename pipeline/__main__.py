"""``python -m pipeline ...``: the same command line as ``python -m splitstream ...``.

The command line wires Ray actors, which sit above ``pipeline`` in the layering, so this package does
not import it: it hands the process over to ``python -m splitstream`` with the same arguments.
"""

import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "splitstream", *sys.argv[1:]])
