"""log_search scoped to ranks joins host-level lines (empty rank) to the ranks whose GPU they name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kat.agent.demo import DEMO_INCIDENT
from kat.tools.context import IncidentContext
from kat.tools.registry import make_tools


def _bundle(tmp_path: Path, lines: list[dict]) -> Path:
    """The demo bundle plus host-level kernel lines (no rank)."""
    root = tmp_path / "incident"
    shutil.copytree(DEMO_INCIDENT, root)
    manifest = json.loads((root / "incident.json").read_text())
    host = manifest["topology"]["hosts"][0]["name"]
    with (root / "logs.jsonl").open("a") as f:
        for ln in lines:
            f.write(json.dumps({"ts": "2026-11-21T03:38:50.000000Z", "host": host, "source": "kernel", "level": "error", **ln}) + "\n")
    return root


def _gpu_bus(root: Path, rank: int) -> str:
    m = json.loads((root / "incident.json").read_text())
    w = next(w for w in m["topology"]["workers"] if w["rank"] == rank)
    h = next(h for h in m["topology"]["hosts"] if h["name"] == w["host"])
    return next(g["pci_bus_id"] for g in h["gpus"] if g["index"] == w["gpu"])


@pytest.mark.parametrize("how", ["pci", "gpu_index"])
def test_xid_line_without_rank_is_found_for_the_rank_whose_gpu_it_names(tmp_path: Path, how: str) -> None:
    root = _bundle(tmp_path, [])
    bus = _gpu_bus(root, 2)  # e.g. '0000:3a:00.0'; NVRM writes 'PCI:0000:3a:00'
    text = f"NVRM: Xid (PCI:{bus[:-2]}): 48, pid=77, DBE" if how == "pci" else "GPU 2: Xid 48 double bit ECC error"
    root = _bundle(tmp_path / "b", [{"rank": None, "message": text}])
    log_search = make_tools(IncidentContext(root, kb_mode="lexical"))["log_search"]

    hit = log_search.run({"pattern": "Xid", "ranks": [2]})
    assert hit.status == "ok" and hit.query["ranks"] == [2]
    (group,) = hit.data["groups"]
    assert group["example"] == text and group["ranks"] == []
    why = group["joined"]["2"]
    assert ("PCI bus" in why) if how == "pci" else ("GPU 2" in why)
    assert "joined to ranks [2]" in hit.summary

    miss = log_search.run({"pattern": "Xid", "ranks": [0]})
    assert miss.status == "no_data" and miss.query["ranks"] == [0]
    # Unscoped, the line is there, not marked joined.
    (plain,) = log_search.run({"pattern": "Xid"}).data["groups"]
    assert "joined" not in plain


def test_ranked_lines_still_filter_by_rank(tmp_path: Path) -> None:
    root = _bundle(tmp_path, [{"rank": 3, "message": "GPU 2 looks fine from rank three"}])
    log_search = make_tools(IncidentContext(root, kb_mode="lexical"))["log_search"]
    # A line that has its own rank is never re-assigned by its text.
    assert log_search.run({"pattern": "looks fine", "ranks": [2]}).status == "no_data"
    assert log_search.run({"pattern": "looks fine", "rank": 3}).status == "ok"
