"""``python -m tracefield`` is the ``tracefield`` command."""

import sys

from tracefield.cli import main

sys.exit(main())
