"""Run HTA (holistictraceanalysis) on a trace directory; executed by .venv-hta's Python.

HTA 0.5.0 does not run under pandas 3 (it fails in its straggler analysis), so the benchmark
gives it its own virtualenv with the pandas 2 it was released against. Prints one JSON line:
{"seconds": ..., "ranks": ..., "events": ..., "result": ...} or {"error": ...}.
"""

import json
import logging
import os
import sys
import time

logging.disable(logging.WARNING)


def main() -> None:
    mode, trace_dir = sys.argv[1], sys.argv[2]
    from hta.trace_analysis import TraceAnalysis  # import cost is not what we time

    def cpu() -> float:  # this process and its (joined) parser pool
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    t0, c0 = time.perf_counter(), cpu()
    try:
        a = TraceAnalysis(trace_dir=trace_dir)
        out = {"ranks": len(a.t.traces), "events": int(sum(len(df) for df in a.t.traces.values()))}
        if mode == "stragglers":
            out["result"] = [int(r) for r in a.get_potential_stragglers(num_candidates=2)]
        out["seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = cpu() - c0
    except Exception as exc:  # report, never crash the bench
        out = {"error": f"{type(exc).__name__}: {exc}"[:300], "seconds": time.perf_counter() - t0}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
