"""`kat serve` and `kat slack` (registered through the kat.commands entry point)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Front-end commands; added as they land."""
