"""``python -m mmgen.cli``: the ``mmgen`` command."""

import sys

from . import main

sys.exit(main())
