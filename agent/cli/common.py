"""What every command module shares: the consoles and the one-line error exit."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one-line errors, never wrapped at 80 columns


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error (no traceback) and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code)
