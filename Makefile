# `make demo` and `make test` create (or reuse) a virtualenv in $(VENV),
# install the project into it and run.
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= /tmp/inpaint_jax_demo
PYTEST_ARGS ?= -n 2
PY := $(VENV)/bin/python

.PHONY: install install-test demo test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(PY) -m launch.train --config=configs/glcic.py:runlocal --workdir=$(WORKDIR)
	$(PY) -m launch.demo_inpaint --workdir=$(WORKDIR)

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) build *.egg-info
