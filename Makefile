# Quick start: `make demo` runs the demo, `make test` runs the whole check suite.
# Both create .venv on first use and install what they need into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test demo bench soak lint typecheck docs pytest clean redis-server

DEMO_STAMP := $(VENV)/.demo-stamp

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The demo needs only the package and its cli extra, not the dev toolchain.
$(DEMO_STAMP): pyproject.toml
	@echo "make demo: installing cohort and its cli extra into $(VENV) (first use, or a new pyproject.toml): about a minute"
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

# Lint first (a second), then the type checkers, the site and the test suite side
# by side, each one's output printed whole when it ends: the suite spends much
# of its time waiting on servers and worker processes, and the checkers fit in
# those gaps even on 2 cores.
test: lint
	@echo "make test: mypy, pyright, the site and the suite (3 processes) side by side;"
	@echo "  each one's output comes when it ends"
	@$(MAKE) --no-print-directory -j4 --output-sync=target typecheck docs pytest

# The suite in 3 processes (pytest-xdist): much of it waits on servers, worker
# processes and subprocesses, so a third process fills those waits even on 2
# cores (make test: 2 min 46 s with 2, 2 min 16 s with 3 on a 2-core machine). Bytecode caches on even
# where the environment turns them off: the suite starts many Python
# processes (the CLI, examples, workers), and each would compile cohort again.
# The Postgres durability tests start throw-away clusters: scripts/ensure-postgres
# installs the server binaries (Debian, as root) or says what to do (they skip).
pytest: $(STAMP) redis-server
	@sh scripts/ensure-postgres
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n 3

# The cohort.redis tests run against a real redis-server: install it where we
# may (root, apt-get), else say how; without it those tests skip.
redis-server:
	@scripts/ensure-redis

demo: $(DEMO_STAMP)
	@echo "make demo: cohort demo: a web fan-out service under load (3 strategies x 3 key sets),"
	@echo "  an outage drill (2 runs of 3.5 s) and an ETL pipeline, all on 127.0.0.1, no network;"
	@echo "  about 20 seconds (Ctrl-C stops it and says what had finished)"
	@start=$$(date +%s); $(BIN)/cohort demo; status=$$?; \
	echo "make demo: took $$(( $$(date +%s) - start )) s"; exit $$status

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Three minutes of mixed work on uvloop; fails if memory, fds, tasks or processes leak.
# Then the long versions of tests that `make test` runs short (pytest marker soak):
# the property tests at full length, the demos with their defaults (a few minutes).
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak --minutes 3
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -m soak

clean:
	rm -rf $(VENV) build dist site .mypy_cache .ruff_cache
