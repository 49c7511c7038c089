# Two commands for users: `make run` (install + start on the embedded Redis) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch comes first, as the CPU build from PyTorch's CPU index: no CUDA libraries (several GB
# less than the default Linux build). Where that index cannot be reached, pip's default index
# supplies torch instead, with a warning. TORCH_INDEX=<another PyTorch index> picks another
# build; TORCH_INDEX= uses pip's default index. The pin is pyproject.toml's.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH       := $(shell sed -n 's/^ *"\(torch==[^"]*\)",*$$/\1/p' pyproject.toml)
REACHABLE   := import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)

.PHONY: install run test bench-quality bench-throughput lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@if [ -z "$(TORCH_INDEX)" ]; then \
	    $(BIN)/pip install --quiet '$(TORCH)'; \
	elif $(BIN)/python -c '$(REACHABLE)' '$(TORCH_INDEX)/torch/' 2>/dev/null; then \
	    echo "make install: $(TORCH) from $(TORCH_INDEX)"; \
	    $(BIN)/pip install --quiet --index-url '$(TORCH_INDEX)' '$(TORCH)'; \
	else \
	    echo "make install: $(TORCH_INDEX) is unreachable; $(TORCH) comes from pip's default" \
	         "index (on Linux that build may bring the CUDA libraries)" >&2; \
	    $(BIN)/pip install --quiet '$(TORCH)'; \
	fi
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
