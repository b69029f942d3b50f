"""``python -m splitstream ...`` entry point (see :mod:`splitstream.cli`)."""

import sys

from splitstream.cli import main

if __name__ == "__main__":
    sys.exit(main())
