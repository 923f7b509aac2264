"""Benchmark: one AutoSweep on the paper's released Mistral-7B statistics ([32, 14336, 10]).

Prints the wall time of the vectorised AutoSweep and the process's peak memory (maximum resident set size,
which includes Python, torch and the loaded data), and, for comparison, one λ evaluation written as a
straightforward Python loop over neurons (the form of the official code), timed on a few layers and
extrapolated to all of them: the speed-up is a ratio of two timings from this run.

Run: LNLIB_DATA_DIR=../shared/data .venv/bin/python bench/identify.py [--loop-layers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import sys
import time

import torch

from lnlib import identify
from lnlib.data import load_released_probs

TARGET_SECONDS, TARGET_MB = 2.0, 1536


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def loop_scores(probs: torch.Tensor, lam: float, layers: range) -> torch.Tensor:
    """The official score, one neuron at a time (the baseline; do not use)."""
    k = probs.shape[-1]
    c = identify.harmonic_norm(k)
    out = []
    for i in layers:
        for j in range(probs.shape[1]):
            p = probs[i, j]
            total = p.sum()
            share = p / total if total > 0 else torch.full_like(p, 1 / k)
            share = share.clamp(min=1e-12)
            share = share / share.sum()
            entropy = -(share * share.log()).sum() / math.log(k)
            out.append(float(entropy - lam * p.max() / c))
    return torch.tensor(out).reshape(len(layers), -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop-layers", type=int, default=2, help="layers timed for the loop baseline")
    parser.add_argument("--repeats", type=int, default=3, help="AutoSweep runs (the first and the best are shown)")
    args = parser.parse_args()

    start = time.perf_counter()
    probs = load_released_probs("mgsm")
    load_s = time.perf_counter() - start
    rss_loaded = peak_rss_mb()

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        lam, ident = identify.autosweep(probs)
        times.append(time.perf_counter() - start)
    rss_sweep = peak_rss_mb()
    n_evals = len(ident.trace)
    start = time.perf_counter()
    identify.identify(probs, lam)
    one_lambda_s = time.perf_counter() - start

    layers = range(args.loop_layers)
    start = time.perf_counter()
    slow = loop_scores(probs, lam, layers)
    loop_part_s = time.perf_counter() - start
    fast = identify.paper_score(probs[: args.loop_layers], lam)
    assert torch.allclose(slow, fast, atol=1e-6), "the loop baseline disagrees with identify.paper_score"
    loop_lambda_s = loop_part_s * probs.shape[0] / args.loop_layers
    loop_sweep_s = loop_lambda_s * n_evals

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"released probabilities {tuple(probs.shape)} loaded in {load_s:.2f} s")
    print(f"AutoSweep: lambda* = {lam}, {n_evals} lambda evaluations, appear = {ident.appear}")
    print(f"AutoSweep wall time: first {times[0]:.3f} s, best of {len(times)} {min(times):.3f} s "
          f"(target < {TARGET_SECONDS:.1f} s: {'met' if times[0] < TARGET_SECONDS else 'MISSED'})")
    print(f"peak memory (process max RSS): {rss_sweep:.0f} MB after AutoSweep, {rss_loaded:.0f} MB after loading; "
          f"AutoSweep raised it by {rss_sweep - rss_loaded:.0f} MB "
          f"(target < {TARGET_MB} MB: {'met' if rss_sweep < TARGET_MB else 'MISSED'})")
    print(f"per-neuron loop, one lambda: {loop_part_s:.2f} s for {args.loop_layers} of {probs.shape[0]} layers "
          f"-> {loop_lambda_s:.1f} s per lambda, {loop_sweep_s:.0f} s for {n_evals} evaluations")
    print(f"vectorised, one lambda (identify, tau and entropy included): {one_lambda_s:.3f} s "
          f"-> {loop_lambda_s / one_lambda_s:.0f}x faster than the loop")
    print(f"speed-up of the vectorised AutoSweep over {n_evals} loop evaluations: {loop_sweep_s / min(times):.0f}x")


if __name__ == "__main__":
    main()
