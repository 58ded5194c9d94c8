"""Sessions that share one checkpointer.

A server runs many sessions at once: every Session is given one shared, thread-safe SqliteSaver
on the front ends' database file (same file as the job store), which the sessions never close.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kat.agent.frontends.store import connect
from kat.agent.graph import AgentConfig
from kat.agent.session import Session


class SharedCheckpointer:
    """One SqliteSaver for the whole process (it serialises access with its own lock)."""

    def __init__(self, db: Path | str):
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.saver = SqliteSaver(connect(db))
        self.saver.setup()

    def open(self, path: Path, analyzer: str, config: AgentConfig, **backend_options: Any) -> Session:
        return Session(path, analyzer, config=config, checkpointer=self.saver, **backend_options)

    def close(self) -> None:
        self.saver.conn.close()
