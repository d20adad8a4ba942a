# ShopML: the README's commands. `make demo` and `make test` each set up .venv from the
# committed lock file first, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp changes whenever the lock or the project metadata does, forcing a reinstall.
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup browser demo up down up-production down-production test lint typecheck unit format lock bench clean

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; ShopML needs Python 3.11 (set PYTHON=...)"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	@rm -f $(VENV)/.installed-*
	@touch $@

setup: $(STAMP)  ## create .venv and install the locked dependencies

demo: setup  ## the main job: Airflow retrains, a reviewer approves, the model is promoted (see README)
	$(BIN)/python -m pipelines.orchestration.demo demo

up: setup  ## start the embedded stack (Airflow on SQLite, LocalExecutor) and leave it running
	$(BIN)/python -m pipelines.orchestration.demo up

down: setup  ## stop the stack `make up` started
	$(BIN)/python -m pipelines.orchestration.demo down

up-production: setup  ## the production shape on this machine (SHOPML_ENV=production and its settings: infra/README.md)
	$(BIN)/shopml stack up --profile production

down-production: setup  ## stop what `make up-production` started
	$(BIN)/shopml stack down --profile production

test: lint typecheck unit  ## everything CI runs

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup browser
	$(BIN)/pytest

# The preview page's browser test drives Debian's Chromium through Playwright (no browser
# download). Installed here when missing and this user may (root with apt-get); otherwise
# the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test (apt-get)"; \
	    (apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	     { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }) || \
	    echo "could not install chromium: the browser test will skip"; \
	  else echo "chromium missing and not root: the browser test will skip"; fi; }

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock:  ## re-resolve requirements.lock from pyproject.toml (needs .venv for uv)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu --no-header --annotation-style line -o requirements.lock

bench: setup  ## the benchmarks (write benchmarks/results/*.json; see docs/benchmarks.md)
	$(BIN)/python benchmarks/bench_generator.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_recommend.py --events 1000000 10000000
	$(BIN)/python benchmarks/bench_train.py --events 10000000
	$(BIN)/python benchmarks/bench_evaluate.py --events 1000000

clean:
	rm -rf $(VENV) .shopml .pytest_cache .mypy_cache .ruff_cache
