# Two entry points for a newcomer (see README): `make example` and `make test`.
# Both create .venv on first use. torch is pinned here, in the test and example
# set-up only: 2.13.0 is a CPU build, while a bare `torch` requirement pulls a
# multi-GB CUDA build. The package itself keeps ranges (pyproject.toml).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: example test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,huggingface,onnx]"
	touch $@

example: $(VENV)/.installed
	$(PY) pipelines/census/run_example.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check beam_dsl tests benchmarks pipelines

clean:
	rm -rf $(VENV) out pipelines/*/out pipelines/*/models
