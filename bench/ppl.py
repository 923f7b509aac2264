"""Benchmark: the perplexity grid of `lnlib.grids.ppl_grid` against scoring each condition on its own, in one run.

Both compute chapter 3's second grid: the held-out MGSM questions 200–203 in the 10 languages, the row "none", each
language's specific and related neurons switched off (chapter 2's identification, read from the cache or counted),
and one random control per row evaluated on the row's own language; default model (Gemma 3 270M).

- per condition (the grid before this release): for each condition, one `text_nll` call over all its languages'
  texts inside `intervene.deactivate`.
- lnlib: `ppl_grid`, which runs the baseline once per batch, lets each condition start from the baseline's
  residual stream at its first changed layer, and runs several conditions per forward pass.

Each runs in its own child process, so that its peak memory (VmHWM) is its own. The run prints both times and
their ratio (target: lnlib at least 1.5 times faster), the largest relative difference between their perplexities
(target: at most 1e-5) and both peak memories (target: lnlib no higher).

Run: LNLIB_DATA_DIR=../shared/data .venv/bin/python bench/ppl.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import torch

from lnlib import data, evaluate, grids, intervene, models, pipeline, profiles

EVAL_ITEMS = range(200, 204)
TARGET_SPEEDUP, TARGET_RELATIVE = 1.5, 1e-5


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def setup():
    model, tokenizer = models.load_model()
    study = pipeline.language_neurons(model, tokenizer, profiles.get_profile("cpu").texts(), pipeline.Settings(),
                                      progress=False)
    sets = intervene.deactivation_sets(study.ident, "specific+related")
    texts = {lang: [p.question for p in data.problems("mgsm", lang, EVAL_ITEMS)] for lang in data.LANGS}
    return model, tokenizer, sets, texts


def per_condition(model, tokenizer, sets, texts) -> dict:
    """The grid as it was computed before: every condition scored on its own."""
    width = models.n_neurons(model)
    conditions = [("none", None, list(texts))] + [(k, v, list(texts)) for k, v in sets.items()]
    conditions += [(f"random:{k}#0", intervene.random_like(v, width, seed=row), [k])
                   for row, (k, v) in enumerate(sets.items())]
    out = {}
    for name, neurons, langs in conditions:
        flat = [t for lang in langs for t in texts[lang]]
        if neurons is None:
            result = evaluate.text_nll(model, tokenizer, flat, progress=False)
        else:
            with intervene.deactivate(model, neurons):
                result = evaluate.text_nll(model, tokenizer, flat, progress=False)
        first = 0
        for lang in langs:
            part = evaluate.TextNLL(result.nll_sum[first:first + len(texts[lang])],
                                    result.n_tokens[first:first + len(texts[lang])])
            out[f"{name}|{lang}"] = part.perplexity()
            first += len(texts[lang])
    return out


def lnlib_grid(model, tokenizer, sets, texts) -> dict:
    grid = grids.ppl_grid(model, tokenizer, texts, sets, control="diagonal", seed=0, progress=False)
    return {f"{c}|{lang}": value.perplexity() for (c, lang), value in grid.nll.items()}


def child(kind: str, rounds: int) -> None:
    model, tokenizer, sets, texts = setup()
    run = per_condition if kind == "per condition" else lnlib_grid
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        values = run(model, tokenizer, sets, texts)
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": min(times), "ppl": values, "peak_mb": peak_rss_mb(),
                      "tokens": sum(len(tokenizer(t).input_ids) for ts in texts.values() for t in ts)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant; the fastest counts")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.rounds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    results = {}
    for kind in ("per condition", "lnlib"):
        done = subprocess.run([sys.executable, __file__, "--child", kind, "--rounds", str(args.rounds)],
                              capture_output=True, text=True, check=True)
        results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    old, new = results["per condition"], results["lnlib"]
    relative = max(abs(new["ppl"][k] - v) / v for k, v in old["ppl"].items())
    speedup = old["seconds"] / new["seconds"]
    print(f"grid: {len(old['ppl'])} (condition, language) cells over {new['tokens']:,} held-out tokens")
    for kind, r in results.items():
        print(f"{kind:>14}: {r['seconds']:7.1f} s, peak memory {r['peak_mb']:,.0f} MB")
    print(f"speed-up {speedup:.2f} (target >= {TARGET_SPEEDUP}); largest relative perplexity difference "
          f"{relative:.1e} (target <= {TARGET_RELATIVE:g}); peak memory lnlib / per condition "
          f"{new['peak_mb'] / old['peak_mb']:.2f} (target <= 1)")
    if speedup < TARGET_SPEEDUP or relative > TARGET_RELATIVE or new["peak_mb"] > old["peak_mb"]:
        raise SystemExit("a target was missed")


if __name__ == "__main__":
    main()
