"""`kat` command line: one entry point; each command group is a small module with `register(app)`.

To add a command: write a module with `def register(app: typer.Typer) -> None` that declares it
(heavy imports inside the command, not at module top) and add its dotted name to `COMMANDS`.
Commands of evals/ (which agent/ may not import) plug in through the `kat.commands` entry-point
group: evals/cli/__init__.py lists them the same way.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

import typer

# One line per command group, in the order `kat --help` lists them.
COMMANDS = (
    "kat.tools.outpost.cli",  # detect
    "kat.agent.cli.kb",  # kb build | search | eval
    "kat.agent.cli.diagnose",  # diagnose, chat
    "kat.agent.cli.traces",  # import
    "kat.agent.cli.demo",  # demo
    "kat.agent.report.cli",  # report
    "kat.agent.cli.serve",  # serve, slack
    "kat.agent.cli.capture",  # capture
    "kat.agent.cli.mcp",  # mcp
)

app = typer.Typer(
    name="kat",
    help="KAT: find the worker that slows a distributed-inference group, and why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_plugins(app: typer.Typer) -> None:
    """Command groups from packages the CLI may not import (evals), found by entry point."""
    seen: set[str] = set()
    for ep in entry_points(group="kat.commands"):
        if ep.value in seen:
            continue
        seen.add(ep.value)
        try:
            register = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name == ep.module:  # stale install metadata names a module that no longer exists
                continue
            print(f"kat: commands from {ep.value} unavailable ({exc})", file=sys.stderr)
            continue
        register(app)


for _module in COMMANDS:
    importlib.import_module(_module).register(app)
_register_plugins(app)


def main() -> None:
    from kat.knowledge.settings import SettingsError, settings

    try:  # a wrong KAT_* value: one line naming it, before any command runs
        settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    except Exception as exc:  # the last guard: no traceback reaches a user (KAT_DEBUG=1 shows it)
        if settings().debug:
            raise
        from kat.agent.errors import one_line

        sys.stderr.write(f"error: {one_line(exc)}\n")
        raise SystemExit(1) from None
