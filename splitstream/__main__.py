"""``python -m splitstream ...``: the ``splitstream`` command for this interpreter (see
:mod:`splitstream.cli`)."""

import sys

from splitstream.cli import main

if __name__ == "__main__":
    sys.exit(main())
