"""Counts: how often each MLP neuron was active, per language, and the activation probabilities made from them.

`ActivationCounts` holds int64 `over_zero [layers, neurons]` (tokens at which a neuron was active), the tokens and
examples counted, and optionally the same counts per *group* of consecutive examples (`groups [G, layers,
neurons]`), which lets a statistic be resampled over texts (bootstrap, disjoint halves) without running the model
again. Counts of disjoint examples add up exactly, so shards of a corpus counted apart combine by summation.

Also here: the counts file (one int64 tensor per language, totals and provenance in the header), per-language
counts stacked into probabilities `[layers, neurons, languages]` (the input of `lnlib.identify`), and the paper's
released Mistral-7B counts turned into response-only probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from lnlib import store
from lnlib.data import RELEASED_MODEL, RELEASED_REVISION, load_released_counts


@dataclass(frozen=True, eq=False)
class ActivationCounts:
    """How often each MLP neuron was active.

    over_zero: int64 [layers, neurons], tokens at which act(gate) > 0;
    n_tokens: tokens counted (response tokens for pairs, every token of plain texts; never padding);
    n_examples: examples seen; n_empty: examples that had no token to count;
    groups: int32 [G, layers, neurons] or None, the counts of G groups of consecutive examples (they sum to
    over_zero); group_tokens: int64 [G], the tokens of each group.
    """

    over_zero: torch.Tensor
    n_tokens: int
    n_examples: int = 0
    n_empty: int = 0
    groups: torch.Tensor | None = None
    group_tokens: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(layers, neurons)."""
        return tuple(self.over_zero.shape)

    @property
    def n_groups(self) -> int:
        return 0 if self.groups is None else len(self.groups)

    def probs(self) -> torch.Tensor:
        """Activation probability [layers, neurons] (float32): over_zero / n_tokens."""
        return activation_probs(self.over_zero, self.n_tokens)

    def cpu(self) -> ActivationCounts:
        move = (lambda t: None if t is None else t.cpu())
        return ActivationCounts(self.over_zero.cpu(), self.n_tokens, self.n_examples, self.n_empty,
                                move(self.groups), move(self.group_tokens))

    def __add__(self, other: ActivationCounts) -> ActivationCounts:
        """Counts over both sets of examples (e.g. MGSM + MSVAMP, or two shards)."""
        if not isinstance(other, ActivationCounts):
            return NotImplemented
        if self.shape != other.shape:
            raise ValueError(f"cannot add counts of shapes {self.shape} and {other.shape} (different models?)")
        both = self.groups is not None and other.groups is not None
        return ActivationCounts(
            self.over_zero + other.over_zero.to(self.over_zero.device), self.n_tokens + other.n_tokens,
            self.n_examples + other.n_examples, self.n_empty + other.n_empty,
            torch.cat([self.groups, other.groups.to(self.groups.device)]) if both else None,
            torch.cat([self.group_tokens, other.group_tokens.to(self.group_tokens.device)]) if both else None)

    def head(self, k: int) -> ActivationCounts:
        """The counts of the first `k` groups, keeping them (the first texts of the examples, exactly)."""
        if self.groups is None or not 0 < k <= self.n_groups:
            raise ValueError(f"need 1 to {self.n_groups} kept groups, got {k}")
        groups, tokens = self.groups[:k], self.group_tokens[:k]
        per_group = self.n_examples // self.n_groups
        return ActivationCounts(groups.sum(0, dtype=torch.int64), int(tokens.sum()), per_group * k, 0, groups.clone(),
                                tokens.clone())

    def select(self, groups: torch.Tensor) -> ActivationCounts:
        """The counts of the chosen groups (int64 indices, repeats allowed: a bootstrap resample)."""
        if self.groups is None:
            raise ValueError("these counts keep no groups; count with groups=G to resample over texts")
        groups = torch.as_tensor(groups, dtype=torch.int64)
        over_zero = self.groups.index_select(0, groups.to(self.groups.device)).sum(0, dtype=torch.int64)
        tokens = int(self.group_tokens[groups.to(self.group_tokens.device)].sum())
        return ActivationCounts(over_zero, tokens, 0, 0)


def activation_probs(over_zero: torch.Tensor, n_tokens: torch.Tensor | int) -> torch.Tensor:
    """Activation probability from counts: over_zero [..., languages] / n_tokens [languages], as float32.
    A language with no counted token is an error (its probabilities would be meaningless zeros)."""
    tokens = torch.as_tensor(n_tokens, dtype=torch.float64)
    if (tokens <= 0).any():
        raise ValueError("a language has no counted token, so it has no activation probability; check its "
                         "examples (empty responses, or responses cut off by max_length)")
    return (over_zero.to(torch.float64) / tokens).to(torch.float32)


def response_probs(full: torch.Tensor, prefix: torch.Tensor,
                   full_tokens: torch.Tensor, prefix_tokens: torch.Tensor) -> torch.Tensor:
    """Response-only probability with the official two-pass trick:
    clamp(full - prefix, min=0) / (full tokens - prefix tokens)."""
    return activation_probs((full - prefix).clamp(min=0), full_tokens - prefix_tokens)


def probs_from_counts(counts, scope: str = "response") -> torch.Tensor:
    """Probabilities [layers, neurons, languages] from two-pass counts (e.g. `lnlib.data.ReleasedCounts`:
    attributes full, prefix [layers, neurons, languages] and full_tokens, prefix_tokens [languages]).

    scope: "full" (prompt + response tokens), "prefix" (prompt only) or "response" (full − prefix).
    """
    if scope == "full":
        return activation_probs(counts.full, counts.full_tokens)
    if scope == "prefix":
        return activation_probs(counts.prefix, counts.prefix_tokens)
    if scope == "response":
        return response_probs(counts.full, counts.prefix, counts.full_tokens, counts.prefix_tokens)
    raise ValueError(f"scope must be 'full', 'prefix' or 'response', got {scope!r}")


def load_released_probs(dataset: str = "mgsm") -> torch.Tensor:
    """The paper's released statistics as response-only probabilities, float32 [32, 14336, 10] in `LANGS` order."""
    return probs_from_counts(load_released_counts(dataset))


def released_provenance(dataset: str = "mgsm") -> dict:
    """Provenance of the paper's released statistics: model id and revision, dataset, response tokens."""
    c = load_released_counts(dataset)
    return {"model": RELEASED_MODEL, "revision": RELEASED_REVISION, "dataset": dataset, "scope": "response",
            "tokens": dict(zip(c.langs, c.response_tokens.tolist(), strict=True))}


def stack_counts(counts: Mapping[str, ActivationCounts], langs: Sequence[str] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-language counts as (over_zero [layers, neurons, K], n_tokens [K]) in `langs` order (default: the
    mapping's own order), on the CPU."""
    langs = list(counts) if langs is None else list(langs)
    missing = [lang for lang in langs if lang not in counts]
    if missing:
        raise ValueError(f"no counts for {', '.join(missing)}; have {', '.join(counts)}")
    shapes = {counts[lang].shape for lang in langs}
    if len(shapes) != 1:
        raise ValueError(f"counts have different shapes {sorted(shapes)}; they must come from one model")
    over_zero = torch.stack([counts[lang].over_zero.cpu() for lang in langs], -1)
    return over_zero, torch.tensor([counts[lang].n_tokens for lang in langs], dtype=torch.int64)


def stacked_probs(counts: Mapping[str, ActivationCounts], langs: Sequence[str] | None = None) -> torch.Tensor:
    """Activation probabilities [layers, neurons, K] in `langs` order: the input of `lnlib.identify`."""
    return activation_probs(*stack_counts(counts, langs))


def merge(parts: Sequence[Mapping[str, ActivationCounts]]) -> dict[str, ActivationCounts]:
    """Counts of disjoint shards of the same examples, added language by language (exact: integer sums)."""
    if not parts:
        raise ValueError("nothing to merge: give at least one set of counts")
    langs = list(parts[0])
    for part in parts[1:]:
        if list(part) != langs:
            raise ValueError(f"shards hold different languages: {langs} and {list(part)}")
    return {lang: sum((part[lang] for part in parts[1:]), parts[0][lang]) for lang in langs}


def save_counts(counts: Mapping[str, ActivationCounts], path, provenance: dict | None = None,
                overwrite: bool = False, kind: str = "counts"):
    """Write per-language counts (one int64 tensor per language, and its groups when kept) atomically; the header
    records the token, example and empty-example totals and `provenance` (model, data, protocol: what you
    know; nothing is filled in for you)."""
    if not isinstance(counts, Mapping) or not counts or not all(isinstance(c, ActivationCounts)
                                                                for c in counts.values()):
        raise ValueError("counts must map each language code to its ActivationCounts (what count_by_language "
                         f"returns), got {type(counts).__name__}")
    if provenance is not None and not isinstance(provenance, dict):
        raise ValueError(f"provenance must be a dict of JSON values, got {type(provenance).__name__}")
    tensors = {}
    for lang, c in counts.items():
        tensors[lang] = c.over_zero
        if c.groups is not None:
            tensors[f"{lang}/groups"] = c.groups
            tensors[f"{lang}/group_tokens"] = c.group_tokens
    record = {"langs": list(counts), "n_tokens": {lang: c.n_tokens for lang, c in counts.items()},
              "n_examples": {lang: c.n_examples for lang, c in counts.items()},
              "n_empty": {lang: c.n_empty for lang, c in counts.items()}, "provenance": provenance or {}}
    return store.save(path, kind, tensors, record, overwrite)


def load_counts(path, kind: str = "counts") -> tuple[dict[str, ActivationCounts], dict]:
    """Read counts written by `save_counts`: ({lang: ActivationCounts}, provenance)."""
    tensors, record = store.load(path, kind)
    counts = {lang: ActivationCounts(tensors[lang], int(record["n_tokens"][lang]), int(record["n_examples"][lang]),
                                     int(record["n_empty"][lang]), tensors.get(f"{lang}/groups"),
                                     tensors.get(f"{lang}/group_tokens"))
              for lang in record["langs"]}
    return counts, record["provenance"]

