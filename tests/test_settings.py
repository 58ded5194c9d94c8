"""The one settings object: documented, re-read per call, clear errors, and the only reader of KAT_*."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kat.knowledge.settings import _VARIABLES, Settings, SettingsError, settings

REPO = Path(__file__).resolve().parents[1]


def test_readme_table_lists_every_variable() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`((?:KAT|SLACK|OPENAI)_[A-Z_]+)`", section))
    read = set(_VARIABLES) - {"XDG_CACHE_HOME"}
    assert read <= documented, f"undocumented: {sorted(read - documented)}"
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    # the three Slack tokens share one row; XDG_CACHE_HOME is the XDG base directory, not KAT's own
    assert len(rows) == len(Settings.model_fields) - 3


def test_trace_import_settings_agree_with_the_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The importer's pydantic-free reader gives what the model gives, and refuses what it refuses."""
    from kat.knowledge.settings import trace_import_settings

    monkeypatch.setenv("KAT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KAT_IMPORT_WORKERS", "3")
    monkeypatch.setenv("KAT_KINETO_NATIVE", "off")
    monkeypatch.setenv("KAT_MAX_TRACE_BYTES", "512M")
    fast, full = trace_import_settings(), settings()
    assert fast.cache_root / "traces" == full.trace_cache_dir()
    assert (fast.import_workers, fast.kineto_native, fast.max_trace_bytes) == (full.import_workers, full.kineto_native, "512M")
    for name, bad in (("KAT_IMPORT_WORKERS", "0"), ("KAT_IMPORT_WORKERS", "many"), ("KAT_KINETO_NATIVE", "maybe")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(SettingsError, match=name):
            trace_import_settings()
        with pytest.raises(SettingsError, match=name):
            settings()
        monkeypatch.setenv(name, "1")


def test_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KAT_KB_DIR", raising=False)
    monkeypatch.setenv("KAT_CACHE_DIR", str(tmp_path))
    assert settings().kb_index_dir() == tmp_path / "kb"
    assert settings().trace_cache_dir() == tmp_path / "traces"
    monkeypatch.setenv("KAT_KB_DIR", str(tmp_path / "elsewhere"))
    assert settings().kb_index_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("KAT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert settings().cache_root() == tmp_path / "xdg" / "kat"
    monkeypatch.setenv("KAT_ANALYZER_TOOLS", " outpost_detect, log_search ,")
    assert settings().analyzer_tools == ("outpost_detect", "log_search")
    monkeypatch.setenv("KAT_SYSTEM_PROMPT", "")  # empty is unset
    assert settings().system_prompt == "system"
    monkeypatch.setenv("KAT_KINETO_NATIVE", "0")
    assert settings().kineto_native is False
    monkeypatch.setenv("OPENAI_BASE_URL", "http://a/v1")
    monkeypatch.delenv("KAT_OPENAI_BASE_URL", raising=False)
    assert settings().openai_base_url == "http://a/v1"
    monkeypatch.setenv("KAT_OPENAI_BASE_URL", "http://b/v1")  # KAT_ wins over the generic name
    assert settings().openai_base_url == "http://b/v1"


@pytest.mark.parametrize(
    ("var", "value"),
    [("KAT_IMPORT_WORKERS", "many"), ("KAT_KB_THREADS", "0"), ("KAT_TOOL_RESULT_CHARS", "-3"), ("KAT_KINETO_NATIVE", "maybe")],
)
def test_a_wrong_value_is_named(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=f"{var}='{value}'"):
        settings()


def test_the_cli_says_which_variable_is_wrong() -> None:
    env = {"PATH": "/usr/bin:/bin", "KAT_IMPORT_WORKERS": "many", "PYTHONPATH": ":".join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "kat.agent.cli", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: KAT_IMPORT_WORKERS='many'") and "Traceback" not in r.stderr


def _reads_environment(path: Path) -> list[str]:
    """`os.environ[...]`, `os.environ.get(...)`, `os.getenv(...)` reads (writes and setdefault are not reads)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = ast.unparse(node.func)
            if f in ("os.environ.get", "os.getenv", "environ.get"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:80]}")
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and ast.unparse(node.value) == "os.environ":
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:80]}")
        elif isinstance(node, ast.keyword) and node.arg == "envvar":  # typer reading a variable behind the object's back
            found.append(f"{path.relative_to(REPO)}:{node.value.lineno}: envvar={ast.unparse(node.value)}")
    return found


def test_only_the_settings_module_reads_the_environment() -> None:
    reads = []
    for pkg in ("agent", "tools", "knowledge", "evals"):
        for p in sorted((REPO / pkg).rglob("*.py")):
            if p != REPO / "knowledge" / "settings.py":
                reads += _reads_environment(p)
    assert reads == []
