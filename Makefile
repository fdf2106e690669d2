# pertpipe: `make run` = set up + run the demo pipeline; `make test` = set up + run the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
CORES ?= 2
STAMP := .setup.stamp
TEST_STAMP := .setup-test.stamp
# Each checkout runs its own code: the package is put on PYTHONPATH (also for Snakemake's script jobs)
# instead of an editable install that would point every checkout at one place.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: setup setup-test run lint test test-fast bench clean

# Python packages (exact pins), in two tiers: `setup` (make run) installs the core lock requirements.txt (the
# package, the workflow extra, cell-eval2/vcc-cli for the default scoring profile); `setup-test` (make test, CI)
# adds requirements-test.txt (pytest, ruff, the `spatial` and `peers` extras; arc-state is non-commercial).
# System tools cell-eval needs: zstd and tar (installed by .ci/run with apt-get on a fresh machine).
setup: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	$(PIP) install -q -r requirements.txt
	@command -v zstd >/dev/null || echo "warning: zstd not found (cell-eval prep needs it): apt-get install -y zstd"
	@touch $(STAMP)

setup-test: $(TEST_STAMP)
$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	@touch $(TEST_STAMP)

run: setup
	snakemake --cores $(CORES)

lint: setup-test
	$(PYTHON) -m ruff check pertpipe workflow_scripts benchmarks tests

# Test files run on $(CORES) workers (pytest-xdist, a file's tests on one worker so they share its fixtures), handed
# out in the order tests/conftest.py gives them (pipeline folders first, short unit files last), not xdist's default
# order by number of tests, which put the one-test pipeline files last.
test: setup-test lint
	$(PYTHON) -m pytest -q -ra --durations=25 -n $(CORES) --dist loadfile --no-loadscope-reorder

test-fast: setup-test
	$(PYTHON) -m pytest -q -ra -m "not workflow and not slow" -n $(CORES)

bench: setup
	$(PYTHON) benchmarks/bench_stage1.py

clean:
	rm -rf results .snakemake
