"""Helpers for the book's notebooks: the set-up check, sentences that state computed results, and the compute
records of the latest build.

A sentence that states a result is made by the code that computed it and shown as Markdown output (`say`), so a
reader in Jupyter or Colab and a reader of the built book see the same sentence with the same numbers.
"""

from __future__ import annotations

import json
import os
import platform
import warnings
from pathlib import Path

import pandas as pd
import torch

RECORDS = Path(__file__).with_name("build_records.json")
"""Minutes and model work (tokens) of each chapter in the latest `make book`, per profile."""


def start(release: str) -> None:
    """Check, at the top of a chapter, that the installed lnlib is the release the notebook belongs to (a warning
    says how to get it otherwise), quiet the hub's download bars, and print where the chapter runs."""
    from lnlib import __version__, cache_dir

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if release.lstrip("v") != __version__:
        warnings.warn(f"this notebook belongs to lnlib {release} but lnlib {__version__} is installed; results "
                      f"and code may differ: pip install \"lnlib @ git+https://github.com/lnlib/language-neurons-book"
                      f"@{release}\" and restart the kernel", stacklevel=2)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"lnlib {__version__}, torch {torch.__version__}, Python {platform.python_version()}; {device}; "
          f"cache {cache_dir()}")


def say(text: str) -> None:
    """Show `text` (Markdown) as the cell's output: how every sentence that states a computed result is shown."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def names(items, last: str = "and") -> str:
    """"a", "a and b", "a, b and c"."""
    items = [str(i) for i in items]
    if len(items) < 2:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def pairs_text(shared) -> str:
    """Language pairs as prose, "zh–ja (12), ja–th (9)": (count, a, b) triples as `Identification.top_pairs` gives
    them."""
    return ", ".join(f"{a}–{b} ({n})" for n, a, b in shared)


def records() -> dict:
    """The build records shipped with this release: {chapter: {profile: {minutes, forward, train, date}}}."""
    return json.loads(RECORDS.read_text()) if RECORDS.is_file() else {}


def compute_table(chapter: str) -> pd.DataFrame:
    """A chapter's Compute table: per profile, the minutes and the model work (forward and training tokens) of
    the latest build that ran it, or the estimate of `lnlib.profiles.GPU_MINUTES` (labelled so) where no build
    measured it."""
    from lnlib.profiles import GPU_MINUTES, PROFILES

    measured = records().get(chapter, {})
    estimates = GPU_MINUTES.get(chapter, {})
    rows = {}
    for name in PROFILES:
        if name in measured:
            r = measured[name]
            rows[name] = {"minutes": f"{r['minutes']:.1f} (measured {r['date']})",
                          "forward tokens": f"{r['forward']:,}", "training tokens": f"{r['train']:,}"}
        else:
            rows[name] = {"minutes": f"{estimates.get(name, 'not measured yet')} (estimate)",
                          "forward tokens": "–", "training tokens": "–"}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("profile")
