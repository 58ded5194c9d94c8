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

.PHONY: demo test bench eval install clean

# torch goes in first and alone: anything that pulls it in later must find this CPU build
# satisfied, or pip fetches the CUDA build (several GB).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=23.2"
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -c constraints.txt -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kat demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

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

clean:
	rm -rf $(VENV) $(HTA_VENV) .kat-cache reports
