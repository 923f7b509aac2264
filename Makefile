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

.PHONY: setup book test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt constraints-cpu.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(PIP_OPTS) \
		-r requirements.txt -c constraints-cpu.txt -e .
	@if $(PY) -m pip list --format=freeze 2>/dev/null | grep -i '^nvidia-'; then \
		echo "error: CUDA wheels were installed on this machine (listed above); install the CPU build" \
		     "of torch (see constraints-cpu.txt and PIP_OPTS) and run again"; exit 1; fi
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lnlib)" >/dev/null
	touch $@

book: setup
	# TQDM_DISABLE: progress bars would be saved as widgets; LNLIB_STATIC: figures instead of live widgets
	TQDM_DISABLE=1 LNLIB_STATIC=1 $(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going
	$(PY) tools/check_links.py _build/html
	@if grep -l 'application/vnd.jupyter.widget-view' _build/html/notebooks/*.html; then \
		echo "error: the pages above show saved widgets, dead without a kernel (a progress bar?)"; exit 1; fi

test: setup
	LNLIB_FAST=1 $(PY) -m pytest tests notebooks --nbmake --nbmake-timeout=1800

bench: setup
	for script in bench/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf _build
