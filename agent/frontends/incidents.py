"""The incidents root: list bundles under it and resolve a user-given name safely.

A name is a bundle id (the manifest's `id`), a directory name, or a path relative to the root.
Nothing outside the root is reachable: absolute paths, `~`, `..` and symlinks that leave the
root are refused.
"""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path, PurePosixPath

from pydantic import BaseModel

MAX_DEPTH = 3  # how deep under the root bundles are looked for
MAX_NAME = 512


class IncidentError(ValueError):
    """A name that cannot be served; `status` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


class IncidentInfo(BaseModel):
    id: str
    path: str  # relative to the incidents root, POSIX separators
    title: str | None = None
    symptom: str | None = None


class IncidentProblem(BaseModel):
    """A bundle the listing skipped, and why (one broken manifest never hides the others)."""

    path: str
    error: str


def _looks_like_bundle(d: Path) -> bool:
    if (d / "incident.json").is_file():
        return True
    # A plain directory of Kineto traces is a valid input too (ARCHITECTURE.md).
    try:
        return any(p.name.endswith((".json", ".json.gz")) for p in d.iterdir() if p.is_file())
    except OSError:
        return False


def _manifest(d: Path) -> dict:
    """The manifest's listing fields; ValueError naming the field when one is unusable."""
    p = d / "incident.json"
    if not p.resolve().is_relative_to(d.resolve()):
        raise ValueError("incident.json is a symlink out of the bundle")
    if not p.is_file():
        raise ValueError("incident.json is not a regular file")
    try:
        with open(p, encoding="utf-8-sig") as f:
            m = json.load(f)
    except RecursionError:
        raise ValueError("incident.json nests too deeply") from None
    except OSError as exc:
        raise ValueError(f"incident.json cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise ValueError(f"incident.json is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(m, dict):
        raise ValueError(f"incident.json is a JSON {'array' if isinstance(m, list) else type(m).__name__}, not an object")
    for key in ("id", "title", "symptom"):
        if m.get(key) is not None and not isinstance(m[key], str):
            raise ValueError(f"incident.json field {key!r} must be a string, got {type(m[key]).__name__}")
    return m


class IncidentRoot:
    """Bundles under one directory."""

    def __init__(self, root: Path | str, list_hint: str = "GET /v1/incidents lists them"):
        self.root = Path(root).expanduser().resolve()
        self.list_hint = list_hint  # where the caller's front end lists valid names

    def exists(self) -> bool:
        return self.root.is_dir()

    def list(self) -> builtins.list[IncidentInfo]:
        return self.scan()[0]

    # builtins.list: inside the class body `list` is the method above
    def scan(self) -> tuple[builtins.list[IncidentInfo], builtins.list[IncidentProblem]]:
        """Bundles under the root, and the ones skipped with the reason (broken manifest, duplicate id)."""
        out: list[IncidentInfo] = []
        problems: list[IncidentProblem] = []
        if not self.exists():
            return out, problems
        for dirpath, dirnames, _ in os.walk(self.root, followlinks=False):
            d = Path(dirpath)
            depth = len(d.relative_to(self.root).parts)
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            if d == self.root:
                continue
            if (d / "incident.json").exists() or (d / "incident.json").is_symlink():
                rel = d.relative_to(self.root).as_posix()
                dirnames[:] = []  # a bundle's subdirectories (traces/) are not bundles
                try:
                    m = _manifest(d)
                except ValueError as exc:
                    problems.append(IncidentProblem(path=rel, error=str(exc)))
                    continue
                out.append(IncidentInfo(id=str(m.get("id") or d.name), path=rel, title=m.get("title"), symptom=m.get("symptom")))
            elif depth >= MAX_DEPTH:
                dirnames[:] = []
        seen: dict[str, str] = {}
        for info in out:
            if info.id in seen:
                problems.append(IncidentProblem(path=info.path, error=f"duplicate incident id {info.id!r}: also in {seen[info.id]}"))
            else:
                seen[info.id] = info.path
        return out, problems

    def resolve(self, name: str) -> Path:
        """The bundle directory for `name`, or IncidentError (400 refused, 404 unknown)."""
        name = (name or "").strip()
        if not name:
            raise IncidentError("incident name is empty", 400)
        if len(name) > MAX_NAME or "\x00" in name or "\\" in name:
            raise IncidentError("incident name is not a valid id or relative path", 400)
        p = PurePosixPath(name)
        if p.is_absolute() or name.startswith("~") or ".." in p.parts:
            raise IncidentError(f"incident {name!r} refused: only ids and paths inside the incidents root are allowed", 400)
        cand = (self.root / p).resolve()
        if cand != self.root and self.root not in cand.parents:
            # e.g. a symlink under the root that points elsewhere
            raise IncidentError(f"incident {name!r} refused: it resolves outside the incidents root", 400)
        if cand != self.root and cand.is_dir() and _looks_like_bundle(cand):
            return cand
        if "/" not in name:  # a bundle id or directory name anywhere under the root
            hits = [info for info in self.list() if info.id == name or PurePosixPath(info.path).name == name]
            paths = sorted({h.path for h in hits})
            if len(paths) > 1:
                raise IncidentError(
                    f"incident {name!r} is ambiguous: it names {len(paths)} bundles ({', '.join(paths[:5])}); use the path instead", 409
                )
            if hits:
                return self.resolve(hits[0].path)
        raise IncidentError(f"no incident {name!r} under the incidents root ({self.list_hint})", 404)

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()
