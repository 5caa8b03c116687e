# Quickstart: `make demo` and `make test` each set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m distntk demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check .

$(VENV)/.bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	touch $(VENV)/.bench

bench: $(VENV)/.bench
	$(PY) bench/run_all.py

$(VENV)/.docs: $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[docs]'
	touch $(VENV)/.docs

# the documentation site into site/ (strict: a broken link or reference fails)
docs: $(VENV)/.docs
	$(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) stores reports site
