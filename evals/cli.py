"""Sub-commands contributed by evals/ (plugged into `kat` through an entry point)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from kat.evals import commands

    commands.register(app)
