"""Registers every evals sub-command. Each command lives in its own module.

Each is registered on its own: one plugin that fails to import must not take the others (or
the core `kat` commands) down with it.
"""

from __future__ import annotations

import importlib
import sys

import typer

_COMMANDS = ("kat.evals.simulate.cli", "kat.evals.realtrace.cli", "kat.evals.eval_cli")


def register(app: typer.Typer) -> None:
    for module in _COMMANDS:
        try:
            importlib.import_module(module).register(app)
        except ImportError as exc:
            print(f"kat: commands from {module} unavailable ({exc})", file=sys.stderr)
