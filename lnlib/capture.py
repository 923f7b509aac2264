"""Capture: count how often each MLP neuron is active, with forward hooks on a live model.

A neuron is *active* on a token when its activation act(gate)_j is > 0 (`lnlib.models.mlp_activations` finds
that module in every supported family). SiLU (Llama, Mistral, Qwen) and GELU (Gemma, GPT-2) are both positive
exactly where their input is positive, so "active" means "gate pre-activation > 0".

Examples are plain texts (every token counts, BOS included) or (prompt, response) pairs (only the response's
tokens count, in one forward pass over prompt ⊕ response: the paper's statistic. The official code runs prompt ⊕
response and the prompt alone and subtracts; in a causal model the prompt's positions see the same inputs in
both, so the one-pass count is the same number, tested on a tiny model). Padding never counts. Only the model
body runs: the counts need no logits. Counting always runs in eval mode (the model's mode is restored after).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from lnlib import hooks, models, work
from lnlib.batching import batches, check_encoded, check_examples, check_size, encode_all, warn_skipped
from lnlib.config import progress_bar
from lnlib.counts import ActivationCounts


class _Counter:
    """Per-layer int64 counters of act > 0 at the positions of a [batch, tokens] mask (set per batch), kept on
    each layer's own device, and optionally per group of examples."""

    def __init__(self, n_layers: int, n_neurons: int, n_groups: int):
        self.shape, self.n_groups = (n_layers, n_neurons), n_groups
        self.over_zero: dict[int, torch.Tensor] = {}
        self.groups: dict[int, torch.Tensor] = {}
        self.mask: torch.Tensor | None = None
        self.row_groups: torch.Tensor | None = None
        self.bars: dict = {}

    def start_batch(self, mask: torch.Tensor, row_groups: torch.Tensor | None) -> None:
        self.mask, self.row_groups, self.bars = mask.bool(), row_groups, {}

    def _bar(self, out: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, 1]: 0 where a position counts, +inf elsewhere (one comparison applies the mask)."""
        key = (out.device, out.dtype)
        if key not in self.bars:
            if self.mask.shape != out.shape[:-1]:
                raise RuntimeError(f"activation {tuple(out.shape)} does not match the mask {tuple(self.mask.shape)}")
            zero = torch.zeros((), dtype=out.dtype, device=out.device)
            self.bars[key] = torch.where(self.mask.to(out.device), zero, torch.inf).to(out.dtype).unsqueeze(-1)
        return self.bars[key]

    def __call__(self, layer: int, out: torch.Tensor) -> None:
        if self.mask is None:
            raise RuntimeError("counting hook ran without a mask; use count_activations")
        if layer not in self.over_zero:
            self.over_zero[layer] = torch.zeros(self.shape[1], dtype=torch.int64, device=out.device)
            if self.n_groups:
                self.groups[layer] = torch.zeros(self.n_groups, self.shape[1], dtype=torch.int32, device=out.device)
        active = (out > self._bar(out)).view(torch.uint8)  # bool viewed as uint8 sums in int32
        if self.n_groups:
            rows = active.sum(1, dtype=torch.int32)  # [batch, neurons]
            self.groups[layer].index_add_(0, self.row_groups.to(out.device), rows)
            self.over_zero[layer] += rows.sum(0)
        else:
            self.over_zero[layer] += active.reshape(-1, out.shape[-1]).sum(0, dtype=torch.int32)

    def result(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        zeros = torch.zeros(self.shape[1], dtype=torch.int64, device=device)
        over_zero = torch.stack([self.over_zero.get(i, zeros).to(device) for i in range(self.shape[0])])
        if not self.n_groups:
            return over_zero, None
        empty = torch.zeros(self.n_groups, self.shape[1], dtype=torch.int32, device=device)
        return over_zero, torch.stack([self.groups.get(i, empty).to(device) for i in range(self.shape[0])], 1)


@torch.inference_mode()
def count_activations(model: nn.Module, tokenizer, examples: Sequence, batch_size: int = 8,
                      max_length: int = 512, groups: int = 0, progress: bool = True,
                      desc: str = "counting") -> ActivationCounts:
    """Count, for every MLP neuron, the tokens at which it is active (act(gate) > 0).

    examples: texts (every token counts) or (prompt, response) pairs (only response tokens count), or a mix.
    Examples are batched by length (`batch_size` per batch, right-padded; padding never counts) and
    truncated to `max_length` tokens. groups: also keep the counts of this many groups of consecutive examples
    (`ActivationCounts.groups`, for resampling over texts); 0: none. Examples with no token to count (an empty
    response, one cut off by `max_length`) are left out with a warning. Returns `ActivationCounts` on the CPU.
    """
    examples = check_examples(examples)
    check_size("batch_size", batch_size)
    check_size("max_length", max_length)
    if groups:
        check_size("groups", groups)
        groups = min(groups, len(examples))
    encoded = check_encoded(model, encode_all(tokenizer, examples, max_length), "examples")
    empty = sum(len(ids) <= start for ids, start in encoded)
    warn_skipped(empty, len(examples), "count")
    if empty == len(examples):
        raise ValueError("no example has a token to count; check the responses and max_length")
    group_of = torch.tensor([i * groups // len(examples) for i in range(len(examples))]) if groups else None
    counter = _Counter(models.n_layers(model), models.n_neurons(model), groups)
    group_tokens = torch.zeros(groups, dtype=torch.int64)
    n_tokens = 0
    device = models.input_device(model)
    runner = models.body(model)
    with models.evaluating(model), hooks.on_layers(model, counter, "act"):
        for batch in progress_bar(batches(tokenizer, examples, batch_size, max_length, device, encoded), desc,
                                  progress):
            rows = group_of[batch.index] if groups else None
            counter.start_batch(batch.target_mask, rows)
            runner(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            targets = batch.target_mask.sum(1).cpu()
            n_tokens += int(targets.sum())
            if groups:
                group_tokens.index_add_(0, rows, targets)
            work.add("forward", batch.n_tokens)
    over_zero, by_group = counter.result(torch.device("cpu"))
    return ActivationCounts(over_zero, n_tokens, len(examples), empty, by_group,
                            group_tokens if groups else None)


def count_by_language(model: nn.Module, tokenizer, examples_by_lang: Mapping[str, Sequence],
                      **options) -> dict[str, ActivationCounts]:
    """`count_activations` for each language of `examples_by_lang` (lang -> examples), in its order. For counts
    that are cached and shared between chapters, use `lnlib.pipeline`."""
    if not isinstance(examples_by_lang, Mapping) or not examples_by_lang:
        raise ValueError("examples_by_lang must map each language code to its examples, e.g. {'en': [...]}")
    return {lang: count_activations(model, tokenizer, examples, desc=f"counting {lang}", **options)
            for lang, examples in examples_by_lang.items()}
