# One command to set up and run the demo, one to set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmgen demo --data digits --out mmgen-demo --force

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/core.py

clean:
	rm -rf $(VENV) mmgen-demo .pytest_cache

# dpmm anchors (benchmarks/tabular.py --methods dpmm-aim,dpmm-mst): their own venv, .venv-dpmm,
# from the pinned lock benchmarks/anchors/dpmm_requirements.txt (network at install time only)
.PHONY: anchors-dpmm
anchors-dpmm:
	$(PYTHON) -m benchmarks.anchors.env dpmm
