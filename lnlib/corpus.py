"""Corpora for the command line: JSONL files of texts or (prompt, response) pairs per language, or a slice of a
registered dataset under the book's protocol.

A JSONL line is {"lang": "xx", "text": "..."} (every token counts) or {"lang": "xx", "prompt": "...",
"response": "..."} (only the response's tokens count, as in the book). Languages keep the order in which they first
appear; examples keep the order of the files and lines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from lnlib.protocols import Source, book_pairs


class CorpusError(ValueError):
    """A corpus file that cannot be read as the documented JSONL."""


def _example(record, where: str):
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
    lang = record.get("lang")
    if not isinstance(lang, str) or not lang:
        raise CorpusError(f'{where}: "lang" must be a non-empty string (a language code such as "sw")')
    if "text" in record and not {"prompt", "response"} & record.keys():
        text = record["text"]
        if not isinstance(text, str):
            raise CorpusError(f'{where}: "text" must be a string')
        return lang, text
    if {"prompt", "response"} <= record.keys() and "text" not in record:
        prompt, response = record["prompt"], record["response"]
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise CorpusError(f'{where}: "prompt" and "response" must be strings')
        return lang, (prompt, response)
    raise CorpusError(f'{where}: give either "text", or "prompt" and "response" (found keys: '
                      f'{", ".join(sorted(record)) or "none"})')


def read_jsonl(paths: Sequence[str | Path]) -> dict[str, list]:
    """{lang: examples} from JSONL files, every line checked (errors name the file and line)."""
    if not paths:
        raise CorpusError("no data: give at least one JSONL file")
    out: dict[str, list] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise CorpusError(f"data file {path} does not exist")
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise CorpusError(f"{where}: not valid JSON ({error.msg})") from None
                lang, example = _example(record, where)
                out.setdefault(lang, []).append(example)
    if not out:
        raise CorpusError(f"the data files hold no example: {', '.join(map(str, paths))}")
    return out


def dataset_examples(dataset: str, langs: Sequence[str], n: int) -> dict[str, list]:
    """The book's CPU protocol on the first `n` problems of a registered dataset, per language."""
    return {lang: book_pairs(lang, Source(dataset, range(n))) for lang in langs}


def digest(examples_by_lang: dict[str, list]) -> str:
    """SHA256 of the examples, languages and order included (what a resumed run must find unchanged)."""
    return hashlib.sha256(json.dumps(examples_by_lang, ensure_ascii=False).encode()).hexdigest()
