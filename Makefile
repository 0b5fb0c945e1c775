# Two entry points (README): `make verify` runs the main job, `make test` runs the test suite.
# Both create .venv with the package installed if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Real data for the real-embedding track: the shared data folder beside the checkout, unless set.
PERSONA_DIR ?= $(abspath $(CURDIR)/../shared/data/anthropic-evals/persona)
HH_PATH ?= $(abspath $(CURDIR)/../shared/data/hh-rlhf/harmless-base-test.jsonl.gz)

$(BIN)/dpolab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU build of torch first, so the llm extra's range is already satisfied
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,distributed,llm,data]'
	touch $@

.PHONY: verify test bench gallery
verify: $(BIN)/dpolab
	$(BIN)/dpolab verify

test: $(BIN)/dpolab
	DPOLAB_PERSONA_DIR="$${DPOLAB_PERSONA_DIR:-$(PERSONA_DIR)}" \
	DPOLAB_HH_PATH="$${DPOLAB_HH_PATH:-$(HH_PATH)}" $(BIN)/python -m pytest -q -n auto --dist worksteal

bench: $(BIN)/dpolab
	$(BIN)/dpolab bench

# The README's gallery, regenerated from a full repro run drawn with the screen preset at text width
# (an interrupted run in build/repro is resumed)
gallery: $(BIN)/dpolab
	DPOLAB_PERSONA_DIR="$${DPOLAB_PERSONA_DIR:-$(PERSONA_DIR)}" DPOLAB_HH_PATH="$${DPOLAB_HH_PATH:-$(HH_PATH)}" \
	$(BIN)/dpolab repro --out build/repro $(if $(wildcard build/repro/manifest.json),--resume,) \
		--style screen --width text
	$(BIN)/python -m dpolab.paper_repro.gallery build/repro docs/gallery
