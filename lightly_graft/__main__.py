"""``python -m lightly_graft`` works like the ``lightly-graft`` entry point."""

import sys

from lightly_graft.cli import main

sys.exit(main())
