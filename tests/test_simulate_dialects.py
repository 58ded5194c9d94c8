"""The simulator's exporter and log dialects: chosen from the seed, readable by the tools, same physics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kat.agent.session import Session
from kat.evals.simulate import generate_incident
from kat.evals.simulate.dialects import _CHOICES, CANONICAL, Dialect, choose_dialect, parse_dialect
from kat.tools.metric_series import load_series
from kat.tools.telemetry import open_bundle

TASK = "vllm-l70b-tp8-h100-decode-eager"
FAR = Dialect(
    gpu_exporter="nvidia_smi",
    gpu_labels="folded",
    host_key="instance",
    cpu_exporter="process",
    engine_style="buckets",
    kernel_style="dmesg",
    system_style="journald",
    process_start="systemd",
    python_style="logging",
    missing="numa",
)


def test_dialect_follows_the_seed_and_covers_every_choice() -> None:
    assert choose_dialect(12) == choose_dialect(12)
    seen = [choose_dialect(s) for s in range(300)]
    for field, options in _CHOICES.items():
        assert {getattr(d, field) for d in seen} == set(options), field
    assert {d.process_start for d in seen} == {"cron", "systemd", "kubelet"}
    assert parse_dialect("canonical", 5) is None and parse_dialect("auto", 5) == choose_dialect(5)
    with pytest.raises(ValueError, match="valid: canonical, auto"):
        parse_dialect("klingon", 5)
    assert CANONICAL.name.startswith("dcgm/columns/host/node/quantile")


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dialects")
    for name, d in (("canon", None), ("far", FAR)):
        generate_incident("gpu_power_or_clock_cap", TASK, 21, root / name, size="tiny", severity="severe", dialect=d)
    return root / "canon", root / "far"


def test_far_dialect_names_labels_and_missing_exporter(capped: tuple[Path, Path]) -> None:
    _, far = capped
    m = pd.read_parquet(far / "metrics.parquet")
    assert list(m.columns) == ["ts", "name", "value"]  # every label folded into the name
    bare = {n.split("{")[0] for n in m["name"]}
    assert "nvidia_smi_enforced_power_limit_watts" in bare and "nvidia_smi_clocks_throttle_reasons_sw_power_cap" in bare
    assert not any(n.startswith(("DCGM_", "node_memory_numa_", "node_cpu_seconds")) for n in bare)
    assert {"namedprocess_namegroup_cpu_seconds_total", "vllm:time_per_output_token_seconds_bucket"} <= bare
    assert all('instance="' in n for n in m["name"])
    manifest = json.loads((far / "incident.json").read_text())
    assert all(g.get("uuid", "").startswith("GPU-") for h in manifest["topology"]["hosts"] for g in h["gpus"])
    logs = [json.loads(x) for x in (far / "logs.jsonl").read_text().splitlines()]
    kernel = [x["message"] for x in logs if x["source"] == "kernel"]
    assert kernel and all(k.startswith("[") and "] " in k for k in kernel)
    # journald: the syslog identifier is the source and the message has no 'ident[pid]: ' prefix
    assert not any(x["source"] == "system" for x in logs)
    assert {x["source"] for x in logs} & {"systemd", "sshd", "kubelet", "dcgm-exporter"}
    engine = [x["message"] for x in logs if x["source"] == "vllm" and " - vllm.engine - " in x["message"]]
    assert engine  # Python logging format


def test_same_physics_through_the_tools_in_both_dialects(capped: tuple[Path, Path]) -> None:
    gt = json.loads((capped[0] / "ground_truth.json").read_text())
    culprit = gt["affected_ranks"][0]
    for path in capped:
        series = load_series(open_bundle(path), families={"power_limit"})
        by_rank = {s.rank: s for s in series}
        assert set(by_rank) == set(range(8)), path.name  # placed on ranks (uuid / columns)
        s = by_rank[culprit]
        w0, w1 = gt["window"]["start_ns"], gt["window"]["end_ns"]
        inside = s.values[(s.ts > w0) & (s.ts < w1)]
        assert inside.size and float(np.min(inside)) < 0.9 * float(np.median(s.values)), path.name
        others = [by_rank[r].values for r in by_rank if r != culprit]
        assert all(float(np.ptp(v)) == 0.0 for v in others)


def test_rules_diagnose_the_far_dialect(capped: tuple[Path, Path]) -> None:
    _, far = capped
    gt = json.loads((far / "ground_truth.json").read_text())
    s = Session(far, "rules")
    d = s.diagnose("dialect")
    s.close()
    assert d.root_cause.category == gt["category"] == "gpu_power_or_clock_cap"
    assert sorted(d.root_cause.ranks) == gt["affected_ranks"]
