"""Alignment: fine-tune a model so that its non-English questions line up with English ones, and compare
language neurons before and after.

Two methods, both trained on parallel questions (non-English -> English) with only the MLP weights updated
by default:

- "question": question alignment (Zhang et al. 2024, the spontaneous-alignment work the paper builds on):
  supervised training to produce the English question from the non-English one.
- "dpo": preference optimisation in the spirit of MAPO (She et al. 2024): for each non-English question,
  candidate English renderings are ranked by an alignment score against the parallel English question
  (`alignment_score`, a character n-gram F-score), and a DPO loss prefers the better of each pair.

The comparison tools (`layer_change`, `n_change`, `overlap_table`, `lang_change`) take two
identifications (`lnlib.identify.Identification`), typically of the base and the aligned model.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lnlib import models
from lnlib.config import progress_bar
from lnlib.data import LANG_NAMES, Problem
from lnlib.evaluate import mean_hidden_states, retrieval_accuracy, target_logprobs, text_nll
from lnlib.identify import Identification, overlap_ratio
from lnlib.models import batches, encode_example

FORMAT = "lnlib.aligned/1"


# ----------------------------------------------------------------------------------------------
# Training examples


def question_prompt(problem: Problem) -> str:
    """The prompt of a question-alignment example: the question in its language, then an English cue."""
    return f"{LANG_NAMES[problem.lang]}: {problem.question}\nEnglish:"


def question_pairs(problems: Sequence[Problem]) -> list[tuple[str, str]]:
    """(prompt, response) pairs for question alignment: response = the parallel English question."""
    english = [p for p in problems if p.lang == "en"]
    if english:
        raise ValueError(f"{len(english)} English problems given; alignment pairs map other languages to "
                         "English, so pass non-English problems only")
    return [(question_prompt(p), " " + p.question_en) for p in problems]


def _char_ngrams(text: str, n: int) -> Counter:
    text = " ".join(text.split())
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))


def alignment_score(candidate: str, reference: str, max_n: int = 6, beta: float = 2.0) -> float:
    """chrF: the character n-gram F-score (n = 1..max_n, recall weighted by beta) of `candidate` against
    `reference`, in [0, 1]; 1 for identical texts (up to whitespace)."""
    precisions, recalls = [], []
    for n in range(1, max_n + 1):
        cand, ref = _char_ngrams(candidate, n), _char_ngrams(reference, n)
        if not cand or not ref:
            continue
        hits = sum((cand & ref).values())
        precisions.append(hits / sum(cand.values()))
        recalls.append(hits / sum(ref.values()))
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    return 0.0 if p + r == 0 else (1 + beta**2) * p * r / (beta**2 * p + r)


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    margin: float  # alignment score of chosen minus rejected


def preference_pairs(prompt: str, candidates: Sequence[str], reference: str, min_margin: float = 0.05,
                     max_pairs: int = 4) -> list[PreferencePair]:
    """Rank `candidates` by `alignment_score` against `reference` and pair higher with lower ones (MAPO's
    construction: distinct texts, score gap of at least `min_margin`), widest gaps first."""
    scored = sorted({(alignment_score(c, reference), c) for c in candidates}, reverse=True)
    pairs = [PreferencePair(prompt, hi, lo, s_hi - s_lo)
             for i, (s_hi, hi) in enumerate(scored) for s_lo, lo in scored[i + 1:]
             if s_hi - s_lo >= min_margin and hi.strip() != lo.strip()]
    return sorted(pairs, key=lambda p: -p.margin)[:max_pairs]


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """DPO: mean over pairs of -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]),
    from summed response log-probabilities [pairs]."""
    logits = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(logits).mean()


def alignment_metrics(model: nn.Module, tokenizer, problems_by_lang: dict[str, Sequence[Problem]],
                      layer: int | None = None, batch_size: int = 8) -> pd.DataFrame:
    """Per non-English language, on its (held-out) problems:

    nll: mean NLL per token (nats) of the parallel English question given the question (`question_prompt`);
    retrieval: share of questions whose mean representation after block `layer` (default: the middle
    block) is closer (cosine) to its own English question's than to any other English question's.
    """
    layer = models.n_layers(model) // 2 if layer is None else layer
    rows = {}
    for lang, problems in problems_by_lang.items():
        problems = list(problems)
        nll = text_nll(model, tokenizer, question_pairs(problems), batch_size=batch_size, progress=False)
        queries = mean_hidden_states(model, tokenizer, [p.question for p in problems], layer, batch_size)
        targets = mean_hidden_states(model, tokenizer, [p.question_en for p in problems], layer, batch_size)
        rows[lang] = {"nll": float(nll.nll_sum.sum() / nll.n_tokens.sum()),
                      "retrieval": retrieval_accuracy(queries, targets)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("lang")


# ----------------------------------------------------------------------------------------------
# Trainable parameters, checkpoints, saving


def trainable_parameters(model: nn.Module, which: str = "mlp") -> dict[str, nn.Parameter]:
    """The parameters an alignment run updates: "mlp" (every layer's MLP, the neurons this book studies)
    or "all"."""
    if which == "all":
        return dict(model.named_parameters())
    if which != "mlp":
        raise ValueError(f"which must be 'mlp' or 'all', got {which!r}")
    mlp_ids = {id(p) for mlp in models.mlps(model) for p in mlp.parameters()}
    return {name: p for name, p in model.named_parameters() if id(p) in mlp_ids}


def save_aligned(model: nn.Module, path: str | Path, config: dict, which: str = "mlp",
                 overwrite: bool = False) -> Path:
    """Save the trained parameters (safetensors) with a JSON record (`config`: base model, languages, method,
    steps...) in its header. Refuses to replace an existing file unless overwrite=True."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    tensors = {name: p.detach().to("cpu").contiguous() for name, p in trainable_parameters(model, which).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata={"lnlib": json.dumps({"format": FORMAT, "which": which, **config})})
    tmp.replace(path)
    return path


def read_aligned_record(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "lnlib" not in meta or json.loads(meta["lnlib"]).get("format") != FORMAT:
        raise ValueError(f"{path} is not an lnlib alignment file ({FORMAT})")
    return json.loads(meta["lnlib"])


def apply_aligned(model: nn.Module, path: str | Path) -> nn.Module:
    """Load trained parameters saved by `save_aligned` into `model` (in place; names and shapes must match)."""
    from safetensors.torch import load_file

    read_aligned_record(path)
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = [name for name in tensors if name not in params]
    if unknown:
        raise ValueError(f"{path} holds parameters this model lacks (e.g. {unknown[0]}); it was trained on "
                         "another architecture")
    with torch.no_grad():
        for name, value in tensors.items():
            if params[name].shape != value.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, the model "
                                 f"{tuple(params[name].shape)}")
            params[name].copy_(value.to(params[name].dtype))
    return model


def load_aligned(path: str | Path, dtype: torch.dtype | None = None, device: str | None = None):
    """(model, tokenizer): the base model named in the file's record with the aligned parameters applied."""
    record = read_aligned_record(path)
    model, tokenizer = models.load_model(record.get("base_model"), dtype=dtype, device=device)
    return apply_aligned(model, path), tokenizer


# ----------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class AlignConfig:
    """Settings of one alignment run.

    method: "question" (examples are (prompt, English question) pairs) or "dpo" (examples are
    `PreferencePair`s); train: which parameters move ("mlp" or "all"); steps of `batch_size` examples,
    drawn in a seeded order; lr: AdamW learning rate; beta: DPO temperature (MAPO's example: 0.1);
    checkpoint_every: save the trained parameters every so many steps (0: never).
    """

    method: str = "question"
    train: str = "mlp"
    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-4
    beta: float = 0.1
    max_length: int = 192
    seed: int = 0
    checkpoint_every: int = 0


@dataclass(frozen=True)
class AlignRun:
    """What a run did: loss per step, checkpoint files, training tokens (prompt + response) and seconds."""

    config: AlignConfig
    losses: list[float]
    checkpoints: list[Path]
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def _sequence_logps(model: nn.Module, tokenizer, pairs: list[tuple[str, str]], max_length: int) -> torch.Tensor:
    """Summed log-probability of each response given its prompt, in the order of `pairs` [pairs]."""
    device = next(model.parameters()).device
    (batch,) = batches(tokenizer, pairs, len(pairs), max_length, device)
    rows, logp = target_logprobs(model, batch)
    out = torch.zeros(len(pairs), dtype=logp.dtype, device=device).index_add(0, rows, logp)
    return out[torch.argsort(torch.tensor(batch.index, device=device))]


def align(model: nn.Module, tokenizer, examples: Sequence, config: AlignConfig = AlignConfig(),
          checkpoint_dir: str | Path | None = None, record: dict | None = None, progress: bool = True,
          overwrite: bool = False) -> AlignRun:
    """Train `model` in place on `examples` (see `AlignConfig.method`) and return the run's record.

    Only the parameters chosen by `config.train` move; every other parameter keeps its value. The run is
    deterministic for a given seed. With `checkpoint_every` and `checkpoint_dir`, the trained parameters
    are saved as step-<n>.safetensors (see `save_aligned`; `record` goes into each file's header); an
    existing checkpoint file is an error unless overwrite=True.
    """
    if config.method not in ("question", "dpo"):
        raise ValueError(f"method must be 'question' or 'dpo', got {config.method!r}")
    if not examples:
        raise ValueError("no training examples")
    want = PreferencePair if config.method == "dpo" else tuple
    if not all(isinstance(ex, want) for ex in examples):
        raise ValueError(f"method {config.method!r} trains on {want.__name__} examples; build them with "
                         f"{'preference_pairs' if config.method == 'dpo' else 'question_pairs'}")
    if config.checkpoint_every and checkpoint_dir is None:
        raise ValueError("checkpoint_every is set but no checkpoint_dir was given")
    torch.manual_seed(config.seed)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(config.seed)).tolist()
    params = trainable_parameters(model, config.train)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(name in params)
    reference = None
    if config.method == "dpo":  # the frozen reference is the model before training
        with torch.no_grad():
            reference = {i: _sequence_logps(model, tokenizer, [(ex.prompt, ex.chosen), (ex.prompt, ex.rejected)],
                                            config.max_length) for i, ex in enumerate(examples)}
    optimizer = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=0.0)
    losses, checkpoints, tokens = [], [], 0
    start = time.perf_counter()
    model.train()
    try:
        for step in progress_bar(range(1, config.steps + 1), "align", progress):
            first = (step - 1) * config.batch_size
            picks = [order[(first + j) % len(order)] for j in range(config.batch_size)]
            if config.method == "question":
                pairs = [examples[i] for i in picks]
                (batch,) = batches(tokenizer, pairs, len(pairs), config.max_length, next(model.parameters()).device)
                _, logp = target_logprobs(model, batch)
                loss = -logp.mean()
                tokens += int(batch.attention_mask.sum())
            else:
                pairs = [(examples[i].prompt, text) for i in picks
                         for text in (examples[i].chosen, examples[i].rejected)]
                logps = _sequence_logps(model, tokenizer, pairs, config.max_length).view(-1, 2)
                ref = torch.stack([reference[i] for i in picks])
                loss = dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], config.beta)
                tokens += sum(len(encode_example(tokenizer, pair, config.max_length)[0]) for pair in pairs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                checkpoints.append(save_aligned(model, Path(checkpoint_dir) / f"step-{step}.safetensors",
                                                {**(record or {}), "step": step}, config.train, overwrite))
    finally:
        model.eval()
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
    return AlignRun(config, losses, checkpoints, tokens, time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------
# Comparing identifications (base vs aligned)


def _check_pair(base: Identification, other: Identification) -> None:
    if base.shape != other.shape or base.langs != other.langs:
        raise ValueError(f"identifications differ in shape ({base.shape} vs {other.shape}) or languages "
                         f"({base.langs} vs {other.langs}); compare identifications of the same model family")


def layer_change(base: Identification, other: Identification) -> pd.DataFrame:
    """Per layer, the change (other - base) of distinct specific, related and general neurons (paper Fig. 4)."""
    _check_pair(base, other)
    return other.layer_counts() - base.layer_counts()


def n_change(base: Identification, other: Identification, over: str = "all") -> pd.DataFrame:
    """Per N = 1..K, the number of neurons above tau in exactly N languages, before, after and the change
    (paper Figs. 5 and 15). over="all": every neuron; over="selected": the selected language neurons."""
    _check_pair(base, other)
    if over == "all":
        before, after = base.n_histogram()[1:], other.n_histogram()[1:]
    elif over == "selected":
        before, after = base.appear[1:], other.appear[1:]
    else:
        raise ValueError(f"over must be 'all' or 'selected', got {over!r}")
    frame = pd.DataFrame({"before": before, "after": after}, index=pd.RangeIndex(1, base.n_langs + 1, name="N"))
    frame["change"] = frame["after"] - frame["before"]
    return frame


def overlap_table(base: Identification, other: Identification, unit: str = "triple") -> pd.Series:
    """Overlap ratio ``|base ∩ other| / |base|`` in %, for specific, related and general neurons (paper Table 4)."""
    _check_pair(base, other)
    return pd.Series({kind: 100 * overlap_ratio(base, other, kind, unit)
                      for kind in ("specific", "related", "general")}, name="overlap %")


def lang_change(base: Identification, other: Identification, trained: Sequence[str],
                include_english: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per language, the change of specific and related neurons, and its mean over trained and untrained
    languages (paper Table 2). English, the alignment target, is left out of "untrained" unless asked.
    Returns (per-language table, group means)."""
    _check_pair(base, other)
    unknown = [lang for lang in trained if lang not in base.langs]
    if unknown:
        raise ValueError(f"trained languages {unknown} are not in the identification ({', '.join(base.langs)})")
    diff = (other.lang_counts() - base.lang_counts())[["specific", "related"]]
    diff["trained"] = [lang in trained for lang in diff.index]
    untrained = [lang for lang in diff.index if lang not in trained and (include_english or lang != "en")]
    means = pd.DataFrame({"trained": diff.loc[list(trained), ["specific", "related"]].mean(),
                          "untrained": diff.loc[untrained, ["specific", "related"]].mean()}).T
    return diff, means


def config_record(**settings) -> dict:
    """A JSON-safe record of run settings (dataclasses and tuples allowed)."""
    return json.loads(json.dumps({k: asdict(v) if hasattr(v, "__dataclass_fields__") else v
                                  for k, v in settings.items()}))
