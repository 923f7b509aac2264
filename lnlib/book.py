"""Helpers for the book's notebooks."""

from __future__ import annotations

from typing import Any


def glue(name: str, value: Any) -> None:
    """Make `value` available to the page's prose as {glue:}`name` (myst-nb), without displaying it.
    Outside the book build (e.g. on Colab, where myst-nb is not installed) this does nothing. NumPy and torch
    scalars are stored as plain Python numbers: their repr (`np.float64(1.2)`) would not take a format spec."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy or torch scalar
        value = value.item()
    myst_glue(name, value, display=False)
