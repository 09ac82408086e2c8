"""``python -m grokphase.cli``: the same as the ``grokphase`` console script."""

import sys

from grokphase.cli import main

sys.exit(main())
