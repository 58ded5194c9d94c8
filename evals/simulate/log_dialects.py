"""Render the simulator's log lines in a `Dialect` (evals/simulate/dialects.py).

Styles, from their documented formats: util-linux dmesg (`[ seconds.micros]` since boot before
the kernel message), systemd-journald JSON export (SYSLOG_IDENTIFIER as the source, MESSAGE
without the `ident[pid]: ` prefix), Kubernetes events (`TYPE REASON OBJECT MESSAGE`), CPython
`logging` (`asctime - name - LEVEL - message`, asctime with a comma before milliseconds) and
`warnings` (`filename:lineno: Category: message`), vLLM's multiprocess worker prefix
(`(VllmWorker rank=N pid=P)`), CPython gc debug statistics (`gc.set_debug(gc.DEBUG_STATS)`).
"""

from __future__ import annotations

import hashlib
import re

import pandas as pd

from kat.evals.simulate.dialects import Dialect
from kat.evals.simulate.ground_truth import rfc3339
from kat.evals.simulate.topology import Layout

_VLLM = re.compile(r"^(DEBUG|INFO|WARNING|ERROR) \d\d-\d\d \d\d:\d\d:\d\d \[([\w.]+):(\d+)\] (.*)$", re.S)
_SGLANG = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (.*)$", re.S)
_IDENT = re.compile(r"^([\w.@-]+)\[(\d+)\]: (.*)$", re.S)
_LOGGER = {"vllm": "vllm.engine", "sglang": "sglang.srt.managers.scheduler"}


def _ns(ts: str) -> int:
    return int(pd.Timestamp(ts).value)


def _boot_ns(seed: int, host: str, start_ns: int) -> int:
    """When a host booted: 2 to 60 days before the incident (dmesg times count from here)."""
    days = 2 + int(hashlib.sha256(f"{seed}|{host}|boot".encode()).hexdigest(), 16) % 58
    return start_ns - days * 86_400 * 1_000_000_000 - 7_345_123_456


def _python(line: dict, d: Dialect, engine: str, pid_of: dict[int, int]) -> str:
    msg = str(line["message"])
    level = str(line["level"]).upper()
    where = "llm_engine.py:0"
    m = _VLLM.match(msg)
    if m:
        level, where, msg = m.group(1), f"{m.group(2)}:{m.group(3)}", m.group(4)
    else:
        m2 = _SGLANG.match(msg)
        if m2:
            msg = m2.group(1)
    if msg.startswith("INFO:     "):  # uvicorn access lines keep their own format
        return msg
    t = rfc3339(_ns(line["ts"]))
    rank = line.get("rank")
    prefix = f"(VllmWorker rank={rank} pid={pid_of.get(int(rank), 0)}) " if engine == "vllm" and rank not in ("", None) else ""
    if d.python_style == "warnings" and level == "WARNING":
        f, ln = where.split(":")
        return f"{prefix}/opt/venv/lib/python3.11/site-packages/{engine}/{f}:{ln}: UserWarning: {msg}"
    return f"{prefix}{t[:10]} {t[11:19]},{t[20:23]} - {_LOGGER[engine]} - {level} - {msg}"


def restyle_logs(lines: list[dict], d: Dialect, lay: Layout, seed: int, start_ns: int) -> list[dict]:
    """The same lines in dialect `d` (timestamps, hosts and ranks unchanged)."""
    engine = lay.task.engine
    pid_of = {w.rank: w.pid for w in lay.workers}
    boot = {h: _boot_ns(seed, h, start_ns) for h in lay.hosts}
    out = []
    for line in lines:
        line = dict(line)
        src = str(line["source"])
        if src == "kernel" and d.kernel_style == "dmesg":
            up = (_ns(line["ts"]) - boot.get(line["host"], start_ns)) / 1e9
            line["message"] = f"[{up:12.6f}] {line['message']}"
        elif src == "system" and d.system_style == "journald":
            m = _IDENT.match(str(line["message"]))
            if m:
                line["source"], line["message"] = m.group(1), m.group(3)
        elif src == engine and d.python_style != "engine":
            line["message"] = _python(line, d, engine, pid_of)
        out.append(line)
    return out


def process_start_lines(d: Dialect, job: str, host: str, seed: int) -> list[tuple[str, str, str]]:
    """(source, level, message) lines announcing a co-tenant batch job on `host`."""
    pid = 10_000 + int(hashlib.sha256(f"{seed}|{host}|pid".encode()).hexdigest(), 16) % 50_000
    cmd = {
        "rsync": "rsync -a --delete /data/ckpt/ archive:/ckpt/",
        "ffmpeg": "ffmpeg -threads 16 -i /data/in.mp4 /data/out.webm",
        "spark-executor": "/opt/spark/bin/spark-class org.apache.spark.executor.Executor",
        "xz": "xz -T16 -9 /data/dumps/table.sql",
        "clickhouse-backup": "clickhouse-backup create_remote daily-full",
        "tar": "tar -I 'zstd -T16' -cf /backup/home.tar.zst /home",
        "restic": "restic backup --read-concurrency 16 /srv/models",
    }[job]
    if d.process_start == "kubelet":
        pod = f"{job}-{seed % 99991:05x}"
        return [
            ("k8s-events", "info", f"Normal Scheduled pod/{pod} Successfully assigned batch/{pod} to {host}"),
            ("k8s-events", "info", f"Normal Pulled pod/{pod} Container image already present on machine"),
            ("k8s-events", "info", f"Normal Started pod/{pod} Started container {job}"),
        ]
    if d.process_start == "systemd":
        ident, text = "systemd", f"Started {job}-batch.service - {job} batch run."
    else:
        ident, text = "CRON", f"(root) CMD ({cmd} >/dev/null 2>&1)"
    pid_part = "1" if ident == "systemd" else str(pid)
    if d.system_style == "journald":
        return [(ident, "info", text)]
    return [("system", "info", f"{ident}[{pid_part}]: {text}")]


def gc_debug_lines(pause_ms: float, collected: int, prefix: str = "") -> list[str]:
    """CPython's gc.DEBUG_STATS output for one full collection that took `pause_ms`."""
    return [
        f"{prefix}gc: collecting generation 2...",
        f"{prefix}gc: objects in each generation: {collected // 90} {collected // 400} {collected}",
        f"{prefix}gc: done, {collected // 7} unreachable, 0 uncollectable, {pause_ms / 1000:.4f}s elapsed",
    ]
