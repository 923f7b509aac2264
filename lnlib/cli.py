"""The command line: `python -m lnlib` (or `lnlib`) runs the identification pipeline outside a notebook.

    lnlib count --model M --data texts.jsonl --out run/          # run/counts.safetensors
    torchrun --nproc_per_node=8 -m lnlib count ...                # the same counts, data-parallel
    lnlib count ... --shard 3/16 --out run/                       # one job of a job array; then `lnlib merge`
    lnlib merge run/counts-shard-*.safetensors --out run/counts.safetensors
    lnlib identify run/counts.safetensors --out run/neurons.safetensors
    lnlib ppl-grid --model M --neurons run/neurons.safetensors --data held_out.jsonl --out grid.csv

Every option can also come from a TOML file (`--config run.toml`): top-level keys apply to every command, a table
named like the command (`[count]`) to that command; the command line wins over the file.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import pandas as pd

from lnlib import __version__, corpus, counts, distributed, grids, identify, intervene, models, runs, store
from lnlib.data import DATASETS, LANGS
from lnlib.pipeline import Settings

COUNTS_FILE = "counts.safetensors"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lnlib", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `lnlib COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"lnlib {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file (the command line "
                         "wins); keys are option names, at the top level or in a table named like the command")
        return sub

    def model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", help="a saved model folder or a Hugging Face id (default: the embedded "
                         "Gemma 3 270M)")
        sub.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                         help="default float32 on CPU, bfloat16 on a GPU")
        sub.add_argument("--device-map", help='e.g. "auto": split a model too large for one GPU over the GPUs')
        sub.add_argument("--max-length", type=int, default=512, help="tokens per example (default 512)")
        sub.add_argument("--batch-size", type=int, default=8, help="examples per forward pass (default 8)")

    count = command("count", "count how often each MLP neuron is active, per language")
    model_options(count)
    count.add_argument("--data", action="append", metavar="FILE.jsonl",
                       help='a JSONL file of {"lang", "text"} or {"lang", "prompt", "response"} lines '
                            "(repeatable; only response tokens count)")
    count.add_argument("--dataset", choices=sorted(DATASETS), help="a registered dataset instead of --data, "
                       "under the book's protocol (a shared English instruction, then the question)")
    count.add_argument("--langs", help=f"comma-separated languages of --dataset (default: {','.join(LANGS)})")
    count.add_argument("--n", type=int, default=250, help="problems per language of --dataset (default 250)")
    count.add_argument("--out", metavar="DIR", help=f"output folder: DIR/{COUNTS_FILE}, and checkpoints")
    count.add_argument("--shard", metavar="I/N", help="count only part I of N (0-based) of every language, for "
                       "job arrays; writes DIR/counts-shard-I-of-N.safetensors for `lnlib merge`")
    count.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                       help="save each rank's partial counts after every K examples (default: never)")
    count.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    count.add_argument("--overwrite", action="store_true", help="replace an existing counts file")

    merge = command("merge", "add up the counts files of disjoint shards (exact)")
    merge.add_argument("files", nargs="*", metavar="FILE", help="counts files of the same model and languages")
    merge.add_argument("--out", metavar="FILE", help="the merged counts file")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing file")

    ident = command("identify", "identify language neurons from a counts file and print their numbers")
    ident.add_argument("counts", nargs="?", metavar="COUNTS", help="a counts file (from count or merge)")
    ident.add_argument("--out", metavar="FILE", help="the identification file")
    ident.add_argument("--lam", default="auto", help='"auto" (AutoSweep, the default) or a fixed λ (code units)')
    ident.add_argument("--rate", type=float, default=0.01, help="share of neurons selected (default 0.01)")
    ident.add_argument("--bar", type=float, default=0.95, help="percentile of the threshold τ (default 0.95)")
    ident.add_argument("--overwrite", action="store_true", help="replace an existing file")

    grid = command("ppl-grid", "perplexity per language with each language's neurons switched off")
    model_options(grid)
    grid.add_argument("--neurons", metavar="FILE", help="an identification file (from identify)")
    grid.add_argument("--data", action="append", metavar="FILE.jsonl", help="held-out texts, as for count")
    grid.add_argument("--setting", default="specific", choices=tuple(intervene.SETTINGS),
                      help="which neurons each row switches off (default specific)")
    grid.add_argument("--controls", type=int, default=1, help="random sets of the same size per row (default 1)")
    grid.add_argument("--out", metavar="FILE.csv", help="the grid: perplexity per row and language")
    grid.add_argument("--overwrite", action="store_true", help="replace an existing file")
    return parser


REQUIRED = {"count": ("out",), "merge": ("files", "out"), "identify": ("counts", "out"),
            "ppl-grid": ("neurons", "data", "out")}


def _with_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv`, taking defaults from --config where given (the command line wins)."""
    args = parser.parse_args(argv)
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            parser.error(f"--config {path}: no such file")
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            parser.error(f"--config {path}: not valid TOML ({error})")
        values = {k: v for k, v in table.items() if not isinstance(v, dict)}
        values.update(table.get(args.command, {}))
        values = {key.replace("-", "_"): value for key, value in values.items()}
        known = set(vars(args)) - {"command", "config"}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"--config {path}: unknown option(s) for {args.command}: {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(k.replace('_', '-') for k in known))}")
        subparser = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[args.command]
        subparser.set_defaults(**values)
        args = parser.parse_args(argv)
    missing = [name.upper() if name in ("files", "counts") else f"--{name}"
               for name in REQUIRED[args.command] if not getattr(args, name)]
    if missing:
        parser.error(f"{args.command} needs {', '.join(missing)} (on the command line or in the --config file)")
    return args


def _load(args):
    return models.load_model(args.model, dtype=args.dtype, device_map=args.device_map)


def _examples(args) -> tuple[dict, dict]:
    """The examples per language and what the provenance says of them."""
    if args.data and args.dataset:
        raise ValueError("give --data or --dataset, not both")
    if args.dataset:
        langs = tuple(args.langs.split(",")) if args.langs else LANGS
        return corpus.dataset_examples(args.dataset, langs, args.n), {
            "data": f"{args.dataset}[0:{args.n}]", "protocol": "questions"}
    if not args.data:
        raise ValueError("give --data FILE.jsonl (repeatable) or --dataset NAME")
    return corpus.read_jsonl(args.data), {"data": [Path(p).name for p in args.data], "protocol": "jsonl"}


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, total = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be I/N with whole numbers, e.g. 3/16; got {text!r}") from None
    if not 0 <= index < total:
        raise ValueError(f"--shard {text}: I must be in 0..N-1")
    return index, total


def count(args) -> None:
    job = _shard(args.shard)
    rank = distributed.join()
    try:
        if job and rank.size > 1:
            raise ValueError("--shard splits work between separate jobs; under torchrun the ranks split it already")
        out = Path(args.out)
        target = out / (f"counts-shard-{job[0]}-of-{job[1]}.safetensors" if job else COUNTS_FILE)
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it, or choose another --out")
        examples, about = _examples(args)
        model, tokenizer = _load(args)
        part = distributed.Rank(*job) if job else rank  # a job of an array counts its part like a rank
        mine = runs.count_shard(model, tokenizer, examples, part, out, args.checkpoint_every, args.resume,
                                args.max_length, args.batch_size)
        total = distributed.all_reduce_counts(mine, rank)
        if rank.main:
            provenance = {**models.provenance(model), **about, "max_length": args.max_length,
                          "ranks": rank.size, **({"shard": list(job)} if job else {})}
            counts.save_counts(total, target, provenance, overwrite=args.overwrite)
            print(f"{target}: " + ", ".join(f"{lang} {c.n_tokens:,} tokens" for lang, c in total.items()))
    finally:
        distributed.leave()


def merge(args) -> None:
    parts, sources = [], []
    for path in args.files:
        part, provenance = counts.load_counts(path)
        parts.append(part)
        sources.append(provenance)
    merged = counts.merge(parts)
    provenance = {k: v for k, v in sources[0].items() if k != "shard" and all(s.get(k) == v for s in sources)}
    provenance["merged"] = [Path(p).name for p in args.files]
    counts.save_counts(merged, args.out, provenance, overwrite=args.overwrite)
    print(f"{args.out}: " + ", ".join(f"{lang} {c.n_tokens:,} tokens" for lang, c in merged.items()))


def identify_command(args) -> None:
    by_lang, provenance = counts.load_counts(args.counts)
    lam = args.lam if args.lam == "auto" else float(args.lam)
    probs = counts.stacked_probs(by_lang, list(by_lang))
    ident = Settings(rate=args.rate, bar=args.bar, lam=lam).run(probs, list(by_lang))
    identify.save(ident, args.out, {**provenance, "counts": Path(args.counts).name}, overwrite=args.overwrite)
    print(f"λ = {ident.lam:.4f} (code units), τ = {ident.tau:.4f}, general neurons: {ident.n_general}")
    print(ident.lang_counts().to_string())


def ppl_grid(args) -> None:
    ident, _ = identify.load(args.neurons)
    texts = corpus.read_jsonl(args.data)
    missing = [lang for lang in ident.langs if lang not in texts]
    if missing:
        raise ValueError(f"--data has no texts in {', '.join(missing)}, languages of {args.neurons}")
    model, tokenizer = _load(args)
    result = grids.ppl_grid(model, tokenizer, {lang: texts[lang] for lang in ident.langs},
                            intervene.deactivation_sets(ident, args.setting), control=args.controls > 0,
                            controls=max(args.controls, 1), max_length=args.max_length, batch_size=args.batch_size)
    table = result.ppl()
    if args.controls:
        table = pd.concat([table, result.ppl(control=True).rename(index=lambda name: f"random:{name}")])
    store.write_text(args.out, table.to_csv(), overwrite=args.overwrite)
    print(result.change().round(3).to_string())


COMMANDS = {"count": count, "merge": merge, "identify": identify_command, "ppl-grid": ppl_grid}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = _with_config(parser, sys.argv[1:] if argv is None else argv)
    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError, store.StoreError) as error:
        print(f"lnlib {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
