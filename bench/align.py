"""Benchmark one alignment run on the default model: training tokens per second and peak memory.

Question alignment of the nine non-English languages to English on MSVAMP training items (from 200, different
items for each language), MLP weights only, with the settings of the chapter "What alignment changes" (24 steps
of 6 pairs, 16 per language, lr 5e-5). Prints its figures; compare them with the targets of the alignment
chapters (one run under 6 minutes, peak memory under 8 GB on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from lnlib import align, data, models


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--per-lang", type=int, default=16, help="training questions per language")
    parser.add_argument("--method", choices=["question", "dpo"], default="question")
    args = parser.parse_args()

    torch.manual_seed(0)
    start = time.perf_counter()
    model, tokenizer = models.load_model()
    load_s = time.perf_counter() - start
    langs = [lang for lang in data.LANGS if lang != "en"]
    problems = [data.load_msvamp(lang)[200 + k * args.per_lang + i]  # each language its own items, as the chapter
                for k, lang in enumerate(langs) for i in range(args.per_lang)]
    examples = align.question_pairs(problems)
    if args.method == "dpo":  # the gold English question against a shuffled one: a cheap, fixed preference set
        shuffled = [examples[(i + 1) % len(examples)][1] for i in range(len(examples))]
        examples = [align.PreferencePair(p, r, s, 1.0) for (p, r), s in zip(examples, shuffled, strict=True)]
    config = align.AlignConfig(method=args.method, steps=args.steps, batch_size=args.batch_size,
                               lr=5e-5 if args.method == "question" else 5e-6)
    before = peak_rss_gb()
    run = align.align(model, tokenizer, examples, config, progress=False)
    print(f"model load: {load_s:.1f} s; peak RSS after load: {before:.2f} GB")
    print(f"alignment ({args.method}, MLPs only): {config.steps} steps x {config.batch_size} examples, "
          f"{run.tokens} training tokens in {run.seconds:.1f} s = {run.tokens_per_second:.0f} tokens/s")
    print(f"loss: first {run.losses[0]:.3f}, last {run.losses[-1]:.3f}")
    print(f"peak RSS: {peak_rss_gb():.2f} GB (target < 8 GB); seconds per step: {run.seconds / config.steps:.2f}; "
          f"run: {run.seconds / 60:.1f} min (target < 6 min)")


if __name__ == "__main__":
    main()
