# Two entry points: `make run` starts the example stack, `make test` runs the suite.
# `make pyz` builds dist/flowlayer.pyz, the server and client in one file for vendoring.
# Each builds the virtual environment it needs from the requirements files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench soak flood tui pyz clean

$(BIN)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(BIN)/.dev: requirements-dev.txt $(BIN)/.runtime
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

run: $(BIN)/.runtime
	$(BIN)/python flowlayer.py -c examples/stack/flowlayer.jsonc

tui: $(BIN)/.runtime
	$(BIN)/python tui.py -config examples/stack/flowlayer.jsonc

test: $(BIN)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(BIN)/.dev
	for b in config capture logstore session ansi tui reload readiness boot; do $(BIN)/python bench/$$b.py || exit 1; done

soak: $(BIN)/.dev
	$(BIN)/python bench/soak.py --minutes 10

pyz: $(BIN)/.runtime
	$(BIN)/python tools/build_pyz.py dist/flowlayer.pyz

flood: $(BIN)/.dev
	$(BIN)/python bench/flood.py --seconds 60

clean:
	rm -rf $(VENV) .pytest_cache dist
