"""Benchmark: `lnlib.capture.count_activations` against the bare model body, on the same batches, in one run.

Both run the body of the default model (Gemma 3 270M) over the same right-padded batches of the book's CPU
protocol (the shared English instruction + MGSM questions in the 10 languages): once with lnlib's counting
hooks (`count_activations`), once with no hook at all. Throughput is counted in processed tokens (padding
excluded, prompt tokens included, since the body runs over them either way); the ratio of the two is the
figure that matters (target >= 0.9), since other jobs on the machine change both. Two measurements:
whole passes, alternating (bare, hooked, bare, ...), best of each; and batch by batch, a bare and a hooked
forward back to back, whose median ratio is the least sensitive to other jobs on the machine.
Peak memory is the process's maximum resident set size.

Run: LNLIB_DATA_DIR=../shared/data .venv/bin/python bench/capture.py [--per-lang 16] [--batch-size 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time

import torch

from lnlib import capture, data, models

TARGET_RATIO = 0.9


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-lang", type=int, default=16, help="MGSM questions per language")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/hooked rounds")
    args = parser.parse_args()

    start = time.perf_counter()
    model, tokenizer = models.load_model()
    load_s = time.perf_counter() - start
    rss_loaded = peak_rss_mb()
    examples = [pair for lang in data.LANGS
                for pair in capture.prompt_pairs([p.question for p in data.load_mgsm(lang, args.per_lang)])]
    batches = models.batches(tokenizer, examples, args.batch_size, 512, model.device)
    processed = sum(int(b.attention_mask.sum()) for b in batches)
    counted = sum(int(b.target_mask.sum()) for b in batches)

    @torch.inference_mode()
    def bare() -> None:
        for b in batches:
            model.base_model(input_ids=b.input_ids, attention_mask=b.attention_mask)

    def hooked() -> capture.ActivationCounts:
        return capture.count_activations(model, tokenizer, examples, args.batch_size, progress=False)

    hooked()  # warm-up: first-call allocations
    times = {"bare": [], "hooked": []}
    for _ in range(args.rounds):
        for name, fn in (("bare", bare), ("hooked", hooked)):
            start = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - start)
    assert result.n_tokens == counted

    # the same comparison batch by batch, bare and hooked back to back, so that load changes hit both alike
    pairs = []
    with torch.inference_mode():
        for _ in range(args.rounds):
            for b in batches:
                start = time.perf_counter()
                model.base_model(input_ids=b.input_ids, attention_mask=b.attention_mask)
                mid = time.perf_counter()
                with capture.counting_hooks(model) as counter:
                    counter.set_mask(b.target_mask)
                    model.base_model(input_ids=b.input_ids, attention_mask=b.attention_mask)
                pairs.append((mid - start, time.perf_counter() - mid))
    per_batch = sorted(bare_t / hooked_t for bare_t, hooked_t in pairs)
    median_ratio = per_batch[len(per_batch) // 2]
    summed_ratio = sum(p[0] for p in pairs) / sum(p[1] for p in pairs)
    bare_tps = processed / min(times["bare"])
    hooked_tps = processed / min(times["hooked"])
    ratio = hooked_tps / bare_tps
    mean_ratio = sum(times["bare"]) / sum(times["hooked"])

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {model.device}")
    print(f"model loaded in {load_s:.1f} s; {len(examples)} (instruction, MGSM question) pairs, "
          f"{args.per_lang} per language, {len(batches)} batches of up to {args.batch_size}")
    print(f"tokens processed per pass: {processed:,} (of which counted, i.e. question tokens: {counted:,})")
    print("pass times (s): bare " + ", ".join(f"{t:.2f}" for t in times["bare"])
          + " | hooked " + ", ".join(f"{t:.2f}" for t in times["hooked"]))
    print(f"bare body:         {bare_tps:7.0f} tokens/s (best of {args.rounds})")
    print(f"count_activations: {hooked_tps:7.0f} tokens/s (best of {args.rounds})")
    print(f"ratio (best/best): {ratio:.3f}; ratio of summed times: {mean_ratio:.3f} "
          f"(target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'MISSED'})")
    print(f"batch by batch, back to back ({len(pairs)} pairs): median ratio {median_ratio:.3f}, "
          f"ratio of summed times {summed_ratio:.3f} "
          f"(target >= {TARGET_RATIO}: {'met' if median_ratio >= TARGET_RATIO else 'MISSED'})")
    print(f"peak memory (process max RSS): {peak_rss_mb():.0f} MB ({rss_loaded:.0f} MB after loading the model)")


if __name__ == "__main__":
    main()
