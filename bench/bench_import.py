"""Import throughput and peak memory: KAT's Kineto importer vs HTA's TraceAnalysis on the same traces."""

from __future__ import annotations

import gzip
import os
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from bench.measure import Measurement, measure_cmd, median_of, median_runs

REPO = Path(__file__).resolve().parent.parent
REAL = REPO / "tests" / "data" / "real-traces"
WORK = Path(os.environ.get("KAT_BENCH_DIR", Path(tempfile.gettempdir()) / "kat-bench"))
REAL_CASES = {
    "vllm_tp8_b200_rank_eager": "vllm_tp8_b200_rank_eager.json.gz",
    "hta_ddp_a100_rank0_nccl_args": "hta_ddp_a100_rank0_nccl_args.json.gz",
    "hta_v100_rank1_2020_allreduce": "hta_v100_rank1_2020_allreduce.json.gz",
    "hta_sampled_pair": "hta_sampled_pair",
}


def kat_setup() -> None:
    # Library imports are not what we time (HTA's runner imports its own before timing too).
    # Each tool loads what its import path needs: KAT's writes its Parquet cache without
    # pyarrow (tools/telemetry/parquet_writer.py), HTA's builds DataFrames.
    import kat.tools.telemetry.bundle  # noqa: F401


def kat_import(trace_dir: str) -> dict:
    from kat.tools.telemetry.bundle import open_bundle

    cache = tempfile.mkdtemp(prefix="kat-bench-cache-")
    try:
        b = open_bundle(trace_dir, cache_dir=cache)
        return {"ranks": len(b.ranks), "events": b.total_events}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


HTA_PYTHON = Path(os.environ.get("KAT_HTA_PYTHON", REPO / ".venv-hta" / "bin" / "python"))


def hta(mode: str, trace_dir: str, repeats: int = 1) -> Measurement:
    """HTA in its own virtualenv (see bench/hta_runner.py); median of `repeats` runs."""
    if not HTA_PYTHON.exists():
        return Measurement(0.0, 0.0, None, f"{HTA_PYTHON} missing: run `make bench` (it creates .venv-hta)")
    return median_runs([measure_cmd([str(HTA_PYTHON), str(REPO / "bench" / "hta_runner.py"), mode, trace_dir]) for _ in range(repeats)])


def _case_dir(name: str, src: str) -> Path:
    """HTA reads directories: give each single-file case its own."""
    p = REAL / src
    if p.is_dir():
        return p
    d = WORK / "real" / name
    d.mkdir(parents=True, exist_ok=True)
    target = d / p.name
    if not target.exists():
        shutil.copy(p, target)
    return d


def make_large(ranks: int, src: Path = REAL / "hta_v100_rank1_2020_allreduce.json.gz") -> tuple[Path, int]:
    """A multi-rank trace made by replicating one real rank's trace `ranks` times."""
    d = WORK / f"large-{ranks}"
    doc = orjson.loads(gzip.decompress(src.read_bytes()))
    n_events = len(doc["traceEvents"]) * ranks
    if d.is_dir() and len(list(d.glob("rank-*.json.gz"))) == ranks:
        return d, n_events
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for r in range(ranks):
        doc["distributedInfo"] = {"backend": "nccl", "rank": r, "world_size": ranks}
        (d / f"rank-{r}.json.gz").write_bytes(gzip.compress(orjson.dumps(doc), compresslevel=1))
    return d, n_events


def _raw_events(path: Path) -> int:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.name.endswith((".json", ".json.gz")))
    return sum(
        len(orjson.loads(gzip.decompress(f.read_bytes()) if f.name.endswith(".gz") else f.read_bytes())["traceEvents"]) for f in files
    )


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def run(repeats: int = 3, large_ranks: int = 24, large_repeats: int | None = None) -> dict:
    """Each case: KAT and HTA alternately in fresh processes, medians of the repeats.

    Wall time is what a user waits; CPU time (user+system of the process and its workers) is
    what the work costs, and is the steadier figure on a shared machine.
    """
    rows = []
    large_repeats = int(os.environ.get("KAT_BENCH_LARGE_REPEATS", repeats)) if large_repeats is None else large_repeats
    cases = [(name, _case_dir(name, src)) for name, src in REAL_CASES.items()]
    large_dir, large_events = make_large(large_ranks)
    cases.append((f"large: {large_ranks} ranks x hta_v100", large_dir))
    print(f"[import] load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs", flush=True)
    for name, d in cases:
        is_large = name.startswith("large")
        raw = large_events if is_large else _raw_events(d)
        n = large_repeats if is_large else repeats
        kat_runs, hta_runs = [], []
        for _ in range(n):  # interleaved, so both see the same load
            kat_runs.append(median_of(1, kat_import, str(d), setup=kat_setup))
            hta_runs.append(hta("load", str(d)))
        ours, hta_m = median_runs(kat_runs), median_runs(hta_runs)
        ok = not hta_m.error
        row = {
            "case": name,
            "raw_events": raw,
            "size_mb_gz": round(_size_mb(d), 1),
            "repeats": n,
            "kat_s": round(ours.seconds, 3),
            "kat_cpu_s": round(ours.cpu_seconds, 3) if ours.cpu_seconds else None,
            "kat_peak_mb": round(ours.peak_mb),
            "kat_events_per_s": round(raw / ours.seconds),
            "kat_mb_per_s": round(_size_mb(d) / ours.seconds, 1),
            "kat_s_runs": [round(r.seconds, 2) for r in kat_runs],
            "kat_peak_runs": [round(r.peak_mb) for r in kat_runs],
            "hta_s": round(hta_m.seconds, 3) if ok else None,
            "hta_cpu_s": round(hta_m.cpu_seconds, 3) if ok and hta_m.cpu_seconds else None,
            "hta_peak_mb": round(hta_m.peak_mb) if ok else None,
            "hta_s_runs": [round(r.seconds, 2) for r in hta_runs],
            "hta_peak_runs": [round(r.peak_mb) for r in hta_runs],
            "speedup": _ratio(hta_m.seconds, ours.seconds) if ok else None,
            "cpu_speedup": _ratio(hta_m.cpu_seconds, ours.cpu_seconds) if ok else None,
            "memory_ratio": _ratio(ours.peak_mb, hta_m.peak_mb) if ok else None,
            "hta_error": hta_m.error,
            "kat_error": ours.error,
            "load_after": [round(x, 1) for x in os.getloadavg()],
        }
        rows.append(row)
        print(_fmt(row), flush=True)
    return {"import": rows}


def _fmt(r: dict) -> str:
    hta = (
        f"HTA {r['hta_s']:.2f}s (cpu {r['hta_cpu_s']}s) {r['hta_peak_mb']} MB -> {r['speedup']}x faster "
        f"(cpu {r['cpu_speedup']}x), memory {r['memory_ratio']}x of HTA"
        if r["hta_s"] is not None
        else f"HTA failed: {r['hta_error']}"
    )
    return (
        f"[import] {r['case']}: {r['raw_events']:,} events, {r['size_mb_gz']} MB gz, median of {r['repeats']} | "
        f"KAT {r['kat_s']:.2f}s (cpu {r['kat_cpu_s']}s, {r['kat_events_per_s']:,} ev/s, {r['kat_mb_per_s']} MB/s) "
        f"{r['kat_peak_mb']} MB | {hta} | load {r['load_after'][0]}"
    )


if __name__ == "__main__":
    ranks = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    run(large_ranks=ranks)
