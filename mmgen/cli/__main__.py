"""``python -m mmgen.cli``: the ``mmgen`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
