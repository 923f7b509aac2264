"""Benchmark: counting (`lnlib.capture.count_activations`) against the bare model body, and the count cache's
content hash against counting chapter 2's data, on the default model (Gemma 3 270M), in one run.

Counting: the body runs over the same right-padded batches of the book's CPU protocol (the shared English
instruction + MGSM questions in the 10 languages), once with lnlib's counting hooks and once with none,
alternating, best of `--rounds`; throughput in processed tokens (padding excluded). Target: ratio >= 0.9.

Hashing: `lnlib.cache.fingerprints` (every parameter and buffer, and the tokenizer) timed directly, against the
time counting chapter 2's texts takes at the throughput just measured (their tokens are counted exactly, by
tokenizing them; counting all of them would take minutes). Target: hashing under 10 % of counting.

Run: LNLIB_DATA_DIR=../shared/data .venv/bin/python bench/capture.py [--per-lang 16] [--batch-size 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from lnlib import cache, capture, data, models
from lnlib.batching import batches, encode_all
from lnlib.pipeline import Texts
from lnlib.protocols import Source, book_pairs

TARGET_RATIO = 0.9
TARGET_HASH_SHARE = 0.10


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-lang", type=int, default=16, help="MGSM questions per language")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/hooked rounds")
    args = parser.parse_args()

    model, tokenizer = models.load_model()
    examples = [pair for lang in data.LANGS for pair in book_pairs(lang, Source("mgsm", range(args.per_lang)))]
    encoded = encode_all(tokenizer, examples, 512)
    fixed = list(batches(tokenizer, examples, args.batch_size, 512, models.input_device(model), encoded))
    processed = sum(int(b.attention_mask.sum()) for b in fixed)
    body = models.body(model)

    @torch.inference_mode()
    def bare() -> None:
        for b in fixed:
            body(input_ids=b.input_ids, attention_mask=b.attention_mask)

    def hooked() -> None:
        capture.count_activations(model, tokenizer, examples, args.batch_size, progress=False)

    hooked()  # warm-up
    times = {"bare": [], "hooked": []}
    for _ in range(args.rounds):
        for name, fn in (("bare", bare), ("hooked", hooked)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rate = {name: processed / min(t) for name, t in times.items()}
    ratio = rate["hooked"] / rate["bare"]

    hash_times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        cache.fingerprints(model, tokenizer)
        hash_times.append(time.perf_counter() - start)
    texts = Texts()
    chapter2 = [pair for source in texts.sources for lang in texts.langs for pair in book_pairs(lang, source)]
    chapter2_tokens = sum(len(ids) for ids, _ in encode_all(tokenizer, chapter2, texts.max_length))
    counting_s = chapter2_tokens / rate["hooked"]
    share = min(hash_times) / counting_s

    print(f"model: {models.provenance(model)['model']}, {torch.get_num_threads()} threads, "
          f"{len(examples)} examples, {processed:,} tokens per pass")
    print(f"bare body:  {rate['bare']:,.0f} tokens/s (best of {args.rounds})")
    print(f"counting:   {rate['hooked']:,.0f} tokens/s")
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"ratio counting/bare: {ratio:.3f} (target >= {TARGET_RATIO}): {verdict}")
    print(f"content hash of model and tokenizer: {min(hash_times):.2f} s (best of {args.rounds})")
    print(f"counting chapter 2's texts ({len(chapter2):,} examples, {chapter2_tokens:,} tokens) at that rate: "
          f"{counting_s:.0f} s")
    print(f"hash / counting: {share:.1%} (target < {TARGET_HASH_SHARE:.0%}): "
          f"{'met' if share < TARGET_HASH_SHARE else 'NOT met'}")
    print(f"peak memory (max RSS): {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
