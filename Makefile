# `make install` builds .venv once; later calls only re-install when pyproject.toml changed.
# TORCH picks the torch build: torch==2.13.0 gives the CPU wheel on a machine that has it on local disk
# and PyPI's default (CUDA) build elsewhere; e.g. `make install TORCH="torch --index-url URL"` for another.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
EXTRAS ?= judge,serve,dev

.PHONY: install test test-fast demo lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

# One BLAS/OpenMP thread per process: the tiny test models are latency-bound, and with 2 cores shared by
# test processes and data-loader workers, spinning thread pools make them many times slower. TEST_WORKERS
# pytest-xdist processes (one per core here) run the tests side by side.
TEST_WORKERS ?= 2
test: install
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The inner-loop tier: no multi-process or training runs (`slow`), no browser, no demo; about a minute here.
test-fast: install
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow and not browser and not demo" \
		$(PYTEST_ARGS)

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/animatch demo --out runs/demo

lint: install
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf runs build dist .pytest_cache
