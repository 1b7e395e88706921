# Quick start: `make demo` runs the demo, `make test` runs the whole check suite.
# Both create .venv on first use and install what they need into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test demo bench soak lint typecheck docs clean

DEMO_STAMP := $(VENV)/.demo-stamp

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The demo needs only the package and its cli extra, not the dev toolchain.
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cli]'
	touch $(DEMO_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict src tests
	$(BIN)/pyright tests/typecheck_api.py

# The site (docs/ and the API reference from the docstrings) in site/; --strict
# turns a broken reference or a malformed docstring into a failure (not with
# --quiet, which hides the warnings that --strict counts).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: lint typecheck docs
	$(BIN)/python -m pytest

demo: $(DEMO_STAMP)
	$(BIN)/cohort demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Three minutes of mixed work on uvloop; fails if memory, fds, tasks or processes leak.
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak --minutes 3

clean:
	rm -rf $(VENV) build dist site .mypy_cache .ruff_cache
