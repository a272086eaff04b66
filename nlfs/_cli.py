"""What every command-line tool shares: a configuration error is one line and exit status 2."""

from __future__ import annotations

import sys


def run_main(prog: str, main, argv=None) -> int:
    """``main(argv)``, with the errors a user can fix (a bad setting, a missing file, a damaged run)
    printed as ``prog: error: ...`` instead of a traceback."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
