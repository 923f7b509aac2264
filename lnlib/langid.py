"""Language identification of generated or given text, among the paper's languages (py3langid, a naive Bayes
model shipped with the package; no network), and numbers in text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from lnlib.data import LANGS


@cache
def _identifier(langs: tuple[str, ...]):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(langs))
    return identifier


def detect_language(text: str, langs: Sequence[str] | None = None, min_letters: int = 3) -> str | None:
    """The most likely language of `text` among `langs` (default `lnlib.data.LANGS`), or None when the text has
    fewer than `min_letters` letters (numbers and symbols carry no language)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if sum(ch.isalpha() for ch in text) < min_letters:
        return None
    return _identifier(tuple(langs or LANGS)).classify(text)[0]


def detect_languages(texts: Sequence[str], langs: Sequence[str] | None = None) -> list[str | None]:
    """`detect_language` of each text."""
    if isinstance(texts, str):
        raise ValueError("texts must be a list of texts, not a single text: wrap it in a list")
    return [detect_language(text, langs) for text in texts]


def extract_last_number(text: str) -> float | None:
    """The last number in `text` (commas between digits removed, as MAPO's evaluator does), or None."""
    found = re.findall(r"-?\d+(?:\.\d+)?", re.sub(r"(?<=\d),(?=\d)", "", text))
    return float(found[-1]) if found else None


def is_correct_number(text: str, answer: float, tolerance: float = 1e-2) -> bool:
    """True when the last number of `text` is within `tolerance` of `answer` (MAPO's criterion)."""
    value = extract_last_number(text)
    return value is not None and abs(value - answer) <= tolerance
