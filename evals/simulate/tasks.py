"""LMDI task configurations (model, parallel layout, hardware, workload), loaded from data.

Tasks live in ``evals/tasks/*.yaml``: a ``models`` table of architectures and a ``tasks`` list
that names a model and adds layout, hardware and workload. Adding a task is a data change.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"


class ModelSpec(BaseModel):
    """Dense decoder-only transformer dimensions (enough for a roofline kernel-time model)."""

    model_config = ConfigDict(extra="forbid")
    hf_name: str
    arch: str = "llama"
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    intermediate: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    vocab: int = 128256

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class TaskConfig(BaseModel):
    """One serving deployment to simulate."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    engine: Literal["vllm", "sglang"] = "vllm"
    model: str
    tp: int = Field(ge=1)
    pp: int = Field(ge=1, default=1)
    dp: int = Field(ge=1, default=1)
    gpus_per_host: int = Field(ge=1, default=8)
    gpu: Literal["A100", "H100", "H200", "B200"] = "H100"
    workload: Literal["prefill_heavy", "decode_heavy", "mixed"] = "mixed"
    mode: Literal["eager", "cuda_graph"] = "eager"
    max_num_seqs: int = Field(ge=1, default=128)
    prompt_tokens: int = Field(ge=1, default=1024, description="mean prompt length")
    context_tokens: int = Field(ge=1, default=2048, description="mean context length of running sequences")
    spec: ModelSpec | None = None

    @property
    def model_spec(self) -> ModelSpec:
        """The resolved model spec (load_tasks always sets it; a hand-built task may not)."""
        if self.spec is None:
            raise ValueError(f"task {self.name}: model {self.model!r} has no spec; build tasks with load_tasks()")
        return self.spec

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def n_hosts(self) -> int:
        return math.ceil(self.world_size / self.gpus_per_host)

    @model_validator(mode="after")
    def _layout(self) -> TaskConfig:
        if self.spec is not None and self.spec.layers % self.pp:
            raise ValueError(f"task {self.name}: {self.spec.layers} layers do not split into pp={self.pp} stages")
        if self.world_size % self.gpus_per_host and self.world_size > self.gpus_per_host:
            raise ValueError(f"task {self.name}: {self.world_size} ranks do not fill hosts of {self.gpus_per_host} GPUs")
        return self


class _TaskFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    tasks: list[dict] = Field(default_factory=list)


@lru_cache(maxsize=4)
def load_tasks(directory: Path = TASKS_DIR) -> dict[str, TaskConfig]:
    """All tasks by name, with their model spec resolved."""
    models: dict[str, ModelSpec] = {}
    raw_tasks: list[dict] = []
    for path in sorted(Path(directory).glob("*.yaml")):
        doc = _TaskFile.model_validate(yaml.safe_load(path.read_text()) or {})
        models.update(doc.models)
        raw_tasks.extend(doc.tasks)
    tasks: dict[str, TaskConfig] = {}
    for raw in raw_tasks:
        model = raw.get("model")
        if model not in models:
            raise ValueError(f"task {raw.get('name')!r} names unknown model {model!r}")
        task = TaskConfig.model_validate({**raw, "spec": models[model]})
        if task.name in tasks:
            raise ValueError(f"task {task.name!r} is defined twice")
        tasks[task.name] = task
    return tasks


def get_task(name: str) -> TaskConfig:
    tasks = load_tasks()
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; see `kat simulate --list-tasks` ({len(tasks)} tasks)")
    return tasks[name]
