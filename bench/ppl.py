"""Benchmark: the 11 x 10 perplexity grid of `lnlib.evaluate.ppl_grid` against the naive way, on the same texts.

The texts are the evaluation texts of the chapter "Switching neurons off": MGSM questions 200-209 in each of the
10 languages, scored with the default model (Gemma 3 270M, vocabulary 262,144). The neuron sets are that
chapter's second setting (specific + related) when chapter 2 has saved its identification in the lnlib cache;
otherwise random sets of 20 neurons per layer (the cost does not depend on which neurons are switched off).

- lnlib: `ppl_grid` (row "none" once, then 10 rows with a language's neurons off; one `text_nll` call per row,
  output layer applied to 256 positions at a time).
- naive: one `model(input_ids, attention_mask, labels=...)` call per batch per row and language, which builds
  the [batch, tokens, vocabulary] logits. It runs in a child process, so that its peak memory is its own; by
  default only 3 of the 11 rows run and its time is extrapolated to 11 (printed as such).

Both report token-weighted perplexities of the rows they share, which must agree. Peak memory is the maximum
resident set size of each process (VmHWM; the model itself is about 1.1 GB in float32).

Run: LNLIB_DATA_DIR=../shared/data .venv/bin/python bench/ppl.py [--naive-rows 3] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import subprocess
import sys
import time

import torch

from lnlib import data, evaluate, intervene, models
from lnlib.config import cache_dir

TARGET_SECONDS, TARGET_MB = 300, 4096
EVAL_ITEMS = range(200, 210)


def peak_rss_mb() -> float:
    """This process's peak resident set size: VmHWM on Linux (reset by exec, so a child started after the
    model was loaded here does not inherit this process's peak, as ru_maxrss would), else ru_maxrss."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def texts_by_lang() -> dict[str, list[str]]:
    return {lang: [data.load_mgsm(lang)[i].question for i in EVAL_ITEMS] for lang in data.LANGS}


def neuron_sets(model) -> tuple[dict, str]:
    path = cache_dir() / "identifications" / "gemma-3-270m-questions-mgsm150-msvamp100.safetensors"
    shape = (models.n_layers(model), models.n_neurons(model))
    if path.is_file():
        from lnlib import identify

        ident, _ = identify.load(path, expect_langs=data.LANGS, expect_shape=shape)
        return intervene.deactivation_sets(ident, "specific+related"), f"chapter 2's identification ({path.name})"
    generator = torch.Generator().manual_seed(0)
    sets = {lang: [torch.randperm(shape[1], generator=generator)[:20] for _ in range(shape[0])]
            for lang in data.LANGS}
    return sets, "random sets of 20 neurons per layer (no saved identification found)"


@torch.inference_mode()
def naive(rows: int, batch_size: int) -> None:
    """Child process: the naive grid on the first `rows` rows; prints JSON."""
    model, tokenizer = models.load_model()
    tokenizer.padding_side = "right"  # Gemma's tokenizer pads on the left; positions must start at 0
    sets, _ = neuron_sets(model)
    texts = texts_by_lang()
    conditions = [("none", None)] + list(sets.items())[: rows - 1]
    loaded_mb = peak_rss_mb()
    start = time.perf_counter()
    ppl = {}
    for name, neurons in conditions:
        for lang, items in texts.items():
            total, count = 0.0, 0
            for first in range(0, len(items), batch_size):
                batch = tokenizer(items[first:first + batch_size], return_tensors="pt", padding=True)
                labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
                with intervene.deactivate(model, neurons) if neurons is not None else contextlib.nullcontext():
                    loss = model(**batch, labels=labels).loss
                n = int((labels[:, 1:] != -100).sum())
                total, count = total + float(loss) * n, count + n
            ppl[f"{name}/{lang}"] = float(torch.exp(torch.tensor(total / count)))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rows": len(conditions), "ppl": ppl, "loaded_mb": loaded_mb,
                      "peak_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-rows", type=int, default=3, help="rows of the naive grid to run (1-11)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--naive-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_child:
        naive(args.naive_rows, args.batch_size)
        return

    model, tokenizer = models.load_model()
    loaded_mb = peak_rss_mb()
    sets, source = neuron_sets(model)
    texts = texts_by_lang()
    n_tokens = sum(len(tokenizer(t).input_ids) for items in texts.values() for t in items)
    start = time.perf_counter()
    grid = evaluate.ppl_grid(model, tokenizer, texts, sets, batch_size=args.batch_size, progress=False)
    grid_s = time.perf_counter() - start
    grid_mb = peak_rss_mb()
    del model

    child = subprocess.run([sys.executable, __file__, "--naive-child", "--naive-rows", str(args.naive_rows),
                            "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    naive_mb = result["peak_mb"]
    rows = 1 + len(sets)
    naive_full_s = result["seconds"] * rows / result["rows"]
    token_ppl = grid.ppl("token")
    gaps = [abs(value / token_ppl.loc[tuple(key.split("/"))] - 1) for key, value in result["ppl"].items()]

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"texts: MGSM questions {EVAL_ITEMS.start}-{EVAL_ITEMS.stop - 1} x {len(texts)} languages, "
          f"{n_tokens:,} tokens per row; neuron sets: {source}")
    print(f"lnlib ppl_grid, {rows} x {len(texts)} cells: {grid_s:.1f} s ({n_tokens * rows / grid_s:.0f} tokens/s) "
          f"(target < {TARGET_SECONDS} s: {'met' if grid_s < TARGET_SECONDS else 'MISSED'})")
    print(f"naive, {result['rows']} of {rows} rows run: {result['seconds']:.1f} s -> {naive_full_s:.1f} s "
          f"extrapolated to {rows} rows")
    print(f"time ratio naive / lnlib (same {rows} rows): {naive_full_s / grid_s:.2f}")
    print(f"peak memory (max RSS): lnlib process {grid_mb:.0f} MB ({loaded_mb:.0f} MB after loading the model; "
          f"target < {TARGET_MB} MB: {'met' if grid_mb < TARGET_MB else 'MISSED'}); naive process {naive_mb:.0f} MB "
          f"({result['loaded_mb']:.0f} MB after loading)")
    print(f"token-weighted perplexities of the shared rows agree: largest relative gap {max(gaps):.1e}")


if __name__ == "__main__":
    main()
