"""The distribution installs everything under the `kat.` namespace, so it lives beside any user package.

Builds the wheel from this checkout, installs it (no dependencies: they come from the test's own
environment through a .pth line) into a fresh virtualenv that already holds packages named `tools`
and `agent` of its own, and runs `kat demo` there from a directory outside the checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)], cwd=out)
    assert r.returncode == 0, r.stderr[-3000:]
    wheels = list(out.glob("kat-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_only_the_kat_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.startswith("kat-0")}
    assert tops == {"kat"}, tops
    # Package data the commands read at run time travels with the code.
    assert "kat/prompts/system.md" in names
    assert "kat/agent/demo_data/incident/incident.json" in names
    assert any(n.startswith("kat/knowledge/corpus/") and n.endswith(".md") for n in names)
    assert any(n.startswith("kat/evals/suites/demo/") for n in names)


def test_installed_beside_packages_named_tools_and_agent(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip())
    # The user's own packages with the names KAT's folders have in the repository.
    for name in ("tools", "agent", "knowledge"):
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(f"OWNER = 'user-{name}'\n")
    # Dependencies from this test's environment, appended after the fresh venv's own site-packages.
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", KAT_CACHE_DIR=str(tmp_path / "cache"), KAT_KB_DIR=str(tmp_path / "kb"), COLUMNS="120")
    probe = "import tools, agent, kat.tools.telemetry, kat.agent.cli; print(tools.OWNER, agent.OWNER, kat.tools.telemetry.__file__)"
    r = _run([str(py), "-c", probe], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    owner_tools, owner_agent, kat_file = r.stdout.split()
    assert (owner_tools, owner_agent) == ("user-tools", "user-agent")
    assert kat_file.startswith(str(site)), kat_file

    r = _run([str(env_dir / "bin" / "kat"), "demo"], cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    # The rendered diagnosis: a category line with its component, ranks and confidence.
    assert re.search(r"component \w+\s+ranks \[\d", r.stdout) and "confidence" in r.stdout, r.stdout[-2000:]
