"""Registers every evals sub-command. Each command lives in its own module."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
