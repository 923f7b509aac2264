"""Run-time settings read from the environment: fast mode, offline mode, progress bars and the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm

FAST_ENV = "LNLIB_FAST"
CACHE_ENV = "LNLIB_CACHE_DIR"
DATA_ENV = "LNLIB_DATA_DIR"
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


def progress_bar(iterable, desc: str, progress: bool = True):
    """`iterable` with a tqdm bar that disappears when done; none when progress=False or `TQDM_DISABLE` is set.
    tqdm lets an explicit `disable=` win over its own variable, so the variable is read here (the book build sets
    it: a bar would be saved as a widget)."""
    return tqdm(iterable, desc=desc, disable=not progress or _flag("TQDM_DISABLE"), leave=False)


def cache_dir() -> Path:
    """The folder for downloaded data and converted models: `LNLIB_CACHE_DIR`, else `$XDG_CACHE_HOME/lnlib`,
    else `~/.cache/lnlib`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lnlib"
