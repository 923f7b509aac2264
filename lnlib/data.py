"""Data: the paper's languages, MGSM, MSVAMP and the paper's released Mistral-7B activation statistics.

Every file is found the same way (see `data_file`): the folder named by `LNLIB_DATA_DIR`, then the user
cache, then a download from the upstream repository at a pinned commit. Each file is checked against the
SHA256 listed in `data_checksums.sha256` before it is used; a file that fails is never read.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import numbers
import operator
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from lnlib import store
from lnlib.config import DATA_ENV, DATA_URL_ENV, cache_dir, data_url, offline, progress_bar

LANGS: tuple[str, ...] = ("en", "ru", "es", "fr", "de", "zh", "ja", "bn", "th", "sw")
"""The paper's 10 languages, in its order (the language axis of every tensor in this library)."""

LANG_NAMES: dict[str, str] = {
    "en": "English", "ru": "Russian", "es": "Spanish", "fr": "French", "de": "German",
    "zh": "Chinese", "ja": "Japanese", "bn": "Bengali", "th": "Thai", "sw": "Swahili",
}
MGSM_LANGS = LANGS + ("te",)  # MGSM also has Telugu, which the paper does not use

# Upstream raw-file bases, pinned to the commits the checksums were taken from.
UPSTREAM = {
    "mgsm": "https://raw.githubusercontent.com/google-research/url-nlp/"
            "452a21ad3dae5668c06ceeac21ff073e1e40f9be/mgsm/",
    "msvamp": "https://raw.githubusercontent.com/microsoft/MathOctopus/"
              "4d385db696c420b212ccf861fcfab13c1499a576/step1_supervised_finetuning/data/msvamp/",
    "njunlp-release": "https://raw.githubusercontent.com/NJUNLP/Language-Neurons-Alignment/"
                      "f3d4d765eb61d0d9945580f1c928dab7983be0a5/",
}
# mgsm/exemplars.json is derived: upstream ships exemplars.py (Python literals), converted here.
EXEMPLARS_PY_SHA256 = "239dda1557bb2ba76b71e5ef744ddd0b454da0b453e5f8b909498ceff690a919"

RELEASED_MODEL = "kevinpro/MistralMathOctopus-7B"
RELEASED_REVISION = "de76d14562b1da1ba0e52d5b245cf9c0859e2af3"
RELEASED_DATASETS = ("mgsm",)
RELEASED_LAMBDA = 0.109375
RELEASED_RATE = 0.01


class DataError(RuntimeError):
    """A data file could not be found, fetched or verified."""


# ----------------------------------------------------------------------------------------------
# File resolution and verification


@cache
def checksums() -> dict[str, str]:
    """Expected SHA256 of every known data file, keyed by its path relative to the data folder."""
    table = {}
    for line in (Path(__file__).with_name("data_checksums.sha256")).read_text().splitlines():
        if line.strip():
            digest, rel = line.split(maxsplit=1)
            table[rel.strip()] = digest
    return table


def upstream_url(rel: str) -> str:
    """The URL a data file is downloaded from (for the derived exemplars.json: its exemplars.py)."""
    folder, _, rest = rel.partition("/")
    if folder not in UPSTREAM:
        raise DataError(f"no upstream source for {rel!r}; known folders: {', '.join(UPSTREAM)}")
    if rel == "mgsm/exemplars.json":
        rest = "exemplars.py"
    return UPSTREAM[folder] + rest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_verified: dict[tuple[str, int, int], bool] = {}


def _is_valid(path: Path, expected: str) -> bool:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_of(path) == expected
    return _verified[key]


def data_file(rel: str) -> Path:
    """Path to a verified copy of data file `rel` (e.g. ``"mgsm/mgsm_en.tsv"``).

    Order: ``$LNLIB_DATA_DIR/rel``, then ``<cache>/data/rel``, then a download into the cache: from the mirror
    named by `LNLIB_DATA_URL` (``<url>/rel``) when set, else from the file's upstream repository (`upstream_url`).
    A file whose SHA256 differs from the listed one is refused.
    """
    table = checksums()
    if rel not in table:
        raise DataError(f"{rel!r} is not a known data file; see lnlib/data_checksums.sha256 for the list")
    expected = table[rel]

    root = os.environ.get(DATA_ENV)
    if root:
        candidate = Path(root).expanduser() / rel
        if candidate.is_file():
            if not _is_valid(candidate, expected):
                raise DataError(
                    f"{candidate} does not match its SHA256 ({expected}); it was not used. "
                    f"Replace it with the upstream file ({upstream_url(rel)}) or unset {DATA_ENV}."
                )
            return candidate

    cached = cache_dir() / "data" / rel
    if cached.is_file() and _is_valid(cached, expected):
        return cached

    mirror = data_url()
    url = f"{mirror}/{rel}" if mirror else upstream_url(rel)
    if offline():
        raise DataError(
            f"data file {rel!r} is not available offline: it is not under {DATA_ENV} "
            f"({root or 'unset'}) nor in the cache ({cached}). Set {DATA_ENV} to a folder holding "
            f"{rel}, or go online so it can be downloaded from {url}."
        )
    if rel != "mgsm/exemplars.json" or mirror:
        _download(rel, url, cached, expected)
    else:  # upstream ships exemplars.py (Python literals): read with ast.literal_eval, never executed
        raw = cached.with_name("exemplars.py")
        _download(rel, url, raw, EXEMPLARS_PY_SHA256)
        store.write_text(cached, exemplars_py_to_json(raw.read_text(encoding="utf-8")))
        raw.unlink()
        if not _is_valid(cached, expected):
            cached.unlink()
            raise DataError(f"{url} converted to JSON does not match its SHA256 ({expected}); it was not used.")
    return cached


def _download(rel: str, url: str, target: Path, expected: str) -> None:
    """Stream `url` into `target` with a progress bar, checking its SHA256 before the file is moved into place."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, store.atomic_path(target, overwrite=True) as tmp:
            size = int(response.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as fh, progress_bar(None, f"downloading {rel}", total=size, unit="B",
                                                     unit_scale=True) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    fh.write(block)
                    digest.update(block)
                    bar.update(len(block))
            if digest.hexdigest() != expected:
                raise DataError(f"the file downloaded from {url} does not match its SHA256 ({expected}); "
                                "it was not saved or used.")
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"could not download data file {rel!r} from {url} ({exc}). Set {DATA_ENV} to a folder "
            f"holding {rel} (the layout of the book's data folder), set {DATA_URL_ENV} to a mirror of that "
            "folder, or check the network."
        ) from exc


def exemplars_py_to_json(source: str) -> str:
    """Convert MGSM's exemplars.py (top-level assignments of Python literals) to JSON, never executing it."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return json.dumps(values, indent=1, ensure_ascii=False)


# ----------------------------------------------------------------------------------------------
# MGSM and MSVAMP


@dataclass(frozen=True)
class Problem:
    """One math word problem. `question_en` is the parallel English question (same `index`)."""

    lang: str
    index: int
    question: str
    answer: float
    question_en: str


@dataclass(frozen=True)
class Exemplar:
    """One MGSM chain-of-thought few-shot exemplar: question and step-by-step answer as written upstream
    (with their "Question:" / "Step-by-Step Answer:" prefixes in the language) and the numeric answer."""

    question: str
    reasoning: str
    answer: float


def _check_lang(lang: str, known: tuple[str, ...], dataset: str) -> None:
    if lang not in known:
        raise ValueError(f"language {lang!r} is not in {dataset}; known: {', '.join(known)}")


def _number(text: str) -> float:
    return float(text.replace(",", "").strip())


def _subset(items: list, n: int | None) -> list:
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0):
        raise ValueError(f"n must be a whole number >= 0 or None, got {n!r}")
    return items if n is None else items[:n]


@cache
def _mgsm_rows(lang: str) -> tuple[tuple[str, float], ...]:
    path = data_file(f"mgsm/mgsm_{lang}.tsv")
    with open(path, encoding="utf-8", newline="") as fh:
        return tuple((q, _number(a)) for q, a in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def load_mgsm(lang: str, n: int | None = None) -> list[Problem]:
    """The MGSM test set in `lang` (250 problems; the first `n` if given)."""
    _check_lang(lang, MGSM_LANGS, "MGSM")
    english = _mgsm_rows("en")
    rows = _mgsm_rows(lang)
    items = [Problem(lang, i, q, a, english[i][0]) for i, (q, a) in enumerate(rows)]
    return _subset(items, n)


def load_mgsm_exemplars(lang: str) -> list[Exemplar]:
    """MGSM's 8 chain-of-thought exemplars in `lang`."""
    _check_lang(lang, MGSM_LANGS, "MGSM")
    raw = _mgsm_exemplars()
    shots = raw["MGSM_EXEMPLARS"][lang]
    answers = raw["EXEMPLAR_NUMBER_ANSWERS"]
    return [Exemplar(shots[str(i + 1)]["q"], shots[str(i + 1)]["a"], float(answers[i])) for i in range(len(answers))]


@cache
def _mgsm_exemplars() -> dict:
    return json.loads(data_file("mgsm/exemplars.json").read_text(encoding="utf-8"))


@cache
def _msvamp_rows(lang: str) -> tuple[dict, ...]:
    path = data_file(f"msvamp/test_{LANG_NAMES[lang]}.json")
    with open(path, encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh if line.strip())


def load_msvamp(lang: str, n: int | None = None) -> list[Problem]:
    """The MSVAMP test set in `lang` (1,000 problems; the first `n` if given), with the English question."""
    _check_lang(lang, LANGS, "MSVAMP")
    items = [
        Problem(lang, i, row["m_query"], _number(row["response"]), row.get("query", row["m_query"]))
        for i, row in enumerate(_msvamp_rows(lang))
    ]
    return _subset(items, n)


@dataclass(frozen=True)
class Dataset:
    """A benchmark of parallel problems: its name, languages, number of problems per language, loader
    (lang -> every `Problem`) and licence."""

    name: str
    langs: tuple[str, ...]
    size: int
    load: Callable[[str], list[Problem]]
    license: str


DATASETS: dict[str, Dataset] = {
    "mgsm": Dataset("mgsm", LANGS, 250, load_mgsm, "CC BY 4.0"),
    "msvamp": Dataset("msvamp", LANGS, 1000, load_msvamp, "MIT"),
}
"""The datasets chapters, protocols and the command line iterate; add one with `register_dataset`."""


def register_dataset(dataset: Dataset) -> None:
    """Teach lnlib a new dataset (its loader returns `Problem` objects with the parallel English question)."""
    DATASETS[dataset.name] = dataset


def dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (add one with register_dataset)")
    return DATASETS[name]


def problems(name: str, lang: str, items: range | None = None) -> list[Problem]:
    """Problems `items` (indices; default all) of dataset `name` in language `lang`."""
    source = dataset(name)
    _check_lang(lang, source.langs, name.upper())
    every = source.load(lang)
    if items is None:
        return every
    try:
        index = [operator.index(i) for i in items]
    except TypeError as exc:
        raise ValueError(f"items must be a range or list of whole-number problem indices, e.g. range(10), "
                         f"got {items!r:.60}") from exc
    if len(index) and (min(index) < 0 or max(index) >= len(every)):
        raise ValueError(f"{name} has {len(every)} problems per language; items {items} reach beyond them")
    return [every[i] for i in index]


def questions(name: str | Sequence[str], items: range | None = None,
              langs: Sequence[str] = LANGS) -> dict[str, list[str]]:
    """The questions of problems `items` of dataset `name` (`problems`), per language of `langs`. name: a dataset,
    or several (each language's questions of the first, then of the next)."""
    names = (name,) if isinstance(name, str) else tuple(name)
    return {lang: [p.question for each in names for p in problems(each, lang, items)] for lang in langs}


def flatten(by_lang: Mapping[str, Sequence]) -> tuple[list, list[str]]:
    """Texts by language (e.g. `questions`) as one list, language after language, and the language of each."""
    flat = [text for texts in by_lang.values() for text in texts]
    return flat, [lang for lang, texts in by_lang.items() for _ in texts]


# ----------------------------------------------------------------------------------------------
# The paper's released statistics (kevinpro/MistralMathOctopus-7B on MGSM)


@dataclass(frozen=True)
class ReleasedCounts:
    """The paper's released activation counts, stacked in `langs` order.

    full, prefix: int64 [layers, neurons, languages], positions where act(gate) > 0 in the full pass
    (prompt + response) and the prefix pass (prompt only); full_tokens, prefix_tokens: int64 [languages].
    """

    langs: tuple[str, ...]
    full: torch.Tensor
    prefix: torch.Tensor
    full_tokens: torch.Tensor
    prefix_tokens: torch.Tensor

    @property
    def response_tokens(self) -> torch.Tensor:
        return self.full_tokens - self.prefix_tokens


def _check_released(dataset: str) -> None:
    if dataset not in RELEASED_DATASETS:
        raise ValueError(f"the paper released statistics for {', '.join(RELEASED_DATASETS)} only, not {dataset!r}")


def _load_count_file(rel: str) -> tuple[torch.Tensor, int]:
    blob = torch.load(data_file(rel), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or set(blob) != {"total_tokens", "over_zero"}:
        raise DataError(f"{rel} does not hold the expected {{'total_tokens', 'over_zero'}} dictionary")
    return blob["over_zero"].to(torch.int64), int(blob["total_tokens"])


@cache
def load_released_counts(dataset: str = "mgsm") -> ReleasedCounts:
    """Raw released counts for all 10 languages (full and prefix passes)."""
    _check_released(dataset)
    full, prefix, full_tok, prefix_tok = [], [], [], []
    for lang in LANGS:
        for kind, counts, tokens in (("", full, full_tok), ("prefix.", prefix, prefix_tok)):
            rel = f"njunlp-release/activations/{dataset}/{kind}activation.{lang}.Mistral-{RELEASED_REVISION}.pt"
            over_zero, total = _load_count_file(rel)
            counts.append(over_zero)
            tokens.append(total)
    return ReleasedCounts(
        LANGS, torch.stack(full, -1), torch.stack(prefix, -1),
        torch.tensor(full_tok, dtype=torch.int64), torch.tensor(prefix_tok, dtype=torch.int64),
    )


def load_released_mask(dataset: str = "mgsm") -> list[list[torch.Tensor]]:
    """The paper's released neuron mask (rate 0.01, lambda 0.109375): for each language in `LANGS`
    order, for each of the 32 layers, the sorted int64 indices of its specific + related neurons."""
    _check_released(dataset)
    rel = (f"njunlp-release/activation_masks/{dataset}/{RELEASED_RATE}-{RELEASED_LAMBDA}/"
           f"mask.Mistral-{RELEASED_REVISION}")
    mask = torch.load(data_file(rel), map_location="cpu", weights_only=True)
    if len(mask) != len(LANGS):
        raise DataError(f"{rel} holds {len(mask)} languages, expected {len(LANGS)}")
    return [[layer.to(torch.int64) for layer in per_lang] for per_lang in mask]
