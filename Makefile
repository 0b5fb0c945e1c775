# Two entry points (README): `make verify` runs the main job, `make test` runs the test suite.
# Both create .venv with the package installed if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/dpolab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

.PHONY: verify test bench
verify: $(BIN)/dpolab
	$(BIN)/dpolab verify --out results/verify

test: $(BIN)/dpolab
	$(BIN)/python -m pytest -q

bench: $(BIN)/dpolab
	$(BIN)/dpolab bench
