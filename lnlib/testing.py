"""Checks for the book's exercises: compare a reader's function with lnlib's reference on small inputs.

Each ``check_*`` function calls the reader's function on a few seeded random cases, raises an
AssertionError that shows the first mismatch, and prints one line when every case matches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lnlib import align, evaluate, identify


def _close(got, expected, atol: float) -> bool:
    if isinstance(expected, torch.Tensor):
        got = torch.as_tensor(got)
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
    check(fn, identify.response_probs, cases, "response_probs")


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
