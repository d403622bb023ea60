# Two entry points: `make demo` (set up, run the quickstart) and `make test` (set up, run the tests).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned to 2.13.0, the CPU build on this project's machines (pip finds it on their
# local wheel index); an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: setup demo test lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# The example third-party plugin (its own distribution) is installed beside hydraopt, as a user
# would install one, so the tests prove that hydraopt finds it through its entry point.
PLUGIN_EXAMPLE := examples/plugins/hydraopt-thick-wall

$(VENV)/.installed: $(BIN)/python pyproject.toml $(PLUGIN_EXAMPLE)/pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps -e $(PLUGIN_EXAMPLE)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/hydraopt run examples/quickstart.toml

test: setup
	$(BIN)/ruff check hydraopt plugins simulators tests benchmarks examples
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check hydraopt plugins simulators tests benchmarks examples
	$(BIN)/ruff format --check hydraopt plugins simulators tests benchmarks examples

docs: setup
	$(BIN)/python -m hydraopt.docgen docs/pipeline-toml.md

clean:
	rm -rf $(VENV) runs
