"""The count cache: counts computed once are read back instead of recounted, by a later call or a later chapter.

A cache entry is found by a key that covers everything the counts depend on: a content hash of every parameter
and buffer of the model, the tokenizer (its class, full definition and special tokens), the examples, the
settings (`max_length`, groups) and the counts format version. Counting while an edit is attached to the model
(a deactivation, a steering vector, a foreign forward hook) bypasses the cache. An entry that cannot be read
(damaged, truncated, written by another format) is reported with its path and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from lnlib import hooks, store
from lnlib.batching import check_examples
from lnlib.capture import count_activations, count_by_language
from lnlib.config import cache_dir
from lnlib.counts import ActivationCounts, load_counts, save_counts


class CacheWarning(UserWarning):
    """The cache was bypassed, or an entry was unreadable and recomputed."""


def _update_with_tensor(digest, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach()
    digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
    if tensor.numel() and tensor.device.type != "meta":
        digest.update(tensor.contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())


def model_fingerprint(model: nn.Module) -> str:
    """A SHA-256 of the model's class and of every parameter and buffer (name, dtype, shape and content): any
    change to any weight, from training or editing, gives another fingerprint."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in sorted([*model.named_parameters(), *model.named_buffers()], key=lambda item: item[0]):
        _update_with_tensor(digest, name, tensor)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A SHA-256 of the tokenizer's class, its full definition (a fast tokenizer's JSON; else its vocabulary)
    and its special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    parts = [type(tokenizer).__name__, definition,
             json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str),
             json.dumps(getattr(tokenizer, "add_bos_token", None)), str(tokenizer.pad_token_id)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def fingerprints(model: nn.Module, tokenizer) -> tuple[str, str]:
    """(model fingerprint, tokenizer fingerprint): compute once, pass to several `counts_key` calls."""
    return model_fingerprint(model), tokenizer_fingerprint(tokenizer)


def counts_key(model: nn.Module, tokenizer, examples_by_lang: Mapping[str, Sequence], max_length: int = 512,
               groups: int = 0, prints: tuple[str, str] | None = None) -> str:
    """The cache key of `cached_counts`: model and tokenizer contents (`prints`: their `fingerprints`, when the
    caller already has them), examples, settings and format version."""
    if not isinstance(examples_by_lang, Mapping) or not examples_by_lang:
        raise ValueError("examples_by_lang must map each language code to its examples, e.g. {'en': [...]}")
    model_print, tokenizer_print = prints or fingerprints(model, tokenizer)
    record = {"format": store.FORMATS["counts"], "model": model_print,
              "tokenizer": tokenizer_print, "max_length": max_length, "groups": groups,
              "examples": {lang: [ex if isinstance(ex, str) else list(ex) for ex in check_examples(exs)]
                           for lang, exs in examples_by_lang.items()}}
    return hashlib.sha256(json.dumps(record, ensure_ascii=False).encode()).hexdigest()[:32]


def entry_path(key: str):
    return cache_dir() / "counts" / f"{key}.safetensors"


def cached_counts(model: nn.Module, tokenizer, examples_by_lang: Mapping[str, Sequence], max_length: int = 512,
                  groups: int = 0, prints: tuple[str, str] | None = None, **options) -> dict[str, ActivationCounts]:
    """Counts per language (`lnlib.capture.count_activations` with `max_length`, `groups` and `options`), read
    from the cache when an entry with the same key exists and written there otherwise. `prints`: the model's
    and tokenizer's `fingerprints`, when the caller already has them."""
    if hooks.is_edited(model):
        warnings.warn("the model carries an edit (an lnlib intervention or a forward hook), so these counts are "
                      "neither read from nor written to the cache", CacheWarning, stacklevel=2)
        return count_by_language(model, tokenizer, examples_by_lang, max_length=max_length, groups=groups, **options)
    key = counts_key(model, tokenizer, examples_by_lang, max_length, groups, prints)
    path = entry_path(key)
    if path.exists():
        try:
            counts, _ = load_counts(path)
            if list(counts) == list(examples_by_lang):
                return counts
        except store.StoreError as exc:
            warnings.warn(f"cached counts {path} could not be read ({exc}); counting again", CacheWarning,
                          stacklevel=2)
    counts = {lang: count_activations(model, tokenizer, examples, max_length=max_length, groups=groups,
                                      desc=f"counting {lang}", **options)
              for lang, examples in examples_by_lang.items()}
    try:
        save_counts(counts, path, {"key": key}, overwrite=True)
    except OSError as exc:
        warnings.warn(f"the counts could not be cached ({exc}); they are returned all the same", CacheWarning,
                      stacklevel=2)
    return counts
