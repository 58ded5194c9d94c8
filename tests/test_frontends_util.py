"""Shared helpers for the front-end tests: a real uvicorn server on loopback, an incidents root."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from kat.agent.demo import DEMO_INCIDENT

DEMO = DEMO_INCIDENT
DEMO_ID = "demo-gpu_thermal_throttling"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def incidents_root(tmp: Path) -> Path:
    root = tmp / "incidents"
    (root / "team-a").mkdir(parents=True)
    shutil.copytree(DEMO, root / "team-a" / "demo-incident")
    return root


class LoopbackServer:
    """An ASGI app served by uvicorn in a thread on 127.0.0.1 (started and stopped by the test)."""

    def __init__(self, app: Any):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
