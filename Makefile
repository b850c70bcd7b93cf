# Set-up is part of every target: the first run builds .venv from the pins, later
# runs reuse it (the stamp file is newer than pyproject.toml and constraints.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: run test lint bench mutants clean

run: $(STAMP)
	$(PY) main.py resources/demo

test: $(STAMP) lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -n auto --maxprocesses 2 --dist loadfile --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench.step_overhead
	$(PY) -m bench.feature_cache
	$(PY) -m bench.augment_throughput
	$(PY) -m bench.window_start
	$(PY) -m bench.label_noise

# Mutation testing of the modules in pyproject's [tool.mutmut] (tens of minutes; not in CI).
mutants: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[mutants]"
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

# torch first, from its exact pin: letting pip choose it pulls a CUDA build of gigabytes.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$$(grep -E '^torch==' constraints.txt)"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,export,logs]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache .mypy_cache mutants
