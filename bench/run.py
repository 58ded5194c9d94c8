"""`make bench`: every speed/memory benchmark, each against its named peer, in one run.

Figures are medians where a case repeats; machines are shared and noisy, so read the ratios.
Sections can be picked: `python -m bench.run import outpost kb scale` (`make bench-scale`: scale only).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    wanted = argv or ["import", "outpost", "kb", "scale"]
    results: dict[str, object] = {}
    for name in wanted:
        t0 = time.perf_counter()
        print(f"== bench {name} ==", flush=True)
        if name == "import":
            from bench.bench_import import run

            results[name] = run(large_ranks=int(os.environ.get("KAT_BENCH_LARGE_RANKS", "24")))
        elif name == "outpost":
            from bench.bench_outpost import run

            results[name] = run()
        elif name == "kb":
            from bench.bench_kb import run

            results[name] = run()
        elif name == "scale":
            from bench.bench_scale import run

            results[name] = run()
        else:
            print(f"unknown bench section {name!r} (import | outpost | kb | scale)", file=sys.stderr)
            return 2
        print(f"== {name}: {time.perf_counter() - t0:.0f} s ==", flush=True)
    out = Path(os.environ.get("KAT_BENCH_OUT", "reports/bench.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
