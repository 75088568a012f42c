# gclib: two commands for a fresh machine (see README.md).
#   make reproduce   set up .venv, install, run every notebook with its cpu parameter sets into results/
#   make test        set up .venv, install, run the unit tests and nbval on notebooks/
#   make reproduce-compare   a fresh reproduction of HEAD in a temporary clone, set against the committed results
# setup installs gclib[all] editable, pinned by constraints.txt (the versions the tests pass with);
# `make constraints` rewrites constraints.txt from what .venv holds now.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gclib-installed

.PHONY: setup constraints test test-unit test-wheel reproduce reproduce-compare reproduce-long reproduce-status bench lab clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all]"
	@touch $(STAMP)

setup: $(STAMP)

# Refresh constraints.txt from the venv (pip freeze without the editable gclib), written to a temporary file in
# this folder and renamed over the old one, so an interrupted or failed freeze never leaves a partial file. The
# venv then matches the new file, so an up-to-date install stamp stays up to date (no needless reinstall).
constraints:
	@test -x $(PY) || { echo "make constraints: $(PY) not found; run 'make setup' first" >&2; exit 1; }
	@set -e; tmp=constraints.txt.tmp.$$$$; trap 'rm -f "$$tmp" "$$tmp.raw"' EXIT; \
	$(PY) -m pip freeze --exclude-editable > "$$tmp.raw"; \
	grep -q '^torch==' "$$tmp.raw" || { echo "make constraints: no torch in pip freeze; constraints.txt left as it was" >&2; exit 1; }; \
	{ echo "# Exact versions the test-suite passes with (pip freeze of .venv, Python $$($(PY) -c 'import platform; print(platform.python_version())'))."; \
	  echo "# Used as: pip install -c constraints.txt -e \".[all]\"  (make setup). Refresh: make constraints."; \
	  grep -v '^#' "$$tmp.raw"; } > "$$tmp"; \
	up_to_date=no; test -f $(STAMP) && test $(STAMP) -nt pyproject.toml && up_to_date=yes; \
	mv "$$tmp" constraints.txt; \
	if [ "$$up_to_date" = yes ]; then touch $(STAMP); fi
	@echo "constraints.txt: $$(grep -c '==' constraints.txt) pinned packages from $(VENV)"

# pytest-xdist: one worker per core (at most 8), each on one torch/BLAS thread unless OMP_NUM_THREADS is set;
# --dist loadscope keeps a module (its module-scoped fixtures) and a notebook (its kernel) on one worker.
PYTEST := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -n auto --maxprocesses=8 --dist loadscope
test: setup
	$(PYTEST) tests notebooks --nbval-lax -p no:cacheprovider --durations=12

test-unit: setup
	$(PYTEST) tests -p no:cacheprovider

# The wheel alone (also part of make test): build it, install it into a fresh environment, train a preset by name
test-wheel: setup
	$(PYTEST) tests -m wheel -p no:cacheprovider

reproduce: setup
	$(PY) -m gclib reproduce

# A fresh reproduction of the committed code (HEAD), set against the committed results (gclib reproduce --compare):
# HEAD is cloned into a temporary folder, its results/ emptied, and `gclib reproduce` run there with this .venv (the
# clone's gclib first on PYTHONPATH; an empty run cache unless GCLIB_RUNS is set); the clone is kept for inspection.
# Exit status 1 when a verdict changed. REPRODUCE_ARGS narrows both steps, e.g. REPRODUCE_ARGS="--only toy_flows".
REPRODUCE_ARGS ?=
reproduce-compare: setup
	@set -e; dir=$$(mktemp -d "$${TMPDIR:-/tmp}/gclib-reproduce.XXXXXX"); py=$$(cd $(dir $(PY)) && pwd)/$(notdir $(PY)); \
	git clone --quiet --no-hardlinks . "$$dir/clone"; rm -rf "$$dir"/clone/results/*/; \
	echo "reproducing HEAD ($$(git rev-parse --short HEAD)) in $$dir/clone"; \
	(cd "$$dir/clone" && PYTHONPATH="$$dir/clone" "$$py" -m gclib reproduce $(REPRODUCE_ARGS)); \
	$(PY) -m gclib reproduce --compare "$$dir/clone/results" $(REPRODUCE_ARGS)

# The long CPU profiles (params/*/cpu_long*.yaml): many hours on 2 cores, so they span sessions. Their run cache
# defaults to ~/.cache/gclib/runs (outside the work tree: a fresh checkout resumes where the last one stopped);
# it first prints how many runs are finished, partly trained or not started and the time left.
GCLIB_RUNS ?= $(HOME)/.cache/gclib/runs
reproduce-long: setup
	GCLIB_RUNS="$(GCLIB_RUNS)" $(PY) -m gclib reproduce --long

reproduce-status: setup   # where the long profiles stand, without training anything
	GCLIB_RUNS="$(GCLIB_RUNS)" $(PY) -m gclib reproduce --status

bench: setup
	$(PY) benchmarks/run_all.py

lab: setup
	$(PY) -m jupyter lab --ip=127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root,) --ServerApp.root_dir=.

clean:
	rm -rf .pytest_cache build *.egg-info
