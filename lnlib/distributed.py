"""Data parallelism on torch.distributed: which rank this process is, its share of the examples, and the one
all-reduce that adds every rank's counts.

The statistic is an integer counter [layers, neurons] per language plus token and example totals, so the counts of
disjoint shards add up exactly to the counts of all examples. Processes are started by `torchrun` (one machine or
several, through its rendezvous flags); this module only joins the group torchrun describes in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lnlib.counts import ActivationCounts


@dataclass(frozen=True)
class Rank:
    """This process's place: rank in [0, size); local: its index on this machine (the GPU it takes)."""

    rank: int = 0
    size: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """True on rank 0, the one that shows progress and writes the result."""
        return self.rank == 0


def join() -> Rank:
    """Join the process group torchrun set up in the environment (gloo on CPU, NCCL on GPUs), or, outside
    torchrun, return the single rank of a plain run."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return Rank()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Rank(dist.get_rank(), dist.get_world_size(), local)


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def batch_share(n_batches: int, rank: int, size: int) -> list[int]:
    """The batches (indices into a plan of n_batches, sorted by length) that rank counts: every size-th from rank
    on, so that short and long batches are dealt out evenly; nothing is padded or repeated."""
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    return list(range(rank, n_batches, size))


def all_reduce_counts(counts: Mapping[str, ActivationCounts], rank: Rank) -> dict[str, ActivationCounts]:
    """Every rank's per-language counts added up, on every rank, with one all-reduce of one int64 tensor
    (counters and totals). Ranks must hold the same languages in the same order; groups are not kept."""
    if rank.size == 1:
        return dict(counts)
    langs = list(counts)
    device = torch.device("cuda", rank.local) if dist.get_backend() == "nccl" else torch.device("cpu")
    flat = torch.cat([torch.cat([c.over_zero.reshape(-1).to(torch.int64),
                                 torch.tensor([c.n_tokens, c.n_examples, c.n_empty])])
                      for c in counts.values()]).to(device)
    dist.all_reduce(flat)
    flat = flat.cpu()
    out, at = {}, 0
    for lang in langs:
        shape = counts[lang].shape
        size = shape[0] * shape[1]
        over_zero = flat[at:at + size].reshape(shape)
        n_tokens, n_examples, n_empty = (int(v) for v in flat[at + size:at + size + 3])
        out[lang] = ActivationCounts(over_zero, n_tokens, n_examples, n_empty)
        at += size + 3
    return out
