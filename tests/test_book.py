"""lnlib.book.glue stores plain Python numbers, so the book's prose can format them."""

import numpy as np
import pytest
import torch

from lnlib import book


@pytest.mark.parametrize("value", [np.float64(1.25), np.int64(3), torch.tensor(1.25)])
def test_glue_stores_scalars_as_python_numbers(value, monkeypatch):
    myst_nb = pytest.importorskip("myst_nb")
    stored = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, v, display: stored.update({name: v}))
    book.glue("x", value)
    assert type(stored["x"]) in (float, int) and stored["x"] == value.item()
    assert repr(stored["x"]) in ("1.25", "3")
