# Two commands from a fresh clone: `make demo` and `make test`.
# Every install goes through constraints.txt (CPU torch). GPU users: see README.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test test-fast bench bench-curves install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) --upgrade pip
	$(PIP) -e ".[test]"
	touch $@

install: $(VENV)/.installed

# The quickstart search (under a minute on 2 cores), its report and the best config exported.
# Each run gets its own timestamped name under runs/, so a re-run never collides with the last.
demo: install
	@name=quickstart-$$(date +%Y%m%d-%H%M%S); \
	$(VENV)/bin/hpsearch run configs/quickstart.yaml --name $$name && \
	$(VENV)/bin/hpsearch report runs/$$name && \
	$(VENV)/bin/hpsearch export runs/$$name

# Lint (ruff: pyflakes, import order, bugbear; zero findings), then the whole suite, which also
# checks the layer contracts in pyproject.toml (tests/test_layers.py).
test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

test-fast: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not slow"

# The benchmarks behind BENCHMARKS.md (each rewrites its own section; about 3.5 h on 2 cores,
# best on an otherwise idle machine). They replay the curves shipped in benchmarks/data;
# `make bench-curves` records those again (about 25 minutes, and the real-data corpus about 25 more).
# a recording of the real-curve corpus's models from configs it does not hold (record_real --first)
HELD_OUT ?= /tmp/hpsearch_held_out.json.gz

bench: install
	$(PIP) -e ".[test,bench]"
	$(PY) -m benchmarks.detection
	$(PY) -m benchmarks.corpus_detection
	$(PY) -m benchmarks.record_real --per 100 --first 200000 --out $(HELD_OUT)
	$(PY) -m benchmarks.corpus_detection --corpus $(HELD_OUT)
	$(PY) -m benchmarks.replay
	$(PY) -m benchmarks.algorithms
	$(PY) -m benchmarks.rung_noise
	$(PY) -m benchmarks.portfolio
	$(PY) -m benchmarks.ranking
	$(PY) -m benchmarks.real_data --out BENCHMARKS.md
	$(PY) -m benchmarks.real_search
	$(PY) -m benchmarks.live
	$(PY) -m benchmarks.overhead
	$(PY) -m benchmarks.throughput

bench-curves: install
	$(PY) -m benchmarks.record_curves triplet
	$(PY) -m benchmarks.record_curves symmetric
	$(PY) -m benchmarks.record_real

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
