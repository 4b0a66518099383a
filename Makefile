# The two set-up commands of the README:
#   make pipeline   - create .venv, install, run the whole DVC pipeline on the default dataset
#   make test       - create .venv, install, run the test suite
#   make lint       - ruff format --check and ruff check (config: pyproject.toml [tool.ruff]);
#                     `.venv/bin/ruff format . && .venv/bin/ruff check --fix .` repairs most of it
# TORCH_SPEC picks the torch build. The default is the CPU wheel the project's machines hold
# locally; GPU users install a CUDA build of torch into .venv first (README, "GPU").
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup pipeline test lint benchmarks clean-outputs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

pipeline: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" dvc repro
	@sed -n '/^## Test metrics/,/^MostPop ranks/p' reports/README.md
	@echo "Full report: reports/README.md; metrics: dvc metrics show"

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

benchmarks: setup
	$(PY) benchmarks/preprocess_scale.py --interactions 10000000,30000000
	$(PY) benchmarks/tokenizer_speed.py
	$(PY) benchmarks/beam_search_speed.py
