"""Query engine choice, by measurement: the same event filter (kind + name regex + window) with
pandas boolean masks over in-memory frames (what tools/telemetry/queries.py does) and with
pyarrow.compute over the Parquet cache."""

from __future__ import annotations

import statistics
import tempfile
import time

from bench.bench_import import make_large


def run(ranks: int = 8, repeats: int = 5) -> dict:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from kat.tools.telemetry.bundle import open_bundle
    from kat.tools.telemetry.import_worker import cache_path
    from kat.tools.telemetry.queries import EventQuery, query_events
    from kat.tools.telemetry.schema import arrow_schema

    d, _ = make_large(ranks)
    cache = tempfile.mkdtemp(prefix="kat-bench-q-")
    b = open_bundle(d, cache_dir=cache)
    b.load_all()
    t_min = int(min(b.events(r)["ts_ns"].min() for r in b.ranks))
    t_max = int(max(b.events(r)["ts_ns"].max() for r in b.ranks))
    lo, hi = t_min + (t_max - t_min) // 3, t_min + 2 * (t_max - t_min) // 3
    q = EventQuery(kinds=["kernel", "collective"], name_pattern="nccl|gemm", start_ns=lo, end_ns=hi, limit=200)

    def pandas_query() -> int:
        return query_events(b, q).total_matches

    files = [str(cache_path(b.cache_root, b.traces[r].path)) for r in b.ranks]
    # The canonical schema: cache entries store small integer columns as int32 and strings
    # without pyarrow's own schema note; the dataset reads them all as the canonical types.
    dataset = ds.dataset(files, format="parquet", schema=arrow_schema())

    def arrow_query() -> int:
        expr = pc.field("kind").isin(["kernel", "collective"]) & (pc.field("ts_ns") < hi) & ((pc.field("ts_ns") + pc.field("dur_ns")) > lo)
        t = dataset.to_table(filter=expr, columns=["name", "kind", "ts_ns", "dur_ns", "rank"])
        names = pc.cast(t.column("name"), "string")
        return int(pc.sum(pc.match_substring_regex(names, "(?i)nccl|gemm")).as_py() or 0)

    out = {}
    for label, fn in (("pandas (in memory)", pandas_query), ("pyarrow.compute (Parquet cache)", arrow_query)):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            n = fn()
            times.append(time.perf_counter() - t0)
        out[label] = {"median_ms": round(statistics.median(times) * 1000, 1), "matches": n}
        print(f"[queries] {label}: median {out[label]['median_ms']} ms, {n} matches over {b.total_events:,} events", flush=True)
    return {"queries": out}


if __name__ == "__main__":
    run()
