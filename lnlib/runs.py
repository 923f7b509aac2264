"""Counting runs that survive being stopped: each rank counts its share of every language in chunks, saves its
partial counts atomically after every chunk when asked, and resumes from them; the ranks' counts are then added
with one all-reduce (`lnlib.distributed`), or, for separate jobs (a Slurm or PBS job array), merged from their
files (`lnlib.counts.merge`).

Counts are integers and chunks are disjoint, so a resumed run, a sharded run and a plain run give the same counts,
bit for bit, when every example is computed in the same batch: a neuron whose activation is within rounding of zero
can flip with the batch an example is padded into (8 of 368,640 counters of Gemma 3 270M differed between batch
sizes 1 and 8 on 80 texts). So ranks and chunks are cut along the batches of the one-process plan (examples sorted
by length, then `batch_size` at a time, as `lnlib.batching.batches` forms them), and every run, however it is
split, computes the same batches. (On a CPU, the number of threads per process can change the rounding as well:
compare runs made with the same number.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from lnlib import cache, models, store
from lnlib.batching import encode_all
from lnlib.capture import count_activations
from lnlib.corpus import digest
from lnlib.counts import ActivationCounts, load_counts, save_counts
from lnlib.distributed import Rank, batch_share

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


def planned_share(tokenizer, examples: Sequence, rank: Rank, batch_size: int, max_length: int) -> list:
    """Rank's share of `examples`: whole batches of the one-process plan (sorted by length, stable), every
    `rank.size`-th batch from batch `rank.rank` on (so short and long batches are dealt out evenly), in plan order."""
    encoded = encode_all(tokenizer, examples, max_length)
    order = sorted(range(len(examples)), key=lambda i: len(encoded[i][0]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return [examples[i] for b in batch_share(len(batches), rank.rank, rank.size) for i in batches[b]]


def _zeros(model: nn.Module) -> ActivationCounts:
    return ActivationCounts(torch.zeros(models.n_layers(model), models.n_neurons(model), dtype=torch.int64), 0)


def count_shard(model: nn.Module, tokenizer, examples_by_lang: Mapping[str, Sequence], rank: Rank = SINGLE,
                folder: str | Path | None = None, checkpoint_every: int = 0, resume: bool = False,
                max_length: int = 512, batch_size: int = 8) -> dict[str, ActivationCounts]:
    """This rank's counts of its share of every language's examples (`planned_share`; `rank` may also be one job
    of a job array, with no process group).

    checkpoint_every: after every chunk of this many examples (rounded up to whole batches), save the counts so
    far to `folder`/checkpoints (atomically; 0: never). resume: start from this rank's checkpoint in `folder`
    (refused when the model, tokenizer, examples, max_length or number of ranks changed; a checkpoint write that a
    kill interrupted is cleared away). Progress shows on rank 0 only."""
    if checkpoint_every < 0 or int(checkpoint_every) != checkpoint_every:
        raise ValueError(f"checkpoint_every must be a whole number of examples >= 0, got {checkpoint_every!r}")
    if (checkpoint_every or resume) and folder is None:
        raise ValueError("checkpoints need a folder: give folder= (the command line's --out)")
    key = run_key(model, tokenizer, examples_by_lang, max_length, rank) if (checkpoint_every or resume) else None
    counts = {lang: _zeros(model) for lang in examples_by_lang}
    done = dict.fromkeys(examples_by_lang, 0)
    if resume:
        path = checkpoint_path(folder, rank)
        for stale in path.parent.glob(f".{path.name}.*.partial"):  # a write the kill interrupted
            stale.unlink()
        if path.is_file():
            saved, record = load_counts(path, kind=CHECKPOINT)
            if record.get("run") != key:
                raise ValueError(f"{path} belongs to another run (model, tokenizer, data, max_length or number of "
                                 "ranks differ); start afresh without --resume, or into another --out folder")
            counts, done = saved, record["done"]
    for lang, examples in examples_by_lang.items():
        mine = planned_share(tokenizer, list(examples), rank, batch_size, max_length)
        step = -(-checkpoint_every // batch_size) * batch_size if checkpoint_every else max(len(mine), 1)
        for start in range(done[lang], len(mine), step):
            chunk = mine[start:start + step]
            counts[lang] = counts[lang] + count_activations(model, tokenizer, chunk, batch_size, max_length,
                                                            progress=rank.main, desc=f"counting {lang}")
            done[lang] = start + len(chunk)
            if checkpoint_every:
                save_counts(counts, checkpoint_path(folder, rank), {"run": key, "done": done}, overwrite=True,
                            kind=CHECKPOINT)
    return counts
