"""Intervene: switch MLP neurons off, as the paper's deactivation experiments do (Sec. 4; Figs 2, 7–13).

A neuron set is given per layer, in the official mask format for one language: a list of `n_layers` int64
tensors of neuron indices (`Identification.mask(kind)[k]`, `Identification.general_mask()`). Inside
`with deactivate(model, neurons):` the activation act(gate)_j of every listed neuron is set to 0 at every
position, prompt and generated tokens alike, so the neuron adds nothing to the residual stream (the same as
zeroing column j of the down projection). Zero is an ablation, not "inactive": SiLU and GELU are slightly
negative for negative inputs.

The paper's three settings for a language k (`SETTINGS`, built by `deactivation_sets`):
"specific" (S_k), "specific+related" (S_k ∪ R_k, the released mask) and "specific+related+general"
(S_k ∪ R_k ∪ G, with G the same general neurons for every k).

The random control (`random_like`) draws, in every layer, as many neurons as the set has there, uniformly
from all of that layer's neurons, with a seeded generator: the control matches the set layer by layer, so it
removes as much capacity from each layer, but not the same neurons (it may overlap the set by chance).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import pandas as pd
import torch
from torch import nn

from lnlib import hooks, models

SETTINGS: dict[str, tuple[str, ...]] = {
    "specific": ("specific",),
    "specific+related": ("specific", "related"),
    "specific+related+general": ("specific", "related", "general"),
}
"""The paper's three deactivation settings and the neuron classes each switches off."""


# ----------------------------------------------------------------------------------------------
# Neuron sets


def check_neurons(neurons: Sequence, n_layers: int, n_neurons: int) -> list[torch.Tensor]:
    """Validate a per-layer neuron set and return it as sorted, distinct int64 CPU tensors.

    neurons: `n_layers` entries, each a 1-D integer tensor (or list) of indices in [0, n_neurons).
    """
    if isinstance(neurons, torch.Tensor) or not isinstance(neurons, Sequence):
        raise ValueError("neurons must be a list with one 1-D index tensor per layer (the official mask format "
                         "for one language, e.g. Identification.mask()[k]), not "
                         f"{type(neurons).__name__}")
    if len(neurons) != n_layers:
        raise ValueError(f"neurons has {len(neurons)} layer entries but the model has {n_layers} layers; give one "
                         "index tensor per layer (empty for a layer with no neuron to switch off)")
    out = []
    for layer, idx in enumerate(neurons):
        if idx is None:
            raise ValueError(f"layer {layer}: got None; give an empty index list [] for a layer with no neuron")
        try:
            idx = torch.as_tensor(idx)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"layer {layer}: neuron indices must be a list or tensor of integers ({exc})") from exc
        if idx.numel() == 0 and idx.dim() == 1:  # an empty list becomes a float tensor
            idx = idx.to(torch.int64)
        if idx.dtype == torch.bool:
            raise ValueError(f"layer {layer}: got a boolean mask; pass neuron indices instead "
                             "(mask.nonzero().squeeze(1))")
        if idx.is_floating_point() or idx.is_complex():
            raise ValueError(f"layer {layer}: neuron indices must be integers, got dtype {idx.dtype}")
        if idx.dim() != 1:
            raise ValueError(f"layer {layer}: neuron indices must be 1-D, got shape {tuple(idx.shape)}")
        idx = idx.to(torch.int64).cpu()
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n_neurons):
            raise ValueError(f"layer {layer}: neuron indices must lie in [0, {n_neurons}), got "
                             f"min {int(idx.min())} and max {int(idx.max())}")
        out.append(torch.unique(idx))
    return out


def single(n_layers: int, layer: int, neuron: int) -> list[torch.Tensor]:
    """The per-layer set holding one neuron (empty index tensors elsewhere)."""
    out = [torch.zeros(0, dtype=torch.int64) for _ in range(n_layers)]
    out[layer] = torch.tensor([neuron], dtype=torch.int64)
    return out


def layer_sizes(neurons: Sequence) -> list[int]:
    """Number of distinct neurons in each layer."""
    return [len(torch.unique(torch.as_tensor(idx, dtype=torch.int64))) for idx in neurons]


def n_neurons_in(neurons: Sequence) -> int:
    """Number of distinct (layer, neuron) pairs in a per-layer set."""
    return sum(layer_sizes(neurons))


def union(*sets: Sequence) -> list[torch.Tensor]:
    """Layer-by-layer union of per-layer neuron sets (e.g. specific ∪ related ∪ general)."""
    if not sets:
        raise ValueError("union of no sets: give at least one per-layer neuron set")
    n_layers = {len(s) for s in sets}
    if len(n_layers) != 1:
        raise ValueError(f"sets have different numbers of layers {sorted(n_layers)}")
    return [torch.unique(torch.cat([torch.as_tensor(s[layer], dtype=torch.int64).reshape(-1) for s in sets]))
            for layer in range(n_layers.pop())]


def random_like(neurons: Sequence, n_neurons: int, seed: int = 0) -> list[torch.Tensor]:
    """A random control: in every layer, as many distinct neurons as `neurons` has there, drawn uniformly
    from [0, n_neurons) with a generator seeded by `seed` (the same seed gives the same set)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for size in layer_sizes(neurons):
        if size > n_neurons:
            raise ValueError(f"cannot draw {size} distinct neurons from a layer of {n_neurons}")
        out.append(torch.randperm(n_neurons, generator=generator)[:size].sort().values)
    return out


def deactivation_sets(ident, setting: str) -> dict[str, list[torch.Tensor]]:
    """For each language of `ident` (an `lnlib.identify.Identification`), the neurons that one of the
    paper's `SETTINGS` switches off: "specific", "specific+related" or "specific+related+general"."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    kinds = SETTINGS[setting]
    specific, related = ident.mask("specific"), ident.mask("related")
    general = ident.general_mask()
    out = {}
    for k, lang in enumerate(ident.langs):
        parts = [specific[k]] + ([related[k]] if "related" in kinds else []) + ([general] if "general" in kinds
                                                                             else [])
        out[lang] = union(*parts)
    return out


def sizes_table(sets: Mapping[str, Mapping[str, Sequence]]) -> pd.DataFrame:
    """Neurons in each set: sets maps a setting (e.g. each of `SETTINGS`) to {language: per-layer set}, as
    `deactivation_sets` gives them; rows are the languages, columns the settings."""
    return pd.DataFrame({setting: {lang: n_neurons_in(neurons) for lang, neurons in by_lang.items()}
                         for setting, by_lang in sets.items()}).rename_axis("language")


def matched_random(neurons: Sequence, probs: torch.Tensor, seed: int = 0, bins: int = 10) -> list[torch.Tensor]:
    """A stricter random control: in every layer, as many neurons as `neurons` has there, each drawn from the
    neurons of that layer whose mean activation probability (over languages; probs [layers, neurons, K]) falls in
    the same of `bins` quantile bins as the neuron it replaces, never from `neurons` itself. It matches where the
    set sits and how often its neurons fire, not which language they serve."""
    checked = check_neurons(neurons, probs.shape[0], probs.shape[1])
    mean = probs.float().mean(-1)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for layer, idx in enumerate(checked):
        if not len(idx):
            out.append(idx)
            continue
        edges = torch.quantile(mean[layer], torch.linspace(0, 1, bins + 1)[1:-1])
        bin_of = torch.bucketize(mean[layer], edges)
        taken = torch.zeros(probs.shape[1], dtype=torch.bool)
        taken[idx] = True
        chosen = []
        for b in bin_of[idx].tolist():
            pool = ((bin_of == b) & ~taken).nonzero().squeeze(1)
            if not len(pool):  # an exhausted bin: any neuron of the layer not taken yet
                pool = (~taken).nonzero().squeeze(1)
            pick = pool[torch.randint(len(pool), (1,), generator=generator)]
            taken[pick] = True
            chosen.append(pick)
        out.append(torch.cat(chosen).sort().values)
    return out


# ----------------------------------------------------------------------------------------------
# The context managers


def _edit_neurons(model: nn.Module, neurons: Sequence, edit):
    """Hooks that apply `edit(output, index)` to the listed neurons of each layer's activation, with each layer's
    index tensor moved to that layer's device once."""
    acts = models.mlp_activations(model)
    checked = {layer: idx for layer, idx in enumerate(check_neurons(neurons, len(acts), models.n_neurons(model)))
               if len(idx)}
    on_device: dict = {}

    def fn(layer: int, out: torch.Tensor) -> torch.Tensor:
        key = (layer, out.device)
        if key not in on_device:
            on_device[key] = checked[layer].to(out.device)
        return edit(out, on_device[key])

    return hooks.on_layers(model, fn, "act", layers=list(checked), edits=True)


@contextmanager
def deactivate(model: nn.Module, neurons: Sequence) -> Iterator[None]:
    """Switch off `neurons` (one index tensor per layer) in `model` while the block runs: a forward hook on
    each layer's MLP activation module returns its output with those neurons set to 0, at every position.
    Hooks are removed on exit, also when the block raises. Layers with no index get no hook."""
    with _edit_neurons(model, neurons, lambda out, idx: out.index_fill(-1, idx, 0)):
        yield


@contextmanager
def zero_columns(model: nn.Module, neurons: Sequence) -> Iterator[None]:
    """`deactivate` done on the weights: while the block runs, the columns of `neurons` (one index tensor per
    layer) in each layer's down projection are 0 (rows for GPT-2's Conv1D, which stores (in, out)), so the neurons
    add nothing to the residual stream. The weights are restored on exit, also when the block raises."""
    downs = models.mlp_down_projections(model)
    checked = check_neurons(neurons, len(downs), models.n_neurons(model))
    saved = []
    try:
        with torch.no_grad():
            for down, idx in zip(downs, checked, strict=True):
                dim, idx = (1 if isinstance(down, nn.Linear) else 0), idx.to(down.weight.device)
                saved.append((down, dim, idx, down.weight.index_select(dim, idx).clone()))
                down.weight.index_fill_(dim, idx, 0)
        yield
    finally:
        with torch.no_grad():
            for down, dim, idx, values in saved:
                down.weight.index_copy_(dim, idx, values)


@contextmanager
def scale(model: nn.Module, neurons: Sequence, factor: float) -> Iterator[None]:
    """Multiply the activation of `neurons` by `factor` at every position while the block runs (factor 0 is
    `deactivate`; factor > 1 amplifies, as in steering by neurons)."""
    factor = float(factor)

    def edit(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return out.index_copy(-1, idx, out.index_select(-1, idx) * factor)

    with _edit_neurons(model, neurons, edit):
        yield


@contextmanager
def steer(model: nn.Module, layer: int, direction: torch.Tensor, alpha: float) -> Iterator[None]:
    """Add `alpha` times `direction` [hidden] to the residual stream after block `layer`, at every position,
    while the block runs (activation steering with, e.g., a difference-of-means direction)."""
    layer = models.check_layer(model, layer)
    direction = torch.as_tensor(direction)
    if direction.dim() != 1:
        raise ValueError(f"direction must be one vector [hidden], got shape {tuple(direction.shape)}")

    def add(_: int, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[-1] != direction.shape[0]:
            raise ValueError(f"direction has {direction.shape[0]} entries, the residual stream {hidden.shape[-1]}")
        return hidden + alpha * direction.to(hidden.device, hidden.dtype)

    with hooks.on_layers(model, add, "block", layers=[layer], edits=True):
        yield
