"""Resolve SUITE to a directory of bundles with ground truth; generate named suites once and cache them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kat.evals.detection import case_dirs

# `real` runs the real-trace generator (torch.distributed on CPU); its own suites are tiny/small/standard.
REAL_SUITES = {"real": "small", "real-tiny": "tiny", "real-small": "small", "real-standard": "standard"}
DONE_MARKER = ".kat-eval-generated"


def simulated_suites() -> list[str]:
    from kat.evals.simulate.suites import SUITES_DIR

    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def known_suites() -> list[str]:
    return simulated_suites() + list(REAL_SUITES)


def generate(suite: str, root: Path, say: Callable[[str], None] = lambda s: None) -> None:
    """Generate `suite` into `root`; a marker file makes an interrupted generation start over."""
    say(f"generating suite {suite!r} into {root} ...")
    if suite in REAL_SUITES:
        from kat.evals.realtrace import generate_suite as gen_real

        gen_real(REAL_SUITES[suite], root)
    else:
        from kat.evals.simulate import generate_suite as gen_sim

        gen_sim(suite, root, progress=lambda c: say(f"  generated {c.id} ({c.events:,} events)"))
    (root / DONE_MARKER).write_text(suite + "\n")


def resolve(suite: str, out: Path, cases: Path | None = None, say: Callable[[str], None] = lambda s: None) -> tuple[str, Path]:
    """(suite label, root holding the bundles). A directory SUITE is used as is."""
    if cases is None and Path(suite).is_dir():
        return Path(suite).resolve().name, Path(suite)
    if suite not in known_suites():
        raise ValueError(f"unknown suite {suite!r}: not a directory, and not one of {', '.join(known_suites())}")
    root = cases or (out / "cases" / suite)
    reuse = (root / DONE_MARKER).exists() or (cases is not None and root.exists() and bool(case_dirs(root)))
    if not reuse:  # generated once, then cached under --out (or --cases)
        generate(suite, root, say)
    return suite, root


def list_cases(root: Path) -> list[tuple[str, Path]]:
    """(case id, bundle directory) for every bundle below root with a ground_truth.json."""
    return [(str(p.relative_to(root)) if p != root else p.name, p) for p in case_dirs(root)]
