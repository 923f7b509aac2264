"""The model work lnlib does, in tokens: a unit that does not swing with the machine's speed.

Every lnlib function that runs a model adds what it ran: "forward" tokens (counting, perplexity, the logit lens,
generation: prompt and generated tokens alike, padding excluded) and "train" tokens (forward and backward passes
of a training step). When `LNLIB_RECORD` names a file (the book's build sets it for each chapter it executes),
the totals are written there as JSON while the process runs and when it ends.
"""

from __future__ import annotations

import atexit
import json
import os
import time

from lnlib.store import write_text

KINDS = ("forward", "train")
RECORD_ENV = "LNLIB_RECORD"
_TOTALS = dict.fromkeys(KINDS, 0)
_LAST = [0.0]


def add(kind: str, tokens: int) -> None:
    """Count `tokens` of model work of `kind` ("forward" or "train")."""
    if kind not in _TOTALS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _TOTALS[kind] += int(tokens)
    if os.environ.get(RECORD_ENV) and time.monotonic() - _LAST[0] > 5:
        _write()


def totals() -> dict[str, int]:
    """The tokens of each kind counted in this process so far."""
    return dict(_TOTALS)


def _write() -> None:
    _LAST[0] = time.monotonic()
    write_text(os.environ[RECORD_ENV], json.dumps(totals()))


@atexit.register
def _at_exit() -> None:
    if os.environ.get(RECORD_ENV):
        _write()
