# Lumin: `make demo` and `make test` are the only set-up commands on a fresh machine.
# Both build .venv with a Python >= 3.12 (found by tools/find_python.sh) and install everything.

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.lumin-installed
BASE_PY   ?= $(shell bash tools/find_python.sh)
PYTEST_ARGS ?=

export LUMIN_REQUIRE_NATIVE ?= 1

# `make demo`: the multi-process shop with one fault under observation, then the quick-start
# notebook in JupyterLab on 127.0.0.1 (HEADLESS=1, the default without a terminal, executes
# it to build/01_quick_start.html instead).
DEMO_FAULT    ?= slow_db
DEMO_DURATION ?= 30s
HEADLESS      ?= $(shell test -t 0 && echo 0 || echo 1)

.PHONY: setup demo test lint typecheck pytest bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml hatch_build.py lumin_nb/collect/_ctracer.c
	@test -n "$(BASE_PY)" || { echo "no Python >= 3.12 found"; exit 1; }
	test -x $(PY) || $(BASE_PY) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -c "import lumin_nb.collect._ctracer" || { echo "native tracer missing"; exit 1; }
	touch $(STAMP)

demo: setup
	$(VENV)/bin/lumin demo --fault $(DEMO_FAULT) --duration $(DEMO_DURATION) --store .lumin-demo
ifeq ($(HEADLESS),1)
	$(VENV)/bin/jupyter nbconvert --to html --execute notebooks/01_quick_start.ipynb \
		--output-dir build --ExecutePreprocessor.timeout=300
	@echo "The executed quick-start notebook: build/01_quick_start.html"
else
	$(VENV)/bin/jupyter lab notebooks/01_quick_start.ipynb --ServerApp.ip=127.0.0.1
endif

lint: setup
	$(VENV)/bin/ruff check lumin_nb lumin.py tests benchmarks hatch_build.py
	$(VENV)/bin/ruff format --check lumin_nb lumin.py tests benchmarks hatch_build.py

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build lumin_nb/collect/*.so .lumin .pytest_cache .mypy_cache .ruff_cache
