# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint typecheck unit clean

$(BIN)/mirrorsync: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/mirrorsync
	cd "$$(mktemp -d)" && $(CURDIR)/$(BIN)/mirrorsync demo

lint: $(BIN)/mirrorsync
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(BIN)/mirrorsync
	$(BIN)/mypy

unit: $(BIN)/mirrorsync
	$(BIN)/pytest -q

test: lint typecheck unit

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
