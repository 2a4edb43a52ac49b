"""``python -m shelfrank.server`` is the ``shelfrank`` command."""

import sys

from shelfrank.server.cli import main

sys.exit(main())
