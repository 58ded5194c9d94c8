"""`kat demo`: the main job end to end on the bundled demo data (agent/demo.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd() -> None:
        """Run the main job on bundled data with the offline defaults."""
        from kat.agent.cli.common import console
        from kat.agent.demo import run_demo

        raise typer.Exit(run_demo(console))
