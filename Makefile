.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CT2_RUN ?= runs/demo
BENCH_ARGS ?=

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,plot,ctranslate2,hf,serve]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install mtkit with dev tools

test: $(STAMP) ## Run the whole test suite (unit + slow end-to-end)
	$(PY) -m pytest -q

test-fast: $(STAMP) ## Run the tests without the slow end-to-end ones
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check mtkit tests benchmarks scripts
	$(VENV)/bin/ruff format --check mtkit tests benchmarks scripts
	$(VENV)/bin/mypy

format: $(STAMP) ## Format the code
	$(VENV)/bin/ruff format mtkit tests benchmarks scripts
	$(VENV)/bin/ruff check --fix mtkit tests benchmarks scripts

demo: $(STAMP) ## prepare → train → translate → evaluate on the bundled data, prints BLEU
	$(VENV)/bin/mtkit train configs/demo.yaml --overwrite
	$(VENV)/bin/mtkit evaluate runs/demo --split test --overwrite

bench: $(STAMP) ## Speed and memory benchmarks (not part of make test); BENCH_ARGS=--quick etc.
	$(PY) benchmarks/bench.py $(BENCH_ARGS)
	@if [ -f $(CT2_RUN)/best.pt ]; then $(PY) benchmarks/bench_decode.py $(CT2_RUN) data/test.en --ref data/test.de; \
	else echo "skipping mtkit vs CTranslate2 decoding speed: no $(CT2_RUN)/best.pt (run make demo first)"; fi

docs: $(STAMP) ## Regenerate docs/config.md from the comments in mtkit/config/schema.py
	$(PY) scripts/gen_config_doc.py

clean: ## Remove runs, caches and prepared data
	rm -rf runs prepared .pytest_cache .mypy_cache .ruff_cache

.PHONY: help install test test-fast lint format demo bench docs clean
