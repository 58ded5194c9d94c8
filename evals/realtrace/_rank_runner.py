"""`python -m kat.evals.realtrace._rank_runner CONFIG TRACE_DIR REPORT`: the launcher's child entry.

A module of its own (not `launcher`, which the package imports) so runpy does not execute an
already-imported module a second time.
"""

from __future__ import annotations

import sys

from kat.evals.realtrace.launcher import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
