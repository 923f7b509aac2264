"""Counting runs that survive being stopped: each rank counts its share of every language in chunks, saves its
partial counts atomically after every chunk when asked, and resumes from them; the ranks' counts are then added
with one all-reduce (`lnlib.distributed`), or, for separate jobs (a Slurm or PBS job array), merged from their
files (`lnlib.counts.merge`).

Counts are integers and chunks are disjoint, so a resumed run, a sharded run and a plain run give the same counts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from lnlib import cache, models, store
from lnlib.capture import count_activations
from lnlib.corpus import digest
from lnlib.counts import ActivationCounts, load_counts, save_counts
from lnlib.distributed import Rank, shard

CHECKPOINT = "shard"
SINGLE = Rank()


def run_key(model: nn.Module, tokenizer, examples_by_lang: Mapping[str, Sequence], max_length: int,
            rank: Rank) -> str:
    """What a checkpoint belongs to: the model's and tokenizer's contents, the examples, max_length and the
    ranks; a resumed run must find the same key."""
    record = {"prints": cache.fingerprints(model, tokenizer), "examples": digest(dict(examples_by_lang)),
              "max_length": max_length, "rank": rank.rank, "size": rank.size, "format": store.FORMATS[CHECKPOINT]}
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()[:32]


def checkpoint_path(folder: str | Path, rank: Rank) -> Path:
    return Path(folder) / "checkpoints" / f"rank-{rank.rank:05d}-of-{rank.size:05d}.safetensors"


def _zeros(model: nn.Module) -> ActivationCounts:
    return ActivationCounts(torch.zeros(models.n_layers(model), models.n_neurons(model), dtype=torch.int64), 0)


def count_shard(model: nn.Module, tokenizer, examples_by_lang: Mapping[str, Sequence], rank: Rank = SINGLE,
                folder: str | Path | None = None, checkpoint_every: int = 0, resume: bool = False,
                max_length: int = 512, batch_size: int = 8) -> dict[str, ActivationCounts]:
    """This rank's counts of its contiguous share of every language's examples (`lnlib.distributed.shard`).

    checkpoint_every: after every chunk of this many examples, save the counts so far to `folder`/checkpoints
    (atomically; 0: never). resume: start from this rank's checkpoint in `folder` (refused when the model,
    tokenizer, examples, max_length or number of ranks changed). Progress shows on rank 0 only."""
    if checkpoint_every < 0 or int(checkpoint_every) != checkpoint_every:
        raise ValueError(f"checkpoint_every must be a whole number of examples >= 0, got {checkpoint_every!r}")
    if (checkpoint_every or resume) and folder is None:
        raise ValueError("checkpoints need a folder: give folder= (the command line's --out)")
    key = run_key(model, tokenizer, examples_by_lang, max_length, rank) if (checkpoint_every or resume) else None
    counts = {lang: _zeros(model) for lang in examples_by_lang}
    done = dict.fromkeys(examples_by_lang, 0)
    if resume:
        path = checkpoint_path(folder, rank)
        if path.is_file():
            saved, record = load_counts(path, kind=CHECKPOINT)
            if record.get("run") != key:
                raise ValueError(f"{path} belongs to another run (model, tokenizer, data, max_length or number of "
                                 "ranks differ); start afresh without --resume, or into another --out folder")
            counts, done = saved, record["done"]
    for lang, examples in examples_by_lang.items():
        mine = shard(examples, rank.rank, rank.size)
        step = checkpoint_every or max(len(mine), 1)
        for start in range(done[lang], len(mine), step):
            chunk = mine[start:start + step]
            counts[lang] = counts[lang] + count_activations(model, tokenizer, chunk, batch_size, max_length,
                                                            progress=rank.main, desc=f"counting {lang}")
            done[lang] = start + len(chunk)
            if checkpoint_every:
                save_counts(counts, checkpoint_path(folder, rank), {"run": key, "done": done}, overwrite=True,
                            kind=CHECKPOINT)
    return counts
