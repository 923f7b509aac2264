"""Hooks: the one place lnlib attaches code to a model's layers. Every hook lives inside a context manager that
removes it on exit, also when the body raises.

`on_layers` calls `fn(layer, output)` after each layer's MLP activation module (where="act") or each block
(where="block") runs; when `fn` returns a tensor, that tensor replaces the output (for a block returning a tuple,
its first element). Hooks that change outputs mark the model as *edited* while they are attached
(`is_edited`), so that nothing computed then is cached as the intact model's. `skip_blocks` makes chosen blocks
return given outputs without computing anything, which lets a later computation start from a stored residual
stream.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from lnlib import models

_EDITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_OURS: set[int] = set()  # ids of the hook handles lnlib holds right now


def layer_modules(model: nn.Module, where: str = "act") -> list[nn.Module]:
    """Per layer, the MLP activation modules (where="act") or the blocks (where="block")."""
    if where == "act":
        return models.mlp_activations(model)
    if where == "block":
        return models.blocks(model)
    raise ValueError(f"where must be 'act' or 'block', got {where!r}")


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, value):
    return (value, *output[1:]) if isinstance(output, tuple) else value


@contextmanager
def on_layers(model: nn.Module, fn: Callable[[int, torch.Tensor], torch.Tensor | None], where: str = "act",
              layers: Mapping[int, object] | list[int] | None = None, edits: bool = False,
              raw: bool = False) -> Iterator[None]:
    """Run `fn(layer, output)` after the chosen layers (default all) of `where` ("act" or "block"). edits=True:
    `fn` may return a replacement output, and the model counts as edited while the block runs. raw=True: `fn`
    gets the output exactly as the module returned it (a block may return a tuple), for reading only."""
    modules = layer_modules(model, where)
    chosen = range(len(modules)) if layers is None else sorted(layers)

    def hook_for(layer: int):
        def hook(module: nn.Module, args, output):
            value = fn(layer, output if raw else _first(output))
            if value is not None:
                if not edits:
                    raise RuntimeError("a reading hook returned a value; use on_layers(..., edits=True) to edit")
                return _replace_first(output, value)
            return None

        return hook

    handles = []
    if edits:
        _EDITS[model] = _EDITS.get(model, 0) + 1
    try:
        for layer in chosen:
            handle = modules[layer].register_forward_hook(hook_for(layer))
            handles.append(handle)
            _OURS.add(handle.id)
        yield
    finally:
        for handle in handles:
            handle.remove()
            _OURS.discard(handle.id)
        if edits:
            _EDITS[model] -= 1


@contextmanager
def skip_blocks(model: nn.Module, outputs: Mapping[int, object]) -> Iterator[None]:
    """While the block runs, block i of `outputs` returns `outputs[i]` (an output as the block itself returned
    it) instead of computing; the model counts as edited. Restores every block on exit."""
    blocks = models.blocks(model)
    saved = {}
    _EDITS[model] = _EDITS.get(model, 0) + 1
    try:
        for layer, output in outputs.items():
            block = blocks[layer]
            saved[layer] = block.__dict__.get("forward")  # an instance attribute (e.g. accelerate's) or None
            block.forward = lambda *args, _out=output, **kwargs: _out
        yield
    finally:
        for layer, previous in saved.items():
            if previous is None:
                del blocks[layer].forward
            else:
                blocks[layer].forward = previous
        _EDITS[model] -= 1


def _user_hooks(model: nn.Module) -> list[tuple[int, object]]:
    """(handle id, function) of every forward hook and pre-hook on `model`, except the bookkeeping hooks that
    transformers and accelerate install themselves (e.g. transformers 5 records hidden states with hooks that it
    leaves in place)."""
    found = []
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            found += [(key, fn) for key, fn in hooks.items()
                      if not (getattr(fn, "__module__", "") or "").startswith(("transformers.", "accelerate."))]
    return found


def is_edited(model: nn.Module) -> bool:
    """True while an lnlib edit (deactivation, steering, skipped blocks) is attached to `model`, or while any
    module of it carries a forward hook that neither lnlib nor transformers attached (it might change outputs)."""
    return bool(_EDITS.get(model, 0)) or any(key not in _OURS for key, _ in _user_hooks(model))


def hook_count(model: nn.Module) -> int:
    """Forward hooks and pre-hooks on `model` other than transformers' own bookkeeping (0 when lnlib left nothing
    behind)."""
    return len(_user_hooks(model))
