"""The kat packages' import graph: no cycles, and only the arrows ARCHITECTURE.md allows.

Every module is parsed (not imported), so function-level imports count too; imports under
`if TYPE_CHECKING:` do not (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "tools", "knowledge", "prompts", "evals")

# Which top-level packages each may import (itself included). evals -> everything.
ALLOWED = {
    "agent": {"agent", "tools", "knowledge", "prompts"},
    "tools": {"tools", "knowledge", "prompts"},
    "knowledge": {"knowledge", "prompts"},
    "prompts": {"prompts"},
    "evals": set(PACKAGES),
}
# Inside tools/: the bundle layer and the detector are plain libraries (no LLM stack).
SUB_ALLOWED = {
    "kat.tools.telemetry": ("kat.tools.telemetry", "kat.knowledge"),
    "kat.tools.outpost": ("kat.tools.outpost", "kat.tools.telemetry", "kat.knowledge"),
}


def _modules(root: Path) -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (root / pkg).rglob("*.py"):
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods["kat." + ".".join(parts)] = p
    return mods


def _is_extension(mods: dict[str, Path], package: str, name: str) -> bool:
    """`from kat.x import _native` where _native is a compiled module (its source is C)."""
    folder = mods[package].parent
    return (folder / f"{name}.c").exists() or any(folder.glob(f"{name}.*.so"))


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    type_only = {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)
    }
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kat."))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            if not base.startswith("kat."):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in mods:
                    found.add(sub)
                elif not (base in mods and _is_extension(mods, base, a.name)):
                    found.add(base)
    return {m for m in found if m != name}


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    mods = _modules(root)
    graph = {}
    for name, path in mods.items():
        targets = _imports(name, path, mods)
        unknown = sorted(t for t in targets if t not in mods)
        assert not unknown, f"{path}: imports {unknown}, which are not modules of the kat packages"
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in graph.items():
        top = src.split(".")[1]
        for dst in sorted(targets):
            if dst.split(".")[1] not in ALLOWED[top]:
                bad.append(f"{src} -> {dst}")
                continue
            for prefix, allowed in SUB_ALLOWED.items():
                if (src == prefix or src.startswith(prefix + ".")) and not dst.startswith(allowed):
                    bad.append(f"{src} -> {dst}")
    return bad


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_layering(graph: dict[str, set[str]]) -> None:
    assert layering_violations(graph) == []


def test_the_checks_catch_what_they_should() -> None:
    g = {"kat.a.x": {"kat.a.y"}, "kat.a.y": {"kat.a.z"}, "kat.a.z": {"kat.a.x"}, "kat.a.w": {"kat.a.x"}}
    assert cycles(g) == [["kat.a.x", "kat.a.y", "kat.a.z"]]
    assert cycles({"kat.a.x": {"kat.a.y"}, "kat.a.y": set()}) == []
    g = {"kat.tools.telemetry.bundle": {"kat.tools.outpost.detect"}, "kat.tools.x": {"kat.agent.graph"}, "kat.evals.x": {"kat.agent.y"}}
    assert layering_violations(g) == ["kat.tools.telemetry.bundle -> kat.tools.outpost.detect", "kat.tools.x -> kat.agent.graph"]


def test_function_level_and_relative_imports_count(tmp_path: Path) -> None:
    pkg = tmp_path / "agent"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from kat.agent import b\n")
    (pkg / "b.py").write_text("from . import a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kat.agent import c\n")
    (pkg / "c.py").write_text("")
    for other in PACKAGES[1:]:
        (tmp_path / other).mkdir()
    g = import_graph(tmp_path)
    assert g["kat.agent.a"] == {"kat.agent.b"} and g["kat.agent.b"] == {"kat.agent.a"}
    assert cycles(g) == [["kat.agent.a", "kat.agent.b"]]
