"""Checks for the book's exercises: compare a reader's function with lnlib's reference on small inputs.

Each ``check_*`` function calls the reader's function on a few seeded random cases, raises an
AssertionError that shows the first mismatch, and prints one line when every case matches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lnlib import align, compare, counts, distributed, evaluate, explorer, identify, stages
from lnlib.data import LANGS


def _as_tensor(value) -> torch.Tensor:
    if hasattr(value, "to_numpy"):  # a pandas DataFrame or Series
        value = value.to_numpy().copy()
    return torch.as_tensor(value)


def _close(got, expected, atol: float) -> bool:
    if isinstance(expected, torch.Tensor):
        try:
            got = _as_tensor(got)
        except (TypeError, ValueError, RuntimeError):
            return False
        return got.shape == expected.shape and torch.allclose(got.double(), expected.double(), atol=atol)
    if isinstance(expected, (list, tuple)):
        return len(got) == len(expected) and all(_close(g, e, atol) for g, e in zip(got, expected, strict=True))
    return abs(float(got) - float(expected)) <= atol


def check(fn: Callable, reference: Callable, cases: Sequence[tuple], name: str, atol: float = 1e-6) -> None:
    """Assert ``fn(*case) == reference(*case)`` (within atol) for every case; print a line when all match."""
    for i, case in enumerate(cases):
        expected = reference(*case)
        got = fn(*case)
        if not _close(got, expected, atol):
            raise AssertionError(f"{name}: case {i} differs.\n  inputs: {_describe(case)}\n  expected: "
                                 f"{_describe((expected,))}\n  got: {_describe((got,))}")
    print(f"{name}: all {len(cases)} cases match the reference")


def _describe(values: tuple) -> str:
    parts = []
    for v in values:
        if isinstance(v, torch.Tensor) and v.numel() > 12:
            parts.append(f"tensor{tuple(v.shape)}")
        elif isinstance(v, torch.Tensor):
            parts.append(str(v.tolist()))
        else:
            parts.append(repr(v))
    return ", ".join(parts)


def _probs(seed: int, shape=(3, 7, 4)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(shape, generator=g) ** 2
    probs[0, 0] = 0  # a neuron that never fires
    return probs


def check_response_probs(fn: Callable) -> None:
    """fn(full, prefix, full_tokens, prefix_tokens) -> response-only probabilities."""
    cases = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        prefix = torch.randint(0, 50, (2, 5, 3), generator=g)
        full = prefix + torch.randint(-3, 60, (2, 5, 3), generator=g)
        cases.append((full, prefix, torch.tensor([200, 220, 240]), torch.tensor([100, 90, 80])))
    check(fn, counts.response_probs, cases, "response_probs")


def check_threshold(fn: Callable) -> None:
    """fn(probs, bar) -> tau, the value at rank round(bar * n) of all probabilities."""
    check(fn, identify.threshold, [(_probs(s), bar) for s in range(3) for bar in (0.5, 0.95)], "threshold")


def check_normalised_entropy(fn: Callable) -> None:
    """fn(probs) -> normalised entropy [layers, neurons] in [0, 1] (official form)."""
    check(fn, identify.normalised_entropy, [(_probs(s),) for s in range(3)], "normalised_entropy", atol=1e-5)


def check_retrieval_accuracy(fn: Callable) -> None:
    """fn(queries, targets) -> share of queries whose most cosine-similar target is the parallel one."""
    cases = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        targets = torch.randn(6, 4, generator=g)
        cases.append((targets + 0.8 * torch.randn(6, 4, generator=g), targets))
    check(fn, evaluate.retrieval_accuracy, cases, "retrieval_accuracy")


def check_dpo_loss(fn: Callable) -> None:
    """fn(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta) -> DPO loss."""
    cases = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        logps = -torch.rand(4, 5, generator=g) * 20
        cases.append((*logps, 0.1 * (seed + 1)))
    check(fn, align.dpo_loss, cases, "dpo_loss", atol=1e-5)


def count_active_reference(activations: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """What `lnlib.capture`'s hook adds per layer and batch: for every neuron, the counted positions where
    its activation is > 0 (strictly). activations: [batch, tokens, neurons]; counted: bool [batch, tokens]
    (False for padding and prompt tokens). Returns int64 [neurons]. (The tests check it against
    `capture.count_activations` on a tiny model.)"""
    return ((activations > 0) & counted.bool()[..., None]).sum((0, 1)).to(torch.int64)


def check_count_active(fn: Callable) -> None:
    """fn(activations [batch, tokens, neurons], counted bool [batch, tokens]) -> int64 [neurons]: how often
    each neuron is active (> 0) at the counted positions."""
    cases = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        acts = torch.randn(2 + seed, 6, 5, generator=g)
        acts[0, 0] = 0.0  # exactly zero is not active
        counted = torch.rand(acts.shape[:2], generator=g) > 0.4
        counted[0, 0] = True  # ... at a position that counts
        counted[:, -1] = False  # padding at the end of every row
        cases.append((acts, counted))
    check(fn, count_active_reference, cases, "count_active")


def check_others_above(fn: Callable) -> None:
    """fn(above bool [neurons, K]) -> [K, K] counts: row k, column m = neurons above τ in language k and in
    exactly m other languages (`lnlib.stages.others_above`, as a tensor or DataFrame)."""
    cases = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        above = torch.rand(40, 4 + seed, generator=g) > 0.5
        above[0] = True  # a general neuron
        above[1] = False  # a neuron above τ nowhere
        cases.append((above,))

    def reference(above: torch.Tensor) -> torch.Tensor:
        langs = LANGS[:above.shape[1]]
        return _as_tensor(stages.others_above(above, langs))

    check(fn, reference, cases, "others_above")


def check_separation(fn: Callable) -> None:
    """fn(probs [..., K], tau) -> [...]: lowest probability above τ minus highest at or below it (an empty
    group counts as 0), as `lnlib.explorer.separation`."""
    cases = []
    for seed in range(3):
        probs = _probs(seed, (2, 6, 5))
        probs[1, 0] = 0.9  # above τ everywhere: a general neuron
        probs[1, 1, 2] = 0.95  # above τ in one language only
        probs[1, 1, [0, 1, 3, 4]] = 0.1
        cases.append((probs, 0.5))
    check(fn, explorer.separation, cases, "separation", atol=1e-6)


def _identification_pairs(n: int = 3) -> list[tuple]:
    """Pairs of identifications of small random probability arrays, the second a perturbed copy of the first."""
    pairs = []
    for seed in range(n):
        base = _probs(seed, (3, 40, 4))
        other = (base + 0.1 * _probs(seed + 100, (3, 40, 4))).clamp(max=1.0)
        langs = LANGS[:4]
        pairs.append((identify.identify(base, 0.05, rate=0.2, bar=0.7, langs=langs),
                      identify.identify(other, 0.05, rate=0.2, bar=0.7, langs=langs)))
    return pairs


def check_overlap(fn: Callable) -> None:
    """fn(base, other, kind) -> overlap ratio in % of two `Identification` objects: size(A ∩ B) / size(A) over
    (layer, neuron, language) triples of class `kind` (over (layer, neuron) pairs for "general")."""
    cases = [(a, b, kind) for a, b in _identification_pairs() for kind in ("specific", "related", "general")]
    cases = [case for case in cases if len(case[0].neurons(case[2]))]  # A must not be empty
    check(fn, lambda a, b, kind: 100 * compare.overlap_ratio(a, b, kind), cases, "overlap", atol=1e-9)


def check_group_change(fn: Callable) -> None:
    """fn(base, other, trained) -> {"trained": (specific, related), "untrained": (specific, related)}: the mean
    change per language of specific and related neuron counts, English left out of "untrained"."""
    def reference(base, other, trained):
        means = compare.lang_change(base, other, trained)[1]
        return [means.loc["trained"].tolist(), means.loc["untrained"].tolist()]

    def answer(base, other, trained):
        got = fn(base, other, trained)
        return [list(got["trained"]), list(got["untrained"])]

    cases = [(a, b, trained) for a, b in _identification_pairs() for trained in (["ru"], ["ru", "es"])]
    check(answer, reference, cases, "group_change", atol=1e-9)


def check_perplexity(fn: Callable) -> None:
    """fn(nll_sum, n_tokens, aggregation) -> perplexity: nll_sum [texts] summed NLL per text (nats), n_tokens
    [texts] scored tokens per text; aggregation "official" (mean of per-text mean NLL, then exp) or "token"
    (total NLL over total tokens, then exp)."""
    cases = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        n_tokens = torch.randint(1, 40, (5,), generator=g)
        nll_sum = (torch.rand(5, generator=g, dtype=torch.float64) * 4 + 0.5) * n_tokens
        cases += [(nll_sum, n_tokens, aggregation) for aggregation in ("official", "token")]
    check(fn, lambda nll, n, aggregation: evaluate.TextNLL(nll, n).perplexity(aggregation), cases,
          "perplexity", atol=1e-6)


def check_diffmean(fn: Callable) -> None:
    """fn(target_states [texts, hidden], source_states [texts, hidden]) -> [hidden]: the difference of the two
    means, as `lnlib.controls.diffmean_direction` takes it."""
    cases = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        cases.append((torch.randn(3 + seed, 8, generator=g), torch.randn(5, 8, generator=g) + 1.0))
    check(fn, lambda t, s: t.mean(0) - s.mean(0), cases, "diffmean", atol=1e-6)


def check_batch_share(fn: Callable) -> None:
    """fn(n_batches, rank, size) -> the batch indices rank counts, as `lnlib.distributed.batch_share` deals them."""
    cases = [(n, rank, size) for n, size in ((10, 3), (7, 2), (2, 4), (0, 2), (250, 8)) for rank in range(size)]
    for case in cases:
        if list(fn(*case)) != distributed.batch_share(*case):
            raise AssertionError(f"batch share: inputs (n_batches, rank, size) = {case}\n  expected: "
                                 f"{distributed.batch_share(*case)}\n  got: {list(fn(*case))}")
    print(f"batch share: all {len(cases)} cases match the reference")
