"""The model work lnlib does, in tokens: a unit that does not swing with the machine's speed.

Every lnlib function that runs a model adds what it ran: "forward" tokens (counting, perplexity, the logit lens,
generation: prompt and generated tokens alike, padding excluded) and "train" tokens (forward and backward passes
of a training step). The book's build reads `totals()` at the end of each chapter.
"""

from __future__ import annotations

KINDS = ("forward", "train")
_TOTALS = dict.fromkeys(KINDS, 0)


def add(kind: str, tokens: int) -> None:
    """Count `tokens` of model work of `kind` ("forward" or "train")."""
    if kind not in _TOTALS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _TOTALS[kind] += int(tokens)


def totals() -> dict[str, int]:
    """The tokens of each kind counted in this process so far."""
    return dict(_TOTALS)
