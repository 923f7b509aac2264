"""Run-time settings read from the environment: fast mode, offline mode, the data mirror, progress bars and
the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm

FAST_ENV = "LNLIB_FAST"
CACHE_ENV = "LNLIB_CACHE_DIR"
DATA_ENV = "LNLIB_DATA_DIR"
DATA_URL_ENV = "LNLIB_DATA_URL"
STATIC_ENV = "LNLIB_STATIC"
OFFLINE_ENVS = ("LNLIB_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def fast_mode() -> bool:
    """True when `LNLIB_FAST` is set (``make test`` sets it): notebooks shrink their sizes."""
    return _flag(FAST_ENV)


def offline() -> bool:
    """True when any of `LNLIB_OFFLINE`, `HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE`, `TRANSFORMERS_OFFLINE` is set."""
    return any(_flag(name) for name in OFFLINE_ENVS)


def static_only() -> bool:
    """True while the book is built (`make book` sets LNLIB_STATIC=1): show figures, never live widgets."""
    return _flag(STATIC_ENV)


def data_url() -> str | None:
    """A mirror of the data folder (`LNLIB_DATA_URL`, e.g. ``http://127.0.0.1:8000``), whose files sit at the
    same relative paths as in the book's data folder; None: download from each file's upstream repository."""
    url = os.environ.get(DATA_URL_ENV, "").strip()
    return url.rstrip("/") or None


def progress_bar(iterable=None, desc: str = "", progress: bool = True, **options):
    """`iterable` with a tqdm bar that disappears when done; none when progress=False or `TQDM_DISABLE` is set.
    tqdm lets an explicit `disable=` win over its own variable, so the variable is read here (the book build sets
    it: a bar would be saved as a widget). `options` go to tqdm (e.g. total=, unit="B")."""
    return tqdm(iterable, desc=desc, disable=not progress or _flag("TQDM_DISABLE"), leave=False, **options)


def cache_dir() -> Path:
    """The folder for downloaded data, converted models and cached counts: `LNLIB_CACHE_DIR`, else
    `$XDG_CACHE_HOME/lnlib`, else `~/.cache/lnlib`. On Colab, point `LNLIB_CACHE_DIR` at Google Drive to keep
    it between sessions."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lnlib"
