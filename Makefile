# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-torch demo bench consistency lint format clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The maintained TFLite runtime; without its pinned numpy/protobuf, which
	# would replace TensorFlow's (docs/tensorflow-notes.md §11). Falls back to tf.lite.
	$(PY) -m pip install --quiet --no-deps 'ai-edge-litert==2.3.0'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check snas_tf trainers export tests benchmarks
	$(VENV)/bin/ruff format --check snas_tf trainers export tests benchmarks

# Two workers, a test file each at a time (module fixtures run once).
test: lint
	$(PY) -m pytest -n 2 --dist loadfile

# The tests that read torch.save files (`snas import-torch`; `make test`
# skips them): installs the [torch] extra, PyTorch's CPU build, into the venv.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
test-torch: $(STAMP)
	$(PY) -m pip install --quiet -e '.[torch]' --extra-index-url $(TORCH_INDEX)
	$(PY) -m pytest -m torch

# The main job on the embedded digits data (CPU-sized, minutes).
demo: $(STAMP)
	$(VENV)/bin/snas demo

# Every benchmark (benchmarks/README.md: tens of minutes, several GB).
# A smoke run: make bench BENCH_ARGS=--quick
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

# SNAS vs DARTS vs random cells on digits, 3 seeds (benchmarks/README.md:
# about an hour on 2 cores; rerun to resume). A smoke run:
# make consistency CONSISTENCY_ARGS=--quick
consistency: $(STAMP)
	$(PY) benchmarks/consistency.py $(CONSISTENCY_ARGS)

format: $(STAMP)
	$(VENV)/bin/ruff format snas_tf trainers export tests benchmarks
	$(VENV)/bin/ruff check --fix snas_tf trainers export tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
