"""Protocols: which text a model reads, and which of its tokens count.

- The book's CPU protocol (`book_pairs`): prompt = one English instruction (`INSTRUCTION`), identical for every
  language; response = a question in language k. Only the question's tokens are counted, so the shared English
  instruction conditions the text but never enters the statistics. A 270M base model cannot solve the problems,
  so its own "answers" would be noise; the questions stand in for them.
- The paper's protocol (`lnlib.generation.answer_pairs`): the MathOctopus prompt (`mathoctopus_prompt`) and the
  model's own answer, force-decoded, with only the answer's tokens counted.

Also here: the MGSM prompts the chapters continue (`mgsm_prompt`) and the question-alignment pairs
(`alignment_pairs`: a question in its language, then its English version).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from lnlib import data
from lnlib.data import LANG_NAMES, Problem

INSTRUCTION = "Below is a math word problem. Read it carefully.\n\n### Problem:\n"
"""The shared English prompt of the book's CPU protocol; its tokens are never counted."""

MATHOCTOPUS_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request "
    "in {language}. Please answer in {language}.\n\n### Instruction:\n{question}\n\n### Response:"
)
"""The MathOctopus/MAPO prompt (the paper's exact instruction strings were not released)."""

PROTOCOLS = ("questions", "answers")
""""questions": the book's CPU protocol; "answers": the paper's (the model's own answers, force-decoded)."""


@dataclass(frozen=True)
class Source:
    """A slice of a dataset: `items` (indices) of `dataset` ("mgsm", "msvamp", or a registered one)."""

    dataset: str
    items: range

    def problems(self, lang: str) -> list[Problem]:
        return data.problems(self.dataset, lang, self.items)

    @property
    def label(self) -> str:
        """e.g. "mgsm[0:150]"."""
        return f"{self.dataset}[{self.items.start}:{self.items.stop}]"


def prompt_pairs(texts: Sequence[str], instruction: str = INSTRUCTION) -> list[tuple[str, str]]:
    """(shared English instruction, text) pairs, so only the text's tokens count."""
    if isinstance(texts, str):
        raise ValueError("texts must be a list of texts, not a single text: wrap it in a list")
    return [(instruction, text) for text in texts]


def book_pairs(lang: str, source: Source, instruction: str = INSTRUCTION) -> list[tuple[str, str]]:
    """The book's CPU protocol for one language: (instruction, question) for every problem of `source`."""
    return prompt_pairs([p.question for p in source.problems(lang)], instruction)


def mathoctopus_prompt(problem: Problem) -> str:
    """The MathOctopus-style prompt for a problem: the paper's protocol's prompt for generating answers (to be
    force-decoded) and for accuracy under deactivation."""
    return MATHOCTOPUS_TEMPLATE.format(language=LANG_NAMES[problem.lang], question=problem.question)


def _labels(lang: str) -> tuple[str, str]:
    """MGSM's own "Question:" and "Step-by-Step Answer:" labels in `lang` (from its first exemplar)."""
    shot = data.load_mgsm_exemplars(lang)[0]
    question = re.split("(?<=[:：])", shot.question, maxsplit=1)[0]
    answer = re.split("(?<=[:：])", shot.reasoning, maxsplit=1)[0]
    return question, answer


def mgsm_prompt(lang: str, index: int, shots: int = 1) -> str:
    """MGSM problem `index` in `lang`, labelled with the language's own "Question:" and "Step-by-Step Answer:",
    after `shots` worked exemplars (0: none). A base model continues it in the language."""
    if shots not in range(9):
        raise ValueError(f"shots must be between 0 and 8 (MGSM has 8 exemplars), got {shots}")
    question_label, answer_label = _labels(lang)
    worked = [f"{shot.question}\n{shot.reasoning}\n\n" for shot in data.load_mgsm_exemplars(lang)[:shots]]
    problem = data.problems("mgsm", lang, range(index, index + 1))[0]
    return "".join(worked) + f"{question_label} {problem.question}\n{answer_label}"


def mgsm_prompts(items: Sequence[int], shots: int = 1, langs: Sequence[str] = data.LANGS) -> dict[str, list[str]]:
    """`mgsm_prompt` for each MGSM problem of `items`, per language of `langs`."""
    return {lang: [mgsm_prompt(lang, i, shots) for i in items] for lang in langs}


def alignment_prompt(problem: Problem) -> str:
    """The prompt of a question-alignment example: the question in its language, then an English cue."""
    return f"{LANG_NAMES[problem.lang]}: {problem.question}\nEnglish:"


def alignment_pairs(problems: Sequence[Problem]) -> list[tuple[str, str]]:
    """(prompt, response) pairs for question alignment: response = the parallel English question."""
    english = [p for p in problems if p.lang == "en"]
    if english:
        raise ValueError(f"{len(english)} English problems given; alignment pairs map other languages to "
                         "English, so pass non-English problems only")
    return [(alignment_prompt(p), " " + p.question_en) for p in problems]


def training_problems(langs: Sequence[str], per_lang: int, start: int = 200) -> list[Problem]:
    """The book's alignment training questions: MSVAMP items from `start` on, each language its own `per_lang` items
    (MSVAMP is parallel; the same English question should not be a target twice)."""
    return [p for k, lang in enumerate(langs)
            for p in data.problems("msvamp", lang, range(start + k * per_lang, start + (k + 1) * per_lang))]


def control_pairs(problems: Sequence[Problem], kind: str = "shuffled", seed: int = 0) -> list[tuple[str, str]]:
    """Training pairs of the same form and size as `alignment_pairs` that carry no cross-lingual signal: the
    noise floor of an alignment experiment. kind="shuffled": each question paired with the English version of
    another problem; kind="english": the English question mapped to itself."""
    problems = list(problems)
    if kind == "english":
        return [(f"English: {p.question_en}\nEnglish:", " " + p.question_en) for p in problems]
    if kind != "shuffled":
        raise ValueError(f"kind must be 'shuffled' or 'english', got {kind!r}")
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)  # a cyclic shift of a random order: nobody keeps its own target
    partner = {order[j]: order[(j + 1) % len(order)] for j in range(len(order))}
    return [(alignment_prompt(p), " " + problems[partner[i]].question_en) for i, p in enumerate(problems)]
