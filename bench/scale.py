"""Benchmark: data-parallel counting (`lnlib count` under torchrun) against one process, in one run.

CPU: the default model counts the book's CPU protocol on MGSM (`--per-lang` questions in each of the 10
languages) once in one process with 2 threads and once in 2 torchrun processes with 1 thread each (gloo). It
prints tokens per second of each, their ratio, the share of the 2-process run spent in the all-reduce, and
whether the two runs' counts are equal (they must be, bit for bit).

GPU (when one is present): a randomly initialised model with the `a100` profile's configuration (Mistral-7B) in
bfloat16 counts random texts; its throughput is set against the bare body's on the same batches (target >= 0.9),
with peak GPU memory. `--gpu-config tiny` runs the same code on a tiny configuration (a smoke test on CPU).

Run: LNLIB_DATA_DIR=../shared/data .venv/bin/python bench/scale.py [--per-lang 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

WORKER = "--worker"


def worker(per_lang: int, out: str) -> None:
    """One rank of a counting run: counts its shard, all-reduces, and on rank 0 saves the counts and prints the
    times as JSON."""
    from lnlib import counts, distributed, models, runs
    from lnlib.data import LANGS
    from lnlib.protocols import Source, book_pairs

    rank = distributed.join()
    model, tokenizer = models.load_model()
    examples = {lang: book_pairs(lang, Source("mgsm", range(per_lang))) for lang in LANGS}
    start = time.perf_counter()
    mine = runs.count_shard(model, tokenizer, examples, rank)
    counted = time.perf_counter()
    total = distributed.all_reduce_counts(mine, rank)
    reduced = time.perf_counter()
    if rank.main:
        counts.save_counts(total, out, overwrite=True)
        print(json.dumps({"count_s": counted - start, "reduce_s": reduced - counted,
                          "tokens": sum(c.n_tokens for c in total.values())}))
    distributed.leave()


def run_cpu(per_lang: int) -> None:
    from lnlib import counts

    with tempfile.TemporaryDirectory() as scratch:
        results = {}
        for name, threads, launcher in (
                ("1 process x 2 threads", "2", [sys.executable]),
                ("2 processes x 1 thread", "1", [str(Path(sys.executable).with_name("torchrun")), "--standalone",
                                                 "--nproc_per_node=2"])):
            out = str(Path(scratch) / f"{threads}.safetensors")
            env = {**os.environ, "OMP_NUM_THREADS": threads, "TQDM_DISABLE": "1"}
            done = subprocess.run([*launcher, __file__, WORKER, str(per_lang), out], env=env, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
            line = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
            results[name] = {**json.loads(line), "counts": counts.load_counts(out)[0]}
        one, two = results.values()
        equal = all(torch.equal(one["counts"][lang].over_zero, two["counts"][lang].over_zero)
                    and one["counts"][lang].n_tokens == two["counts"][lang].n_tokens for lang in one["counts"])
    for name, r in results.items():
        seconds = r["count_s"] + r["reduce_s"]
        print(f"{name}: {r['tokens']:,} counted tokens in {seconds:.1f} s = {r['tokens'] / seconds:,.0f} tokens/s "
              f"(all-reduce, with the wait for the slower rank: {r['reduce_s'] * 1000:.0f} ms, "
              f"{r['reduce_s'] / seconds:.1%} of the time)")
    speedup = (one["count_s"] + one["reduce_s"]) / (two["count_s"] + two["reduce_s"])
    print(f"2 processes / 1 process throughput: {speedup:.2f}x; counts equal bit for bit: {equal}")


def run_gpu(config_name: str, batches: int, batch_size: int, length: int) -> None:
    import transformers as tf
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel

    from lnlib import capture, models

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if config_name == "tiny":
        config = tf.MistralConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2)
    else:  # the a100 profile's model, kevinpro/MistralMathOctopus-7B: Mistral-7B's shapes
        config = tf.MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8)
    with torch.device(device):
        model = tf.MistralForCausalLM(config).to(dtype).eval()
    vocab = {"<pad>": 0, "<unk>": 1, **{f"w{i}": i + 2 for i in range(config.vocab_size - 2)}}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")
    generator = torch.Generator().manual_seed(0)
    texts = [" ".join(f"w{i}" for i in torch.randint(0, config.vocab_size - 2, (length,), generator=generator).tolist())
             for _ in range(batches * batch_size)]
    ids = tokenizer(texts, return_tensors="pt")["input_ids"].to(device)
    body = models.body(model)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def bare():
        for i in range(batches):
            body(input_ids=ids[i * batch_size:(i + 1) * batch_size])

    def counted():
        capture.count_activations(model, tokenizer, texts, batch_size, max_length=length, progress=False)

    times = {}
    for name, fn in (("bare", bare), ("counting", counted), ("bare", bare), ("counting", counted)):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.setdefault(name, []).append(time.perf_counter() - start)
    tokens = batches * batch_size * length
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    rates = {name: tokens / min(t) for name, t in times.items()}
    print(f"{config_name} model on {device} ({dtype}): bare {rates['bare']:,.0f} tokens/s, counting "
          f"{rates['counting']:,.0f} tokens/s, ratio {rates['counting'] / rates['bare']:.3f} (target >= 0.9); "
          f"peak GPU memory {peak:.1f} GiB")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == WORKER:
        worker(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-lang", type=int, default=32, help="MGSM questions per language (CPU part)")
    parser.add_argument("--gpu-config", choices=("7b", "tiny"), default="7b")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    args = parser.parse_args()
    run_cpu(args.per_lang)
    if torch.cuda.is_available() or args.gpu_config == "tiny":
        run_gpu(args.gpu_config, args.batches, args.batch_size, args.length)
    else:
        print("GPU part: no GPU here (run this script on a GPU machine for the 7B figures)")


if __name__ == "__main__":
    main()
