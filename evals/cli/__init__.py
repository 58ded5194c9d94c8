"""Commands contributed by evals/, plugged into `kat` through the `kat.commands` entry point
(agent/ may not import evals/). One line per command group in `COMMANDS`, as in agent/cli.

Each group is registered on its own: one that fails to import (an optional extra missing) must
not take the others, or the core commands, down with it.
"""

from __future__ import annotations

import importlib
import sys

import typer

COMMANDS = (
    "kat.evals.cli.simulate",  # simulate
    "kat.evals.cli.realtrace",  # realtrace
    "kat.evals.cli.eval",  # eval
    "kat.evals.cli.finetune",  # finetune base | data | train | export | serve | compare
)


def register(app: typer.Typer) -> None:
    for module in COMMANDS:
        try:
            importlib.import_module(module).register(app)
        except ImportError as exc:
            print(f"kat: commands from {module} unavailable ({exc})", file=sys.stderr)
