"""``python -m nlfs.transfer``: see ``nlfs.transfer``."""

import sys

from ._main import main

sys.exit(main())
