# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ML100K ?= ../shared/data/ml-100k
OUT ?= out

.PHONY: demo test lint format typecheck pytest postgresql chromium test-slow eval-ml100k eval-shop bench bench-smoke interop clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.server: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[server]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.server

demo: $(VENV)/.server
	$(VENV)/bin/shelfrank demo --out demo-out

test: lint typecheck pytest bench-smoke

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# mypy cannot follow setuptools' editable import hook, so it checks a tree of links
# that lays the top-level folders out as the shelfrank package.
typecheck: $(VENV)/.dev
	rm -rf .typecheck && mkdir -p .typecheck/shelfrank
	for d in core datasets server client edge proto; do ln -s ../../$$d .typecheck/shelfrank/$$d; done
	cd .typecheck && ../$(VENV)/bin/mypy --config-file ../pyproject.toml -p shelfrank

pytest: $(VENV)/.dev interop postgresql chromium
	$(PY) -m pytest -q

# PostgreSQL for the PostgreSQL store's tests (tests/postgres.py starts a throwaway cluster).
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql \
	  || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql); fi

# Debian's Chromium for the dashboard's browser tests (tests/test_dashboard_browser.py),
# driven by Playwright with this browser: Playwright's own download cannot work here.
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
	  || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium); fi

# The Node.js client built from proto/ only (tests/test_interop_node.py); skipped where
# there is no npm.
interop: interop/node/node_modules/.installed

interop/node/node_modules/.installed: interop/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd interop/node && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the Node.js interop test will be skipped"; fi

test-slow: $(VENV)/.dev
	$(PY) -m pytest -q -m slow -rA

# The issue-2 acceptance figures on MovieLens-100k (reports and plots in $(OUT)/).
eval-ml100k: $(VENV)/.server
	mkdir -p $(OUT)
	$(VENV)/bin/shelfrank import-movielens --dir $(ML100K) --out $(OUT)/ml100k
	$(VENV)/bin/shelfrank evaluate --protocol given --interactions $(OUT)/ml100k/ua.base.csv \
	  --test $(OUT)/ml100k/ua.test.csv --items $(OUT)/ml100k/items.csv \
	  --users $(OUT)/ml100k/users.csv --relevant purchase --seed 1 --threads 1 \
	  --validation-split random --models hybrid,hybrid-lightfm,ease,lightfm-cf,popularity,user-knn \
	  --json $(OUT)/given.json --plot $(OUT)/given.png
	$(VENV)/bin/shelfrank evaluate --protocol temporal --interactions $(OUT)/ml100k/u.data.csv \
	  --items $(OUT)/ml100k/items.csv --users $(OUT)/ml100k/users.csv --relevant purchase \
	  --test-days 30 --seed 1 --threads 1 --json $(OUT)/temporal.json --plot $(OUT)/temporal.png
	$(VENV)/bin/shelfrank evaluate --protocol cold-items --interactions $(OUT)/ml100k/ua.base.csv \
	  --items $(OUT)/ml100k/items.csv --users $(OUT)/ml100k/users.csv --relevant purchase \
	  --split-seed 42 --seed 1 --threads 1 --models hybrid,lightfm-cf,popularity \
	  --json $(OUT)/cold-items.json --plot $(OUT)/cold-items.png
	$(VENV)/bin/shelfrank evaluate --protocol fold-in --interactions $(OUT)/ml100k/ua.base.csv \
	  --test $(OUT)/ml100k/ua.test.csv --items $(OUT)/ml100k/items.csv \
	  --users $(OUT)/ml100k/users.csv --relevant purchase --seed 1 --threads 1 \
	  --json $(OUT)/fold-in.json
	$(VENV)/bin/shelfrank evaluate --protocol edge-replay --interactions $(OUT)/ml100k/u.data.csv \
	  --items $(OUT)/ml100k/items.csv --users $(OUT)/ml100k/users.csv --seed 1 --threads 1 \
	  --json $(OUT)/edge-replay.json --plot $(OUT)/edge-replay.png
	$(VENV)/bin/shelfrank evaluate --protocol given --interactions $(OUT)/ml100k/ua.base.csv \
	  --test $(OUT)/ml100k/ua.test.csv --items $(OUT)/ml100k/items.csv \
	  --users $(OUT)/ml100k/users.csv --relevant purchase --seed 1 --threads 1 \
	  --validation-split random --models hybrid,lightfm-cf,popularity --group-by gender \
	  --group-by age --exposure-by genre --diversity-by genre \
	  --json $(OUT)/fairness.json --plot $(OUT)/fairness.png
	$(VENV)/bin/shelfrank evaluate --protocol tradeoffs --interactions $(OUT)/ml100k/ua.base.csv \
	  --test $(OUT)/ml100k/ua.test.csv --items $(OUT)/ml100k/items.csv \
	  --users $(OUT)/ml100k/users.csv --relevant purchase --seed 1 --threads 1 \
	  --validation-split random --diversity-by genre \
	  --json $(OUT)/tradeoffs.json --plot $(OUT)/tradeoffs.png

# The temporal protocol on a synthetic shop with repeat purchases, trends and arrivals.
eval-shop: $(VENV)/.server
	mkdir -p $(OUT)
	$(VENV)/bin/shelfrank synth --shop --items 5000 --users 5000 --events 300000 --seed 1 \
	  --out $(OUT)/shop5k
	$(VENV)/bin/shelfrank evaluate --protocol temporal --interactions $(OUT)/shop5k/interactions.csv \
	  --items $(OUT)/shop5k/items.csv --users $(OUT)/shop5k/users.csv --relevant purchase \
	  --test-days 30 --seed 1 --threads 1 --json $(OUT)/shop-temporal.json \
	  --plot $(OUT)/shop-temporal.png

# Every benchmark (minutes; results, plots and tables in benchmarks/results/).
bench: $(VENV)/.dev
	$(VENV)/bin/shelfrank bench

# The same benchmarks at tiny sizes (part of `make test`; checks they run, measures nothing).
bench-smoke: $(VENV)/.dev chromium
	$(VENV)/bin/shelfrank bench --smoke --out-dir $(OUT)/bench-smoke

clean:
	rm -rf .typecheck .mypy_cache .ruff_cache .pytest_cache demo-out $(OUT) interop/node/node_modules
