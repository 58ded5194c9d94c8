"""`python -m kat.agent.cli`: the same as the `kat` command."""

from kat.agent.cli import main

main()
