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
    """Run the CLI; an unexpected error is one line on stderr (KAT_DEBUG=1 shows the traceback)."""
    import os
    import sys

    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    except Exception as exc:  # the last guard: no traceback reaches a user
        if os.environ.get("KAT_DEBUG"):
            raise
        from kat.agent.errors import one_line

        sys.stderr.write(f"error: {one_line(exc)}\n")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
