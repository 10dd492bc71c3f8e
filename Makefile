# The two commands a new user runs: `make demo` and `make test`. Each sets up .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.densevision-installed

.PHONY: demo demo-det test lint docs install clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/densevision demo

demo-det: $(STAMP)
	$(VENV)/bin/densevision demo detection

# The documentation site (docs/, mkdocs.yml) into site/: --strict fails on broken links, missing API
# references and pages left out of the navigation. The command reference and the figures are generated
# during the build (docs/hooks.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# Two worker processes (pytest-xdist), one torch thread each (tests/conftest.py); the tests marked slow
# (end-to-end runs) start first and worksteal lets an idle worker take the short ones queued behind them.
# No terminal needed: it runs the same in the background or under nohup.
test: $(STAMP) lint
	$(PY) -m pytest -q -n 2 --dist worksteal

clean-venv:
	rm -rf $(VENV)
