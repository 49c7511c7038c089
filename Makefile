# Two commands for users: `make run` (install + start on the embedded Redis) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test bench-quality bench-throughput lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/streambalance serve

test: install
	$(BIN)/python -m pytest

bench-quality: install
	$(BIN)/python -m bench.quality

bench-throughput: install
	$(BIN)/python -m bench.throughput

lint: install
	$(BIN)/ruff check models service bench tests
	$(BIN)/mypy models service
