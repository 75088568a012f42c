# gclib: two commands for a fresh machine (see README.md).
#   make reproduce   set up .venv, install, run every notebook with its cpu parameter sets into results/
#   make test        set up .venv, install, run the unit tests and nbval on notebooks/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gclib-installed

.PHONY: setup test test-unit reproduce bench lab clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider

test-unit: setup
	$(PY) -m pytest tests -p no:cacheprovider

reproduce: setup
	$(PY) -m gclib reproduce

bench: setup
	$(PY) benchmarks/run_all.py

lab: setup
	$(PY) -m jupyter lab --ip=127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root,) --ServerApp.root_dir=.

clean:
	rm -rf .pytest_cache build *.egg-info
