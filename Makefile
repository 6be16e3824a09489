# Two commands from a fresh clone: `make demo` and `make test`.
# Every install goes through constraints.txt (CPU torch). GPU users: see README.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test test-fast bench install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) --upgrade pip
	$(PIP) -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/hpsearch train configs/triplet.yaml --out runs/demo-triplet --force

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
