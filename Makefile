# rope_lab — `make train` and `make test` each work alone on a fresh clone (both run `make install` first).
PY ?= python3
STAMP := .make/install.stamp

.PHONY: install data train test test-avx2 test-full reproduce reproduce-gpu bench clean

install: $(STAMP)

# ranges in pyproject.toml, exact versions from constraints.txt (what CI tests)
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m pip install -q -e '.[dev]' -c constraints.txt
	@mkdir -p .make && touch $(STAMP)

data: install
	$(PY) -m rope_lab.data.prefetch

train: install data
	$(PY) train.py

# the suite on TEST_WORKERS processes (pytest-xdist; most tests wait on imports and train.py subprocesses)
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# the suite as an AVX2-only CPU runs it (torch's kernels and ours capped), on any x86 machine
test-avx2: install
	ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -q -n $(TEST_WORKERS)

test-full: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "slow or not slow"

reproduce: install data
	$(PY) -m pytest -q -m slow

# the studies sized for one GPU, full tier at 3 seeds, JOBS runs at a time on the one device (small models leave most
# of an H100/H200 idle); --write updates experiments/<study>/results/ and the manifests record the GPU
GPU_STUDIES ?= videorope rope_vit
JOBS ?= 8

reproduce-gpu: install data
	@for s in $(GPU_STUDIES); do $(PY) scripts/reproduce.py $$s --seeds 3 --jobs $(JOBS) --write || exit 1; done
	$(PY) scripts/reproduce.py --summary

bench: install
	@for s in scripts/bench_*.py; do echo "== $$s"; $(PY) $$s || exit 1; done

clean:
	rm -rf .make outputs multirun lightning_logs
