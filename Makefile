# One API built twice, one contract, one shared suite. Everything runs from the root venv .venv.
# Targets are an interface (the README, CI and the services' helpers rely on the names).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVICE_DIRS := flask_service fastapi_service
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help env compare compare-suite conformance test lint unit suite faults deploy-check bench \
	k8s-loadtest k6-merge up clean

help:
	@echo "make compare  k6 comparison of both services (+ bare apps) at 100 and 1,000 users (COMPARE_USERS),"
	@echo "              ~10 min: reports/compare.md + compare.html (charts, the article's claims), prints the table"
	@echo "make compare-suite  the functional suite's per-operation Flask/FastAPI table (not a benchmark)"
	@echo "make test     everything: lint + type checks, each service's unit tests, the shared suite"
	@echo "make lint     ruff check, ruff format --check and mypy in each service and in tests/"
	@echo "make unit     each service's own tests, from its folder"
	@echo "make suite    the shared suite over every row (SERVICES=..., BACKENDS=... to narrow);"
	@echo "              it includes tests/conformance (Schemathesis, drift, differential), quick budget"
	@echo "make conformance  the conformance suite, deep budget; writes reports/conformance.md + JUnit"
	@echo "make faults   the fault suite's full variants (tests/faults): load + PostgreSQL restart, Redis"
	@echo "              outage, worker SIGKILL, SIGTERM drain, on both services; prints the figures"
	@echo "make deploy-check  Dockerfiles, compose, Kubernetes manifests: validate, lint, run each command"
	@echo "make bench    k6 load tests on both services + bare apps (USERS=100|1000|10000, REPEAT, DURATION, SCENARIOS): reports/compare.md"
	@echo "make k8s-loadtest SERVICE=flask|fastapi USERS=100|1000|10000 [SCENARIO=crud|stream|jobs]"
	@echo "             distributed k6 run on the current kubectl cluster (k6-operator), collected and"
	@echo "             merged into reports/k8s/<run>/merged.md; says so and applies nothing without a cluster"
	@echo "make k6-merge RUN=dir  merge k6 runners' samples (*.lp) and summaries (summary-<n>.json) in dir"
	@echo "make up       both services and their workers: Flask :8001, FastAPI :8002 (Ctrl-C stops)"
	@echo "make clean    remove the venv, reports and caches"

# The venv itself is a file target; the stamp re-installs when a pyproject or requirements changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): $(BIN)/python flask_service/pyproject.toml fastapi_service/pyproject.toml tests/requirements.txt
	$(BIN)/python -m pip install -e './flask_service[dev]' -e './fastapi_service[dev]' \
		-r tests/requirements.txt
	touch $@

env: $(STAMP)

# The k6 comparison (loadtests/runner.py --compare): both services + a bare app per framework at
# COMPARE_USERS, each scenario once per size (COMPARE_REPEAT) with a COMPARE_DURATION window, then
# the 100,000-item export; PostgreSQL / Redis when DATABASE_URL / REDIS_URL are set, the embedded
# default otherwise. Writes reports/compare.md + reports/compare.html and prints the table. Budget
# on 2 cores: 20 k6 runs x (6 s window + 2 s preparation + up to 10 s graceful stop for streams and
# jobs + seeding / bare-app start) ~ 6-7 minutes, server start ~1 minute, the two exports ~1 minute.
COMPARE_USERS ?= 100,1000
COMPARE_REPEAT ?= 1
COMPARE_DURATION ?= 6s
compare: $(STAMP)
	$(BIN)/python loadtests/runner.py --compare --users $(COMPARE_USERS) --repeat $(COMPARE_REPEAT) \
		--duration $(COMPARE_DURATION) $(BENCH_ARGS)

# The functional suite's side-by-side table (pytest --compare-report): per contract operation,
# tests passed/failed, statuses seen, median latency of the behaviour tests (not a benchmark).
compare-suite: $(STAMP)
	$(BIN)/python -m pytest tests --compare-report -q --ignore=tests/conformance --ignore=tests/deploy \
		--ignore=tests/browser $(PYTEST_ARGS)

# Schemathesis (all phases, all checks), spec drift and the differential run with the deep budget
# against both services on PostgreSQL; the quick budget of the same tests runs inside `make suite`.
conformance: $(STAMP)
	$(BIN)/python tests/conformance/deep.py $(PYTEST_ARGS)

# Every part runs even when an earlier one fails, so one run reports everything.
test: $(STAMP)
	@status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	$(MAKE) --no-print-directory unit || status=1; \
	$(MAKE) --no-print-directory suite || status=1; \
	$(MAKE) --no-print-directory deploy-check || status=1; \
	if [ $$status -ne 0 ]; then echo "make test: FAILED (see above)"; else echo "make test: OK"; fi; \
	exit $$status

lint: $(STAMP)
	@status=0; for svc in $(SERVICE_DIRS); do \
		echo "== $$svc: ruff check, ruff format --check, mypy"; \
		(cd $$svc && ../$(BIN)/ruff check . && ../$(BIN)/ruff format --check . \
			&& ../$(BIN)/mypy) || status=1; \
	done; \
	echo "== tests: ruff check, ruff format --check, mypy"; \
	$(BIN)/ruff check --config tests/ruff.toml tests || status=1; \
	$(BIN)/ruff format --check --config tests/ruff.toml tests || status=1; \
	(cd tests && ../$(BIN)/mypy --config-file mypy.ini .) || status=1; \
	echo "== loadtests: ruff check, ruff format --check, mypy"; \
	$(BIN)/ruff check --config tests/ruff.toml loadtests || status=1; \
	$(BIN)/ruff format --check --config tests/ruff.toml loadtests || status=1; \
	(cd loadtests && MYPYPATH=../tests ../$(BIN)/mypy --config-file ../tests/mypy.ini runner.py report.py \
		claims.py merge.py collector.py k8s_run.py seed.py profile_read.py bare) \
		|| status=1; \
	exit $$status

unit: $(STAMP)
	@status=0; for svc in $(SERVICE_DIRS); do \
		echo "== $$svc: unit tests"; \
		(cd $$svc && ../$(BIN)/python -m pytest -q) || status=1; \
	done; exit $$status

suite: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/deploy $(PYTEST_ARGS)

# The fault suite's full variants: longer load, more clients, repeated faults (tests/faults; the
# short variants run inside `make suite`). Each test prints its figures in the terminal summary.
faults: $(STAMP)
	FAULTS_FULL=1 $(BIN)/python -m pytest tests/faults $(PYTEST_ARGS)

# k6 scenarios (crud, stream, jobs, read) against both services and a bare app per framework,
# interleaved and repeated; writes reports/compare.md and the raw k6 JSON under reports/bench/.
USERS ?= 100
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python loadtests/runner.py --users $(USERS) $(BENCH_ARGS)

# Distributed load test on the cluster kubectl points at (k6-operator installed, the service's
# overlay applied): renders deploy/k8s/overlays/loadtest/users-$(USERS) for $(SERVICE), applies it,
# waits, collects the runners' summaries and samples, merges them (deploy/README.md).
SERVICE ?= flask
SCENARIO ?= crud
k8s-loadtest: $(STAMP)
	$(BIN)/python loadtests/k8s_run.py --service $(SERVICE) --users $(USERS) --scenario $(SCENARIO)

# Merge the outputs of k6 runners collected by hand (RUN=reports/k8s/<run>): merged.json + merged.md.
RUN ?=
k6-merge: $(STAMP)
	@test -n "$(RUN)" || { echo "make k6-merge RUN=<folder with *.lp and summary-<n>.json>"; exit 2; }
	$(BIN)/python loadtests/merge.py $(RUN)

# Dockerfiles, compose and the Kubernetes manifests: rendered, validated, linted, and every
# container command run as a local process. The tools (checkov, kubernetes-validate, hadolint)
# live in their own venv: checkov's pins would fight the suite's.
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
$(DEPLOY_STAMP): tests/deploy/requirements.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install -r tests/deploy/requirements.txt
	touch $@

deploy-check: $(STAMP) $(DEPLOY_STAMP)
	$(BIN)/python -m pytest tests/deploy $(PYTEST_ARGS)

# Both services and their Celery workers in the foreground on the embedded defaults (or
# DATABASE_URL / REDIS_URL when set; FLASK_DATABASE_URL / FASTAPI_DATABASE_URL give each its own
# database). Each worker runs from its service's folder, so they share VAR_DIR (./var) and with it
# the embedded broker. Ctrl-C stops all four.
FLASK_DATABASE_URL ?= $(DATABASE_URL)
FASTAPI_DATABASE_URL ?= $(DATABASE_URL)
up: $(STAMP)
	@set -e; \
	$(if $(FLASK_DATABASE_URL),(cd flask_service && DATABASE_URL='$(FLASK_DATABASE_URL)' \
		../$(BIN)/python -m flask_service.migrate);) \
	$(if $(FASTAPI_DATABASE_URL),(cd fastapi_service && DATABASE_URL='$(FASTAPI_DATABASE_URL)' \
		../$(BIN)/python -m fastapi_service.migrate);) \
	set +e; \
	(cd flask_service && exec env PORT=8001 \
		$(if $(FLASK_DATABASE_URL),DATABASE_URL='$(FLASK_DATABASE_URL)') \
		../$(BIN)/python -m flask_service) & flask=$$!; \
	(cd fastapi_service && exec env PORT=8002 \
		$(if $(FASTAPI_DATABASE_URL),DATABASE_URL='$(FASTAPI_DATABASE_URL)') \
		../$(BIN)/python -m fastapi_service) & fastapi=$$!; \
	(cd flask_service && exec env \
		$(if $(FLASK_DATABASE_URL),DATABASE_URL='$(FLASK_DATABASE_URL)') \
		../$(BIN)/python -m flask_service.worker) & flask_worker=$$!; \
	(cd fastapi_service && exec env \
		$(if $(FASTAPI_DATABASE_URL),DATABASE_URL='$(FASTAPI_DATABASE_URL)') \
		../$(BIN)/python -m fastapi_service.worker) & fastapi_worker=$$!; \
	all="$$flask $$fastapi $$flask_worker $$fastapi_worker"; \
	trap 'kill -TERM $$all 2>/dev/null' INT TERM; \
	echo "Flask on http://127.0.0.1:8001, FastAPI on http://127.0.0.1:8002, a Celery worker beside each (Ctrl-C stops all)"; \
	wait $$all; kill -TERM $$all 2>/dev/null; wait

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) reports .pytest_cache tests/.pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . \( -name .mypy_cache -o -name .ruff_cache -o -name .pytest_cache -o -name .hypothesis \
		-o -name '*.egg-info' \) \
		-type d -prune -exec rm -rf {} +
