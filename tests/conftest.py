"""Shared fixtures. Tests never touch the network: data come from LNLIB_DATA_DIR (set by .ci/run; defaults
here to ../shared/data beside the checkout) and models are tiny ones built from configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not os.environ.get("LNLIB_DATA_DIR") and _SHARED.is_dir():
    os.environ["LNLIB_DATA_DIR"] = str(_SHARED)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = os.environ.get("LNLIB_DATA_DIR")
    if not root or not Path(root).is_dir():
        pytest.skip("LNLIB_DATA_DIR is not set to the shared data folder (CI sets it; see README)")
    return Path(root)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """An empty cache, no data folder and offline mode: nothing outside tmp_path can be read or fetched."""
    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LNLIB_DATA_DIR", raising=False)
    monkeypatch.setenv("LNLIB_OFFLINE", "1")
    from lnlib import data

    data._verified.clear()
    for loader in (data._mgsm_rows, data._msvamp_rows, data._mgsm_exemplars, data.load_released_counts):
        loader.cache_clear()
    yield tmp_path
    for loader in (data._mgsm_rows, data._msvamp_rows, data._mgsm_exemplars, data.load_released_counts):
        loader.cache_clear()
