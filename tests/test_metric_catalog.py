"""metric_catalog / metric_compare on a hand-made bundle mixing exporter dialects.

Synthetic data written here (no shared files): DCGM names with labels folded into the name,
nvidia_gpu_exporter names labelled by uuid only (placed through incident.json topology),
process-exporter CPU counters by group name, an unknown exporter's metric.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from kat.tools import metric_catalog, metric_compare
from kat.tools.context import IncidentContext
from tests.kineto_factory import step_trace, write_trace

T0 = 1_700_000_000_000_000_000
UUIDS = ["GPU-aaaa-0", "GPU-bbbb-1", "GPU-cccc-2"]


def _bundle(root: Path) -> Path:
    (root / "traces").mkdir(parents=True)
    for r in range(3):
        write_trace(step_trace(rank=r, world=3, kernel_us=50.0), root / "traces" / f"rank-{r}.json.gz")
    gpus = [{"index": i, "model": "L40S", "uuid": UUIDS[i], "pci_bus_id": f"00000000:{0x18 + i:02X}:00.0"} for i in range(3)]
    manifest = {
        "id": "inc-cat",
        "symptom": "slow",
        "topology": {
            "hosts": [{"name": "node-x", "gpus": gpus}],
            "workers": [{"rank": r, "host": "node-x", "gpu": r, "pid": 100 + r} for r in range(3)],
            "groups": {"tp": [[0, 1, 2]], "pp": [], "dp": []},
        },
    }
    (root / "incident.json").write_bytes(orjson.dumps(manifest))
    rows = ["ts,name,value,host,gpu,rank,uuid,groupname,mode"]
    cpu = {"vllm-worker-0": 1000.0, "vllm-worker-1": 1000.0, "nightly-batch": 5.0}  # cumulative CPU seconds
    for i in range(80):
        ts = T0 + i * 250_000_000
        hot = 40 <= i < 56
        for g in range(3):
            temp = 62 + g + (20 if g == 1 and hot else 0)
            rows.append(f'{ts},"DCGM_FI_DEV_GPU_TEMP{{gpu=""{g}"",UUID=""{UUIDS[g]}"",Hostname=""node-x""}}",{temp},node-x,,,,,')
            limit = 300 if g == 2 and hot else 350
            rows.append(f"{ts},nvidia_smi_enforced_power_limit_watts,{limit},node-x,,,{UUIDS[g]},,")
            reasons = 0x40 if g == 1 and hot else 0x1
            rows.append(f"{ts},DCGM_FI_DEV_CLOCK_THROTTLE_REASONS,{reasons},node-x,{g},{g},,,")
        for grp, rate in (("vllm-worker-0", 0.9), ("vllm-worker-1", 0.9), ("nightly-batch", 1.5 if hot else 0.0)):
            cpu[grp] += rate * 0.25
            rows.append(f"{ts},namedprocess_namegroup_cpu_seconds_total,{cpu[grp]:.3f},node-x,,,,{grp},user")
        rows.append(f"{ts},acme_widget_frobs,{i % 3},node-x,,,,,")
    (root / "metrics.csv").write_text("\n".join(rows) + "\n")
    return root


def test_catalog_classifies_dialects_and_places_series(tmp_path: Path) -> None:
    ctx = IncidentContext(_bundle(tmp_path / "b"))
    res = metric_catalog.run(ctx, metric_catalog.MetricCatalogArgs())
    assert res.status == "ok"
    fams = res.data["families"]
    assert fams["gpu_temperature"]["metrics"][0]["name"] == "DCGM_FI_DEV_GPU_TEMP"  # folded labels split off
    assert fams["gpu_temperature"]["ranks"] == [0, 1, 2]
    assert fams["power_limit"]["ranks"] == [0, 1, 2]  # uuid-only series placed through the topology
    assert fams["cpu_usage"]["metrics"][0]["counter_as_rate"] is True
    assert {"vllm-worker-1", "nightly-batch"} <= set(fams["cpu_usage"]["metrics"][0]["labels"]["groupname"])
    assert "acme_widget_frobs" in [m["name"] for m in fams["unclassified"]["metrics"]]
    assert "nic_retransmits" in res.data["absent_families"]
    bad = metric_catalog.run(ctx, metric_catalog.MetricCatalogArgs(family="nope"))
    assert bad.status == "error" and "nope" in bad.message


def test_compare_finds_the_changed_series_against_its_peers(tmp_path: Path) -> None:
    ctx = IncidentContext(_bundle(tmp_path / "b"))
    temp = metric_compare.run(ctx, metric_compare.MetricCompareArgs(family="gpu_temperature"))
    top = temp.data["series"][0]
    assert top["rank"] == 1 and top["z"] > 4 and top["peer_z"] > 3
    limit = metric_compare.run(ctx, metric_compare.MetricCompareArgs(family="power_limit"))
    assert limit.data["series"][0]["rank"] == 2 and limit.data["series"][0]["rel_change"] < -0.1
    thr = metric_compare.run(ctx, metric_compare.MetricCompareArgs(family="throttle_reasons"))
    r1 = next(r for r in thr.data["series"] if r["rank"] == 1)
    assert "hw_thermal_slowdown" in r1["reasons_inside"] and "hw_thermal_slowdown" not in r1["reasons_outside"]
    cpu = metric_compare.run(ctx, metric_compare.MetricCompareArgs(family="cpu_usage"))
    assert "nightly-batch" in cpu.data["series"][0]["series"] and cpu.data["series"][0]["z"] > 4
    none = metric_compare.run(ctx, metric_compare.MetricCompareArgs(family="nic_retransmits"))
    assert none.status == "no_data"
