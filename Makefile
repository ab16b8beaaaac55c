# Front door: `make train` (default experiment, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Keeping freed blocks inside glibc's malloc (instead of handing them back to the OS every step)
# makes evaluation much faster (docs/performance.md, "Memory allocator").
export MALLOC_MMAP_THRESHOLD_ ?= 17179869184
export MALLOC_TRIM_THRESHOLD_ ?= 17179869184
# never wait for a W&B account: offline unless the caller says otherwise
export WANDB_MODE ?= offline

.PHONY: setup train test lint clean

setup: $(STAMP)

# Sinabs (a third simulator of model.nir, and the Speck toolchain) pins an older nir: installed
# without its dependencies, which we have already (pyproject.toml, the deploy extra)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "sinabs>=3.1,<4" "pbr>=6"
	touch $(STAMP)

train: $(STAMP)
	$(PY) src/train.py $(ARGS)

test: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q tests $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests

clean:
	rm -rf $(VENV) .pytest_cache
