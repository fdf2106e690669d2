# pertpipe: `make run` = set up + run the demo pipeline; `make test` = set up + run the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
CORES ?= 2
STAMP := .setup.stamp
# Each checkout runs its own code: the package is put on PYTHONPATH (also for Snakemake's script jobs)
# instead of an editable install that would point every checkout at one place.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: setup run lint test test-fast bench clean

# Python packages (exact pins). System tools cell-eval needs: zstd and tar (installed by .ci/run with
# apt-get on a fresh machine). `pip install -e .` makes `import pertpipe` work outside make as well.
setup: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	$(PIP) install -q -r requirements.txt
	@command -v zstd >/dev/null || echo "warning: zstd not found (cell-eval prep needs it): apt-get install -y zstd"
	@touch $(STAMP)

run: setup
	snakemake --cores $(CORES)

lint: setup
	$(PYTHON) -m ruff check pertpipe workflow_scripts benchmarks tests

test: setup lint
	$(PYTHON) -m pytest -q -ra --durations=25

test-fast: setup
	$(PYTHON) -m pytest -q -ra -m "not workflow and not slow"

bench: setup
	$(PYTHON) benchmarks/bench_stage1.py

clean:
	rm -rf results .snakemake
