# PlateletWatch developer commands. `make run` and `make test` install what they need on first use.
.DEFAULT_GOAL := help
SHELL := /bin/sh

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install tools run test lint check-schemas schemas bench chaos failover fuzz lock clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml requirements/dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "PlateletWatch needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

install: $(STAMP) ## create .venv and install the project with its pinned dependencies

run: $(STAMP) ## migrate the notifier's database, then start everything: embedded broker, topics, ingest, classifier, notifier, demo pager
	$(BIN)/plateletwatch db upgrade
	$(BIN)/plateletwatch run

lint: $(STAMP) ## ruff (lint + format), mypy on services/, schemas/, chaos/ and fuzz/, and the import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

check-schemas: $(STAMP) ## fail if schemas/json/ has drifted from the pydantic models
	$(BIN)/plateletwatch schemas --check

schemas: $(STAMP) ## regenerate schemas/json/ from the pydantic models
	$(BIN)/plateletwatch schemas

# command:package; a command with a path (a glob) is looked for there, as the PostgreSQL server's
# binaries are in /usr/lib/postgresql/<version>/bin, not on PATH.
DEBIAN_TOOLS := promtool:prometheus chromium:chromium /usr/lib/postgresql/*/bin/initdb:postgresql
KAFKA_JARS := .plateletwatch/kafka-jars

tools: ## Debian's prometheus, chromium and postgresql where apt-get runs as root; Apache Kafka's jars where java and mvn exist
	@for tool in $(DEBIAN_TOOLS); do command=$${tool%%:*}; package=$${tool##*:}; \
		command -v $$command >/dev/null 2>&1 && continue; \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$package >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$package >/dev/null 2>&1; }; } \
		&& echo "installed Debian's $$package"; } \
		|| echo "$$package unavailable here: the tests needing it will say so and skip"; \
	done
	@if [ ! $(KAFKA_JARS)/.fetched -nt deploy/kafka-jars/pom.xml ]; then \
		if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then \
			rm -rf $(KAFKA_JARS) && mvn -q -B -Dstyle.color=never -f deploy/kafka-jars/pom.xml dependency:copy-dependencies \
				-DoutputDirectory="$(CURDIR)/$(KAFKA_JARS)" && touch $(KAFKA_JARS)/.fetched \
			&& echo "fetched Apache Kafka's jars into $(KAFKA_JARS) (PLATELETWATCH_BROKER=kafka)" \
			|| echo "could not fetch Apache Kafka's jars: the tests needing them will say so and skip"; \
		else echo "java or mvn missing: no Apache Kafka jars; the tests needing them will say so and skip"; fi; \
	fi

test: lint check-schemas tools ## the whole gate: lint, schema drift, all tests against a real broker
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP) ## ingest vs raw producer, replay vs JSON decode, classifier vs raw consumer, notifier alerts/s; writes bench-results.json
	$(BIN)/python -m benchmarks.ingest_throughput
	$(BIN)/python -m benchmarks.replay_throughput
	$(BIN)/python -m benchmarks.classifier_engine
	$(BIN)/python -m benchmarks.classifier_throughput
	$(BIN)/python -m benchmarks.notifier_throughput
	$(BIN)/python -m benchmarks.result_to_page

chaos: $(STAMP) ## SIGKILL every service again and again under load; 0 lost, 0 paged twice; writes chaos-results.json
	$(BIN)/python -m chaos

failover: $(STAMP) tools ## 3-node Kafka, 3 classifiers, 2 notifiers: kill the leader broker, a classifier, a notifier; writes failover-results.json
	$(BIN)/python -m chaos --failover

FUZZ_SECONDS ?= 300

fuzz: $(STAMP) ## fuzz the HL7, FHIR, JSON and context readers, FUZZ_SECONDS each (300); writes fuzz-results.json
	nice -n 10 $(BIN)/python -m fuzz --seconds $(FUZZ_SECONDS)

# LOCK_ARGS=--upgrade moves every pin to the newest release pyproject.toml allows.
LOCK_ARGS ?=
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 \
	--custom-compile-command 'make lock' $(LOCK_ARGS)
lock: $(STAMP) ## pin the tree with hashes: requirements/runtime.txt (the image), requirements/dev.txt (make install)
	$(UV_COMPILE) -o requirements/runtime.txt
	$(UV_COMPILE) --extra dev -o requirements/dev.txt

clean: ## remove the virtualenv, caches and local state
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .plateletwatch
