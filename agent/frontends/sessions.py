"""Sessions that share one checkpointer.

`agent.session.Session` opens its own SQLite connection per instance; a server runs many
sessions at once, so here every Session is built in memory and then rebound to one shared,
thread-safe SqliteSaver on the front ends' database file (same file as the job store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kat.agent.frontends.store import connect
from kat.agent.graph import AgentConfig, build_graph
from kat.agent.session import Session


class SharedCheckpointer:
    """One SqliteSaver for the whole process (it serialises access with its own lock)."""

    def __init__(self, db: Path | str):
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.saver = SqliteSaver(connect(db))
        self.saver.setup()

    def open(self, path: Path, analyzer: str, config: AgentConfig, **backend_options: Any) -> Session:
        s = Session(path, analyzer, config=config, db=None, **backend_options)
        s.checkpointer = self.saver
        s.graph = build_graph(s.analyzer, s.tools, s.config, checkpointer=self.saver, quality=s.ctx.bundle.quality)
        return s

    def close(self) -> None:
        self.saver.conn.close()
