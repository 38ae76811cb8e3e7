"""Entry point for ``python -m popsim``."""

import sys

from popsim.cli import main

sys.exit(main())
