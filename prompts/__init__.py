"""Prompt files of the Analyzer (plain text/markdown, loaded by name)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_DIR = Path(__file__).resolve().parent


@cache
def load(name: str) -> str:
    """Text of prompts/<name>.md."""
    return (_DIR / f"{name}.md").read_text(encoding="utf-8")


def render(name: str, **values: str) -> str:
    """A prompt template with {placeholders} filled (str.format semantics)."""
    return load(name).format(**values)
