# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (auto: one per core); each test file runs whole on one worker, so its
# module fixtures are built once. `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= auto

.PHONY: install datasets browser toolchain emulator demo test test-slow test-all clean

install: $(STAMP) datasets

# Fashion-MNIST's original files (`swin-trt data fashion-mnist`) come from Debian's dataset-fashion-mnist;
# installed where apt-get is available and we are root, skipped quietly elsewhere.
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
datasets:
	@if [ ! -f $(FASHION) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "apt-get install dataset-fashion-mnist"; \
		{ apt-get install -y -qq dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }; } >/dev/null 2>&1 \
			|| echo "could not install dataset-fashion-mnist: swin-trt data fashion-mnist needs it"; \
	fi

# Debian's chromium opens the HTML report in tests/test_report.py (skipped with a reason without it, a failure in CI
# where it could be installed); installed like the dataset.
browser:
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "apt-get install chromium"; \
		{ apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }; } >/dev/null 2>&1 \
			|| echo "could not install chromium: tests/test_report.py skips its browser test"; \
	fi

# A C compiler and binutils stand in for TensorRT's libraries in tests/test_tensorrt_api.py (the genuine bindings on a
# CPU; it fails under CI without them); installed like the dataset.
toolchain:
	@if ! { command -v cc && command -v nm && command -v readelf; } >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "apt-get install gcc binutils"; \
		{ apt-get install -y -qq gcc binutils || { apt-get update -qq && apt-get install -y -qq gcc binutils; }; } >/dev/null 2>&1 \
			|| echo "could not install gcc binutils: tests/test_tensorrt_api.py skips (fails under CI)"; \
	fi

# QEMU's user-mode x86 emulator presents a CPU without VNNI, so tests/test_parity.py checks onnxruntime's AVX2 int8 kernels
# on any x86 machine (it fails under CI without it); installed like the dataset.
emulator:
	@if ! command -v qemu-x86_64 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "apt-get install qemu-user"; \
		{ apt-get install -y -qq qemu-user || { apt-get update -qq && apt-get install -y -qq qemu-user; }; } >/dev/null 2>&1 \
			|| echo "could not install qemu-user: tests/test_parity.py skips its emulated AVX2 kernel test (fails under CI)"; \
	fi

# pip (not uv/poetry) so that the torch and torchvision wheels on this machine's disk are found.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/swin-trt demo --workdir runs/demo --json runs/demo/demo.json

# `make test`: every test not marked slow (under 8 minutes on 2 idle cores); `make test-slow`: the slow ones (the reduced
# demo, subprocess and torchrun runs, Swin-L shapes: minutes each); `make test-all` (and CI, .ci/run): both, fast first.
# SWIN_TRT_TEST_CACHE=DIR keeps the session's trained swin_micro between the two runs (tests/conftest.py).
test: $(STAMP) browser toolchain emulator
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: $(STAMP) browser toolchain emulator
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-all: test test-slow

clean:
	rm -rf runs .pytest_cache
