"""Batching: examples (plain texts or (prompt, response) pairs) as padded batches of token ids, with the mask of
the tokens that count. Every lnlib function that runs a model over examples batches them here.

A pair is tokenized as prompt ids (with the tokenizer's special tokens, e.g. BOS) followed by the response's own
ids, so the prompt/response boundary is exact; only the response's tokens are targets. Batches are grouped by
length so that padding is small, and padding is never a target.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

Example = str | tuple[str, str]


class SkippedWarning(UserWarning):
    """Some examples had nothing to count or score and were left out (see the message for how many)."""


def check_examples(examples, what: str = "examples") -> list[Example]:
    """`examples` as a list of texts or (prompt, response) tuples, or a clear error for a single text, an empty
    list, or an entry of another type."""
    if isinstance(examples, str | tuple):
        raise ValueError(f"{what} must be a list of texts or of (prompt, response) pairs, not a single one: "
                         f"wrap it in a list, [{what[:-1] if what.endswith('s') else what}]")
    if isinstance(examples, Mapping):
        raise ValueError(f"{what} must be a list of texts or (prompt, response) pairs, not a mapping of "
                         f"{len(examples)} entries (language -> examples?): pass one language's list, or use "
                         "count_by_language / cached_counts / ppl_grid for several languages")
    if examples is None or not hasattr(examples, "__iter__"):
        raise ValueError(f"{what} must be a list of texts or (prompt, response) pairs, got {type(examples).__name__}")
    examples = list(examples)
    if not examples:
        raise ValueError(f"{what} is empty: give at least one text or (prompt, response) pair")
    for i, ex in enumerate(examples):
        ok = isinstance(ex, str) or (isinstance(ex, tuple | list) and len(ex) == 2
                                     and all(isinstance(part, str) for part in ex))
        if not ok:
            raise ValueError(f"{what}[{i}] is {type(ex).__name__} {ex!r:.60}; each entry must be a text or a "
                             "(prompt, response) pair of texts")
    return [ex if isinstance(ex, str) else tuple(ex) for ex in examples]


def check_size(name: str, value, least: int = 1) -> int:
    """A positive whole number (batch sizes, lengths), or an error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number of at least {least}, got {value!r}")
    return value


def check_encoded(model, encoded: list[tuple[list[int], int]], what: str = "texts",
                  need_tokens: bool = False) -> list[tuple[list[int], int]]:
    """`encoded` (`encode_all`'s result), or a clear error for a token id the model's input embedding lacks (a
    tokenizer of another model) and, with need_tokens, for an entry with no token at all (an empty text)."""
    rows = model.get_input_embeddings().weight.shape[0]
    top = max((max(ids) for ids, _ in encoded if ids), default=-1)
    if top >= rows:
        raise ValueError(f"the tokenizer gives token id {top} but the model's input embedding has {rows} rows: "
                         "this tokenizer does not belong to this model; load both from the same name or folder")
    empty = [i for i, (ids, _) in enumerate(encoded) if not ids] if need_tokens else []
    if empty:
        raise ValueError(f"{what}[{empty[0]}] has no token ({len(empty)} of {len(encoded)} {what} are empty, and "
                         "the tokenizer adds no BOS token); drop the empty ones")
    return encoded


def encode_example(tokenizer, example: Example, max_length: int) -> tuple[list[int], int]:
    """Token ids of a text or a (prompt, response) pair, and where the counted tokens start. Truncated to
    `max_length` tokens."""
    if isinstance(example, str):
        ids, start = tokenizer(example)["input_ids"], 0
    else:
        prompt, response = example
        ids = tokenizer(prompt)["input_ids"]
        start = len(ids)
        ids = ids + tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids[:max_length], start


@dataclass(frozen=True)
class Batch:
    """A right-padded batch. input_ids, attention_mask: [batch, tokens]; target_mask: [batch, tokens], True
    at the tokens that count (every token of a plain text; the response tokens of a pair); index: the
    examples' positions in the list they came from."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor
    index: list[int]

    @property
    def n_tokens(self) -> int:
        """Tokens in the batch, padding excluded."""
        return int(self.attention_mask.sum())

    def to(self, device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.target_mask.to(device),
                     self.index)


def encode_all(tokenizer, examples: Sequence[Example], max_length: int) -> list[tuple[list[int], int]]:
    return [encode_example(tokenizer, ex, max_length) for ex in examples]


def batches(tokenizer, examples: Sequence[Example], batch_size: int, max_length: int, device=None,
            encoded: list | None = None) -> list[Batch]:
    """Examples as right-padded batches of at most `batch_size`, grouped by length (`encoded`: the examples'
    `encode_example` results, when the caller already has them)."""
    check_size("batch_size", batch_size)
    check_size("max_length", max_length)
    encoded = encoded or encode_all(tokenizer, check_examples(examples), max_length)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for first in range(0, len(order), batch_size):
        index = order[first:first + batch_size]
        width = max(1, max(len(encoded[i][0]) for i in index))
        ids = torch.full((len(index), width), pad, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        target = torch.zeros((len(index), width), dtype=torch.bool)
        for row, i in enumerate(index):
            tokens, start = encoded[i]
            ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, :len(tokens)] = 1
            target[row, start:len(tokens)] = True
        out.append(Batch(ids, mask, target, index).to(device))
    return out


def left_padded(tokenizer, prompts: Sequence[str], batch_size: int, device=None):
    """Prompts as left-padded batches for generation, grouped by length: (indices, input_ids, attention_mask)."""
    check_size("batch_size", batch_size)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    for first in range(0, len(order), batch_size):
        index = order[first:first + batch_size]
        width = max(len(encoded[i]) for i in index)
        ids = torch.full((len(index), width), pad, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i], dtype=torch.long)
            mask[row, width - len(encoded[i]):] = 1
        yield index, ids.to(device), mask.to(device)


def warn_skipped(n_skipped: int, n_total: int, what: str) -> None:
    """Warn that `n_skipped` of `n_total` examples had no token to `what` (count, score)."""
    if n_skipped:
        warnings.warn(f"{n_skipped} of {n_total} examples have no token to {what} (a one-token text, an empty "
                      "response, or a response cut off by max_length) and were left out; raise max_length or drop "
                      "them", SkippedWarning, stacklevel=3)
