"""A bundle whose logs file is a systemd journal export (`journalctl --output=json`) is read as
logs: journald's fields mapped, bad records named by line, host kernel lines joined to ranks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from kat.agent.demo import DEMO_INCIDENT
from kat.tools.context import IncidentContext
from kat.tools.registry import make_tools
from kat.tools.telemetry.tables import load_logs_checked, parse_timestamps

T0_US = 1_763_696_330_000_000  # 2025-11-21T03:38:50Z in microseconds, journald's unit


def _record(msg: object, offset_us: int = 0, **fields: object) -> dict[str, object]:
    rec: dict[str, object] = {"__REALTIME_TIMESTAMP": str(T0_US + offset_us), "MESSAGE": msg, "_HOSTNAME": "node-a", "PRIORITY": "6"}
    rec.update(fields)
    return rec


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_journal_fields_are_mapped(tmp_path: Path) -> None:
    recs = [
        _record("NVRM: Xid (PCI:0000:3a:00): 79, GPU has fallen off the bus", 0, PRIORITY="3", _TRANSPORT="kernel"),
        _record("Started nightly reindex job", 1_000, SYSLOG_IDENTIFIER="systemd", PRIORITY="6"),
        _record("worker pool resized", 2_000, _SYSTEMD_UNIT="vllm.service", PRIORITY="4"),
        _record(list(b"caf\xe9 bytes"), 3_000),  # journald's form of a message that is not UTF-8
    ]
    df, q = load_logs_checked(_write(tmp_path / "logs.jsonl", recs))
    assert q.status == "ok" and q.kept == 4
    assert df["ts_ns"].tolist() == [(T0_US + k) * 1000 for k in (0, 1_000, 2_000, 3_000)]
    assert df["source"].astype(str).tolist() == ["kernel", "systemd", "vllm", "system"]
    assert df["level"].astype(str).tolist() == ["error", "info", "warning", "info"]
    assert set(df["host"].astype(str)) == {"node-a"}
    assert df["message"].iloc[3].startswith("caf") and "bytes" in df["message"].iloc[3]
    assert (df["rank"] == -1).all()


def test_a_record_without_time_is_dropped_and_named(tmp_path: Path) -> None:
    recs = [_record("fine"), {"__REALTIME_TIMESTAMP": "soon", "MESSAGE": "no time"}, _record("also fine", 5)]
    df, q = load_logs_checked(_write(tmp_path / "logs.jsonl", recs))
    assert df["message"].tolist() == ["fine", "also fine"]
    assert q.status == "degraded" and q.dropped == 1
    assert any("line 2" in e and "timestamp" in e for e in q.examples), q.examples


def test_kat_columns_win_over_journal_fields(tmp_path: Path) -> None:
    """A KAT log file that happens to carry journald fields as extras is not re-mapped."""
    rec = {"ts": "2026-11-21T03:38:50Z", "message": "ours", "__REALTIME_TIMESTAMP": "1", "MESSAGE": "theirs"}
    df, _ = load_logs_checked(_write(tmp_path / "logs.jsonl", [rec]))
    assert df["message"].tolist() == ["ours"]


def test_journal_export_bundle_joins_xid_lines_to_the_rank(tmp_path: Path) -> None:
    """The demo bundle with its logs replaced by a journal export of the same host kernel line."""
    root = tmp_path / "incident"
    shutil.copytree(DEMO_INCIDENT, root)
    m = json.loads((root / "incident.json").read_text())
    w = next(w for w in m["topology"]["workers"] if w["rank"] == 2)
    h = next(h for h in m["topology"]["hosts"] if h["name"] == w["host"])
    bus = next(g["pci_bus_id"] for g in h["gpus"] if g["index"] == w["gpu"])
    first = json.loads((root / "logs.jsonl").read_text().splitlines()[0])["ts"]
    t_us = int(parse_timestamps(pd.Series([first]))[0][0]) // 1000
    text = f"NVRM: Xid (PCI:{bus[:-2]}): 48, pid=77, DBE"
    rec = {"__REALTIME_TIMESTAMP": str(t_us), "MESSAGE": text, "_HOSTNAME": w["host"], "PRIORITY": "3", "_TRANSPORT": "kernel"}
    _write(root / "logs.jsonl", [rec])
    log_search = make_tools(IncidentContext(root, kb_mode="lexical"))["log_search"]
    hit = log_search.run({"pattern": "Xid", "ranks": [2]})
    assert hit.status == "ok", hit.summary
    (group,) = hit.data["groups"]
    assert group["example"] == text and "2" in group["joined"]
    assert log_search.run({"pattern": "Xid", "ranks": [0]}).status == "no_data"
