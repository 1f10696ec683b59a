# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

$(BIN)/deepcodes: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/deepcodes

demo: install
	$(BIN)/deepcodes demo --out demo-results

test: install
	$(BIN)/python -m pytest -n 2

bench: install
	$(BIN)/python bench/bench_exact.py

clean:
	rm -rf $(VENV) demo-results .pytest_cache
