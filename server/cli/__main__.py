"""``python -m shelfrank.server.cli`` is the ``shelfrank`` command too."""

import sys

from shelfrank.server.cli import main

sys.exit(main())
