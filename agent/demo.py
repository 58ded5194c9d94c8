"""`make demo`: the main job end to end on data shipped in the repository."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TRACES = REPO / "tests" / "data" / "real-traces" / "hta_sampled_pair"


def run_demo(console: Console) -> int:
    from agent.cli_core import bundle_summary

    console.rule("KAT demo: import real Kineto traces (2 ranks of a 128-rank NCCL job)")
    summary = bundle_summary(SAMPLE_TRACES)
    for rank, s in summary["ranks"].items():
        console.print(f"rank {rank}: {s['events']:,} events, steps {s['steps']}, {s['collectives']} collective kernels, "
                      f"kinds {s['kinds']}")
    return 0
