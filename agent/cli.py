"""`kat` command line: one entry point, sub-commands registered from the packages that own them.

The core commands (import, detect) need only the core install; commands that need the LLM
stack or the vector store import it when they run, not when the CLI starts.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from kat.agent.cli_core import register as register_core

app = typer.Typer(
    name="kat",
    help="KAT: find the worker that slows a distributed-inference group, and why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
register_core(app)


def _register_plugins() -> None:
    # evals may import everything, but nothing may import evals: it plugs in by entry point.
    for ep in entry_points(group="kat.commands"):
        try:
            ep.load()(app)
        except ModuleNotFoundError as exc:  # an optional extra that is not installed
            if exc.name and exc.name.split(".")[0] in {"evals", "knowledge", "agent", "tools"}:
                raise


_register_plugins()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
