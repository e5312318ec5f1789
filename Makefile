# Two entry points for a fresh clone: `make demo` and `make test`.
# Both build .venv with exactly the versions uv.lock pins (every package,
# transitive ones included, checked against the lock's hashes); `make lock`
# refreshes the lock on purpose. uv itself is pinned below and installed with
# pip into .tools/, so a machine needs only Python, pip and make.
PYTHON     ?= python3
VENV       ?= .venv
BIN         = $(VENV)/bin
UV_VERSION  = 0.13.8
UV          = .tools/bin/uv
# Never download a Python: use the one named above. The venv is .venv here.
export UV_PYTHON_DOWNLOADS = never
export UV_PROJECT_ENVIRONMENT = $(VENV)
# Installed packages byte-compiled, as pip does: otherwise, with
# PYTHONDONTWRITEBYTECODE set, every process compiles httpx, aiohttp & co. again.
export UV_COMPILE_BYTECODE = 1

.PHONY: demo test lint typecheck unit lock locked-env test-bounds clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet 'uv==$(UV_VERSION)'

# --frozen: install what uv.lock says, never re-resolve; uv sync is exact, so
# anything not in the lock is removed from the venv.
$(BIN)/mirrorsync: pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --extra dev --python $(PYTHON) --quiet
	touch $@

demo: $(BIN)/mirrorsync
	cd "$$(mktemp -d)" && $(CURDIR)/$(BIN)/mirrorsync demo

# The environment holds exactly what the lock pins: fails on any extra, missing
# or different package.
locked-env: $(BIN)/mirrorsync
	$(UV) sync --frozen --extra dev --python $(PYTHON) --check

lint: $(BIN)/mirrorsync
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(BIN)/mirrorsync
	$(BIN)/mypy

# Two workers (pytest-xdist), a test file each at a time: most tests wait on
# sockets and child processes, so two keep both cores of a CI machine busy.
unit: $(BIN)/mirrorsync
	$(BIN)/pytest -q -n 2 --dist loadfile

test: locked-env lint typecheck unit

# Refresh the lock: newest releases within pyproject.toml's ranges. Run it on
# purpose (a dependency's fix or feature is wanted, or monthly), then run
# `make test` and commit pyproject.toml and uv.lock together.
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# The ranges users get, at both ends (.ci/test-bounds): not part of `make test`,
# since it resolves anew instead of installing the lock.
test-bounds: $(UV)
	UV=$(UV) PYTHON=$(PYTHON) bash .ci/test-bounds

clean:
	rm -rf $(VENV) .venv-lowest .venv-newest .tools build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
