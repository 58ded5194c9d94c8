"""Packaging beside pyproject.toml: the `kat.*` namespace mapping and the optional native importer.

The repository keeps agent/, tools/, knowledge/, prompts/ and evals/ at its top level; the
distribution installs them as `kat.agent`, `kat.tools`, ... so no installed name clashes with a
user's own `tools` or `agent` package. Both regular and editable installs use this mapping.

`optional=True` on the extension: without a C compiler the install still succeeds and the
importer uses its pure-Python path (tools/telemetry/kineto.py), which gives the same results,
only slower.
"""

from pathlib import Path

from setuptools import Extension, find_packages, setup

SUBPACKAGES = ("agent", "tools", "knowledge", "prompts", "evals")
# Non-Python files shipped with each subpackage (prompt templates, the knowledge corpus, suites,
# the demo's bundle); globs are relative to the subpackage's folder.
DATA_GLOBS = ("*.md", "*.txt", "*.json", "*.yaml", "*.jsonl", "*.jinja", "*.gz", "*.parquet", "*.csv")


def _package_data(root: str) -> list[str]:
    """Every data file under `root` that is not inside a deeper Python package."""
    base = Path(root)
    found = []
    for p in base.rglob("*"):
        if p.is_file() and p.suffix not in (".py", ".pyc", ".c", ".so") and "__pycache__" not in p.parts:
            owner = p.parent
            while owner != base and not (owner / "__init__.py").exists():
                owner = owner.parent
            if owner == base:
                found.append(str(p.relative_to(base)))
    return sorted(found)


packages = []
package_dir = {}
package_data = {}
for sub in SUBPACKAGES:
    for pkg in [sub, *(f"{sub}.{p}" for p in find_packages(sub))]:
        name = f"kat.{pkg}"
        packages.append(name)
        folder = pkg.replace(".", "/")
        package_dir[name] = folder
        data = _package_data(folder)
        if data:
            package_data[name] = data

setup(
    packages=packages,
    package_dir=package_dir,
    package_data=package_data,
    ext_modules=[
        Extension(
            "kat.tools.telemetry._kineto_fast",
            ["tools/telemetry/_kineto_fast.c"],
            extra_compile_args=["-O2", "-std=gnu99"],
            optional=True,
        )
    ],
)
