"""Registers every evals sub-command. Each command lives in its own module."""
from __future__ import annotations

import typer

from evals.eval_cli import register as register_eval
from evals.realtrace.cli import register as register_realtrace
from evals.simulate.cli import register as register_simulate


def register(app: typer.Typer) -> None:
    register_realtrace(app)
    register_simulate(app)
    register_eval(app)
