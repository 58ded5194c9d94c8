"""kat finetune train/export on a tiny random Llama: config errors, 2 stages, resume, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

from kat.evals.finetune.config import ConfigError, load_config  # noqa: E402


def _conv(i: int) -> dict:
    return {
        "id": f"ex{i}",
        "tools": None,
        "messages": [
            {"role": "system", "content": "You are KAT's Analyzer."},
            {"role": "user", "content": f"Diagnose incident {i}."},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "a", "type": "function", "function": {"name": "outpost_detect", "arguments": {}}}],
            },
            {"role": "tool", "tool_call_id": "a", "content": f"TOOL RESULT ev-1 outpost_detect ok\nsummary: suspect ranks [{i}]"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "b",
                        "type": "function",
                        "function": {
                            "name": "submit_diagnosis",
                            "arguments": {
                                "root_cause": {"category": "gpu_thermal_throttling", "ranks": [i], "summary": "hot"},
                                "confidence": 0.8,
                            },
                        },
                    }
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from kat.evals.finetune.tiny import build_tiny_base

    root = tmp_path_factory.mktemp("ft")
    base = build_tiny_base(root / "base")
    data = root / "data"
    (data / "sft").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"id": f"d{i}", "text": f"GPU thermal throttling on rank {i}: SM clock drops, peers wait in all-reduce. " * 4})
            + "\n"
            for i in range(6)
        )
    )
    for split, idx in (("train", range(4)), ("validation", range(4, 6))):
        (data / "sft" / f"{split}.jsonl").write_text("".join(json.dumps(_conv(i)) + "\n" for i in idx))
    (data / "manifest.json").write_text(json.dumps({"serve_env": {"KAT_TOOL_RESULT_CHARS": "0"}}))
    cfg = root / "cfg.yaml"
    cfg.write_text(f"""
base_model: {base}
data_dir: {data}
output_dir: {root / "run"}
seed: 1
lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}}
cpt: {{steps: 1, lr: 1.0e-2, max_length: 64}}
sft: {{steps: 2, lr: 1.0e-2, max_length: 256}}
checkpoint_every: 1
eval_examples: 2
""")
    return root, cfg


def _config_error(path: Path, text: str) -> str:
    """The message load_config raises for a config file holding `text`."""
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return str(e.value)


def test_config_errors_name_file_and_field(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    msg = _config_error(
        p,
        "base_model: b\ndata_dir: d\noutput_dir: o\ncpt: {steps: 1, lr: 0.1, max_length: 64}\n"
        "sft: {steps: 1, lr: -1, max_length: 64}\nlora: {r: 0, rank: 3}\n",
    )
    assert str(p) in msg and "sft.lr" in msg and "lora.r" in msg and "lora.rank" in msg
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.yaml")
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_shipped_configs_validate() -> None:
    for name in ("cpu-smollm2-135m.yaml", "gpu-14b.yaml"):
        cfg = load_config(name)
        assert cfg.sft.steps > 0


def test_train_resume_and_export(setup: tuple[Path, Path]) -> None:
    from kat.evals.finetune.artifacts import latest_checkpoint
    from kat.evals.finetune.train import train

    root, cfg_path = setup
    cfg = load_config(cfg_path)
    first = train(cfg, max_steps_this_run=2, say=lambda s: None, progress=False)
    assert not first.finished and first.global_step == 2
    ck = latest_checkpoint(Path(cfg.output_dir))
    assert ck is not None and ck.name == "step-000002"
    assert json.loads((ck / "trainer_state.json").read_text())["stage"] == "sft"
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, say=lambda s: None, progress=False)
    done = train(cfg, resume=True, say=lambda s: None, progress=False)
    assert done.finished and done.global_step == 3
    out = Path(cfg.output_dir)
    m = json.loads((out / "metrics.json").read_text())
    assert [s["step"] for s in m["steps"]] == [1, 2, 3]  # resumed: no step repeated or lost
    assert m["stages"]["sft"]["validation_loss_after"] is not None
    assert (out / "loss.png").stat().st_size > 0
    # export: a loadable adapter and a merged model that carries our chat template
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kat.evals.finetune.chat_format import load_template

    base = AutoModelForCausalLM.from_pretrained(str(cfg.base_model))
    PeftModel.from_pretrained(base, str(out / "adapter"))
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"))
    tok = AutoTokenizer.from_pretrained(str(out / "merged"))
    assert tok.chat_template == load_template()
    assert json.loads((out / "merged" / "kat_model.json").read_text())["agent_env"] == {"KAT_TOOL_RESULT_CHARS": "0"}
    assert merged.config.vocab_size == base.config.vocab_size


def test_export_command_from_checkpoint(setup: tuple[Path, Path]) -> None:
    from kat.evals.finetune.export import export_checkpoint

    root, cfg_path = setup
    run = Path(load_config(cfg_path).output_dir)
    if not (run / "checkpoints").exists():
        pytest.skip("needs the training test's run")
    adapter, merged = export_checkpoint(run, say=lambda s: None)
    assert (adapter / "adapter_config.json").exists() and (merged / "config.json").exists()
    with pytest.raises(FileNotFoundError, match="not a `kat finetune train`"):
        export_checkpoint(root, say=lambda s: None)


def test_time_budget_ends_a_stage_early(setup: tuple[Path, Path]) -> None:
    from kat.evals.finetune.train import train

    root, cfg_path = setup
    cfg = load_config(
        cfg_path, {"output_dir": str(root / "budget"), "cpt.steps": 0, "sft.steps": 5, "sft.max_minutes": 1e-6, "export": False}
    )
    res = train(cfg, say=lambda s: None, progress=False)
    assert res.finished and res.global_step == 1
    m = json.loads((root / "budget" / "metrics.json").read_text())
    assert m["stages"]["sft"]["stopped_by_time_budget"] is True
    assert train(cfg, resume=True, say=lambda s: None, progress=False).global_step == 1  # stays done


def test_cli_reports_bad_input_by_name(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kat.evals.cli.finetune import build_app

    app = build_app()
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2 and "nope.yaml" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"base_model: b\ndata_dir: {tmp_path / 'd'}\noutput_dir: {tmp_path / 'o'}\n"
        "cpt: {steps: 0, lr: 0.1, max_length: 64}\nsft: {steps: 0, lr: 0.1, max_length: 64}\n"
    )
    r = runner.invoke(app, ["train", "--config", str(bad)])
    assert r.exit_code == 2 and "nothing to train" in r.output
    r = runner.invoke(app, ["train", "--config", str(bad), "--set", "sft.steps=1", "--set", "base_model=" + str(tmp_path)])
    assert r.exit_code == 2 and "config.json" in r.output  # base_model is not an HF folder
    r = runner.invoke(app, ["data", "--out", str(tmp_path / "d"), "--size", "huge"])
    assert r.exit_code == 2 and "size" in r.output


# -- data order and loss weighting (SFT) ---------------------------------------------------------
def test_interleaved_order_covers_every_category_each_round() -> None:
    import itertools

    from kat.evals.finetune.train import interleaved_order

    groups = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    order = list(itertools.islice(interleaved_order(groups, 0, "sft"), 18))
    for r in range(6):  # each round of 3 steps sees a, b and c once
        assert sorted(groups[i] for i in order[3 * r : 3 * r + 3]) == ["a", "b", "c"]
    assert sorted(order[:9]) == list(range(9)) and sorted(order[9:]) == list(range(9))  # one epoch = every example once
    assert order[:9] != order[9:]  # a fresh order each epoch
    assert order == list(itertools.islice(interleaved_order(groups, 0, "sft"), 18))  # deterministic (resumable)
    uneven = list(itertools.islice(interleaved_order(["a"] * 3 + ["b"], 1, "sft"), 4))
    assert sorted(uneven) == [0, 1, 2, 3]


def test_sample_order_falls_back_to_shuffle_without_groups() -> None:
    import itertools

    from kat.evals.finetune.config import StageSettings
    from kat.evals.finetune.train import Sample, _order, sample_order

    st = StageSettings(steps=1, lr=0.1, max_length=64, order="interleave")
    plain = [Sample(input_ids=[1], labels=[1]) for _ in range(5)]
    assert list(itertools.islice(sample_order(plain, st, 0, "sft"), 5)) == list(itertools.islice(_order(5, 0, "sft"), 5))


def test_category_tokens_carry_the_loss_weight(setup: tuple[Path, Path]) -> None:
    from kat.evals.finetune.artifacts import load_tokenizer
    from kat.evals.finetune.train import IGNORE, sft_sample

    root, _ = setup
    tok = load_tokenizer(root / "base")
    conv = _conv(3)
    plain = sft_sample(tok, conv["messages"], None, 512)
    s = sft_sample(tok, conv["messages"], None, 512, category_weight=4.0)
    assert plain.weights is None and s.input_ids == plain.input_ids and s.labels == plain.labels
    heavy = [i for i, w in enumerate(s.weights or []) if w == 4.0]
    assert heavy and all(s.labels[i] != IGNORE for i in heavy)  # only trained (assistant) tokens
    assert "gpu_thermal_throttling" in tok.decode([s.input_ids[i] for i in heavy]).replace(" ", "")
    assert set(s.weights or []) == {1.0, 4.0}


def test_weighted_loss_and_order_train(setup: tuple[Path, Path]) -> None:
    import torch

    from kat.evals.finetune.train import Sample, _loss, build_model, train

    root, cfg_path = setup
    cfg = load_config(
        cfg_path,
        {
            "output_dir": str(root / "weighted"),
            "cpt.steps": 0,
            "sft.steps": 2,
            "sft.order": "interleave",
            "sft.category_loss_weight": 5.0,
            "export": False,
        },
    )
    assert train(cfg, say=lambda s: None, progress=False).global_step == 2
    # the weighted mean equals the plain mean when every weight is 1, and moves toward the heavy tokens otherwise
    model = build_model(cfg, "cpu")
    ids = list(range(5, 25))
    ones = Sample(input_ids=ids, labels=ids, weights=[1.0] * len(ids))
    heavy = Sample(input_ids=ids, labels=ids, weights=[1.0] * 10 + [50.0] + [1.0] * 9)
    with torch.no_grad():
        plain = float(_loss(model, [Sample(input_ids=ids, labels=ids)], 0, "cpu")[0])
        assert abs(float(_loss(model, [ones], 0, "cpu")[0]) - plain) < 1e-5
        assert abs(float(_loss(model, [heavy], 0, "cpu", weighted=False)[0]) - plain) < 1e-5
        assert abs(float(_loss(model, [heavy], 0, "cpu")[0]) - plain) > 1e-6


def test_order_and_category_weight_are_validated(tmp_path: Path) -> None:
    msg = _config_error(
        tmp_path / "c.yaml",
        "base_model: b\ndata_dir: d\noutput_dir: o\ncpt: {steps: 0, lr: 0.1, max_length: 64}\n"
        "sft: {steps: 1, lr: 0.1, max_length: 64, order: random, category_loss_weight: 0.5}\n",
    )
    assert "sft.order" in msg and "sft.category_loss_weight" in msg


def test_planned_steps_fit_the_time_budget() -> None:
    from kat.evals.finetune.config import StageSettings
    from kat.evals.finetune.train import _lr_at, planned_steps

    st = StageSettings(steps=24, lr=1.0, max_length=64, warmup_steps=2, max_minutes=6.0)
    assert planned_steps(st, []) == 24  # nothing measured yet
    assert planned_steps(st, [30.0, 30.0]) == 12  # 360 s at 30 s a step
    assert planned_steps(st, [5.0] * 3) == 24  # the budget is not what ends it
    assert planned_steps(st.model_copy(update={"max_minutes": None}), [30.0] * 3) == 24
    assert planned_steps(st, [30.0] * 12) == 13  # never behind the step being run
    # with the plan the last step that fits (index 11) runs near the decay's floor (10% of the peak)
    assert _lr_at(st.model_copy(update={"steps": planned_steps(st, [30.0] * 11)}), 11) < 0.13
