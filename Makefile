# Quick start:  make demo  (build, synthesise a cohort, compare CE and SpineRankNet on it, reports)
#               make test  (build, then run the test suite)
# Everything goes into a virtual environment in $(VENV). torch is pinned to the
# CPU-capable version this project is tested with; override with TORCH=... .
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

SOURCES := pyproject.toml CMakeLists.txt $(wildcard cmake/* build_support/*.py csrc/*.* csrc/*/*.* spinerank_ext/*.py spinerank_ext/*/*.py python/spinerank/*.py python/spinerank/*/*.py)

.PHONY: demo test bench bench-cuda bench-ddp bench-import bench-pipeline bench-smoke cuda-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The extension is rebuilt whenever a source changes.
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet ".[test,data]"
	touch $@

# The main job: a synthetic cohort of 200 subjects; CE and SpineRankNet trained
# (tiny preset), calibrated and evaluated with TTA on it; the comparison table and
# reports in demo/compare. Recreates ./demo. DEMO_FLAGS=--all-methods: all six.
demo: $(VENV)/.installed
	rm -rf demo
	$(BIN)/spinerank demo --out demo $(DEMO_FLAGS)

test: $(VENV)/.installed
	$(BIN)/pytest tests

# One JSON file per benchmark file, each rendered as its table in README.md and docs/
# (render_table.py --all renders every page's bench blocks from these files).
BENCHES := pairwise_rank_loss augmentation thresholds

bench: $(VENV)/.installed
	for b in $(BENCHES); do \
	  $(BIN)/pytest benchmarks/test_bench_$$b.py --bench-large --benchmark-json=benchmarks/results/cpu-$$b.json || exit 1; \
	done
	for b in $(BENCHES); do $(BIN)/python benchmarks/render_table.py benchmarks/results/cpu-$$b.json; done
	$(BIN)/python benchmarks/render_table.py --all

# CUDA benchmarks (needs a GPU): CUDA-event medians, fused vs eager and compiled reference.
bench-cuda: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_cuda.py
	$(BIN)/python benchmarks/render_table.py benchmarks/results/cuda-pairwise_rank_loss.json

# Compile every CUDA source for sm_90 without a GPU (see .ci/cuda-check).
cuda-check:
	VENV=$(VENV) .ci/cuda-check

# 1 vs 2 processes (gloo) on the CPU, local vs global pairs (docs/distributed.md).
bench-ddp: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_ddp.py
	$(BIN)/python benchmarks/render_table.py --readme docs/distributed.md

# spinerank import spider on scanner-sized phantoms: seconds per series, the full dataset's estimate.
bench-import: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_import.py
	$(BIN)/python benchmarks/render_table.py --readme docs/real-data.md

# The input pipeline (volumes/s from .nii.gz, .npy, the cache) and a CPU training step by part.
bench-pipeline: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/render_table.py --readme docs/pipeline.md

# Every benchmark case once, untimed: they still check their results.
bench-smoke: $(VENV)/.installed
	$(BIN)/pytest benchmarks --bench-large --benchmark-disable -q

clean:
	rm -rf build $(VENV) .torchinductor .pytest_cache .benchmarks demo
