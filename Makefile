# Quick start: `make run` then `make test`. Both create .venv and install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# On these machines torch==2.13.0 is a CPU build lying on disk; a looser pin pulls a multi-GB CUDA build.
# pyproject.toml stays open (torch>=2.10) for users.
TORCH_PIN ?= torch==2.13.0
# Triton for the tests only: its interpreter runs LeNet's fused GPU kernels on CPU. Installed only where
# none is: CUDA builds of torch bring the Triton they were built with, which must stay.
TRITON_PIN ?= triton==3.9.0

.PHONY: install install-test test-deps run test test-fast bench clean

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install $(TORCH_PIN)
	$(PIP) install -e '.[viz]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[viz,test,ray,music,tensorboard]'
	$(PY) -c "import triton" 2>/dev/null || $(PIP) install $(TRITON_PIN)
	touch $@

# System packages some tests use: headless Chromium for the HTML report's test, Debian's Fashion-MNIST for
# its loader's test. Installed here when missing and we may (root with apt-get); otherwise those tests skip
# and say why.
SYSTEM_TEST_PKGS := chromium chromium-driver dataset-fashion-mnist
test-deps:
	@if ! command -v chromedriver >/dev/null 2>&1 || [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_TEST_PKGS) >/dev/null) \
	      || echo "warning: could not install $(SYSTEM_TEST_PKGS); the tests that need them will skip"; \
	  else echo "note: $(SYSTEM_TEST_PKGS) absent; the tests that need them will skip"; fi; \
	fi

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The main job: the tutorial's logistic regression on the bundled MNIST (74 epochs, 7.489583 % test error).
run: install
	$(VENV)/bin/deeptut train logistic

# Everything (what CI runs), on two pytest-xdist workers (each test file on one worker: a file's module
# fixtures are built once): 7 min 47 s from a fresh clone on a 2-core AMD EPYC, 2026-12-07 (BENCHMARKS.md
# "The test suite's time"); one worker took 13 min 41 s there.
test: install-test test-deps
	$(PY) -m pytest -q -n 2 --dist loadfile

# For quick iteration: all but the tests marked slow (real-MNIST runs, fuzzing, Triton's interpreter,
# torch.compile, the SIGKILL suite; each over ~5 s): ~40 s on 2 idle cores. Not a substitute for `make test`.
test-fast: install-test test-deps
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/cpu.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
