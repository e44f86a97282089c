# Ping'an Dispatch — the stable interface for users, CI and reviewers.
#   make demo   the whole pipeline with the demo city, a device simulator and a live summary
#   make test   the whole test suite against real Postgres, Mosquitto and Kafka
#   make up / make down   the local stack (data kept in .stack/)

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The test suite runs on a stack of its own (other ports, .stack-test/), so it never
# disturbs a running demo.
TEST_STACK_ENV := PINGAN_STACK_DIR=$(CURDIR)/.stack-test PINGAN_PG_PORT=55433 \
	PINGAN_MQTT_PORT=18831 PINGAN_KAFKA_PORT=19094 PINGAN_KAFKA_CONTROLLER_PORT=19095

.PHONY: help venv up down status wipe migrate seed demo run simulate test test-fast lint schemas bench bench-full \
	test-stack-down chaos fuzz

help:
	@echo "make demo      run everything with the demo city and a device simulator (Ctrl-C stops)"
	@echo "make test      run the test suite against the real services (starts them)"
	@echo "make up|down   start / stop the local stack (Postgres, Mosquitto, Kafka); data kept"
	@echo "make status    show the local stack"
	@echo "make wipe      stop the local stack and delete its data"
	@echo "make bench     the benchmark, quick (a few minutes); make bench-full for all of it"
	@echo "make chaos     the fault suite and its ledger, then the fuzz run (ARGS=--short: a few minutes; make fuzz: the fuzz run alone)"
	@echo "make lint      ruff and mypy"
	@echo "make schemas   regenerate the JSON Schema documents from schemas/"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

up:
	deploy/stack.sh up

down:
	deploy/stack.sh down

status:
	deploy/stack.sh status

wipe:
	deploy/stack.sh wipe

migrate: venv up
	$(BIN)/dispatch migrate

seed: migrate
	$(BIN)/dispatch seed-demo

demo: venv up
	$(BIN)/dispatch migrate
	$(BIN)/dispatch seed-demo
	$(BIN)/dispatch demo

run: venv up
	$(BIN)/dispatch migrate
	$(BIN)/dispatch run

simulate: venv
	$(BIN)/dispatch simulate

# pytest exits 5 when it collected no tests: for this suite that is a failure, said plainly.
test: venv
	$(TEST_STACK_ENV) deploy/stack.sh up
	deploy/browser.sh
	@$(TEST_STACK_ENV) $(BIN)/python -m pytest $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): treating as a failure"; exit 1; fi; \
	exit $$rc

test-stack-down:
	$(TEST_STACK_ENV) deploy/stack.sh down

# The benchmark runs on a stack of its own (.stack-bench/, other ports).
bench: venv
	$(BIN)/python -m bench.run $(ARGS)

bench-full: venv
	$(BIN)/python -m bench.run --full $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

schemas: venv
	$(BIN)/python -m schemas.generate

# Fault injection on a stack of its own (.stack-chaos/, other ports; a three-broker Kafka
# cluster of its own for kill-kafka-broker): ARGS="--short" for ~10 s a scenario,
# ARGS="--only cut-postgres-blackhole kill-kafka-broker" for some of them.
chaos: venv
	$(BIN)/python -m chaos.run $(ARGS)
	$(BIN)/python -m chaos.fuzz --inputs $(FUZZ_INPUTS)

# A million generated inputs through every parser of outside input (no services needed).
FUZZ_INPUTS ?= 1000000
fuzz: venv
	$(BIN)/python -m chaos.fuzz --inputs $(FUZZ_INPUTS)
