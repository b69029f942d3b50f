"""``python -m pipeline ...``: the old spelling of the ``splitstream`` command; it says so and hands
over to ``python -m splitstream`` with the same arguments.

The command line wires Ray actors, which sit above ``pipeline`` in the layering, so this package does
not import it: it replaces this process with ``python -m splitstream``.
"""

import os
import sys

if __name__ == "__main__":
    print("note: the command is `splitstream` (or `python -m splitstream`); `python -m pipeline` "
          "is its old name", file=sys.stderr)
    os.execv(sys.executable, [sys.executable, "-m", "splitstream", *sys.argv[1:]])
