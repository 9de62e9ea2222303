# Two commands on a fresh machine: `make quickstart` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
DATA ?=

.PHONY: install quickstart test lint bench

$(BIN)/bstrec: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel on this disk; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[dev,serve]'
	touch $(BIN)/bstrec

install: $(BIN)/bstrec
	@# the browser test (tests/serve) drives Debian's Chromium; as root (CI) install it, else it skips
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "warning: could not install chromium; the browser test will say so"

quickstart: install
	$(BIN)/bstrec quickstart $(if $(DATA),--data $(DATA),)

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/parse_speed.py
