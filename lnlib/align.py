"""Alignment: fine-tune a model so that its non-English questions line up with English ones.

Two methods, both trained on parallel questions (non-English -> English) with only the MLP weights updated
by default:

- "question": question alignment (Zhang et al. 2024, the spontaneous-alignment work the paper builds on):
  supervised training to produce the English question from the non-English one.
- "dpo": preference optimisation in the spirit of MAPO (She et al. 2024): for each non-English question,
  candidate English renderings are ranked by an alignment score against the parallel English question
  (`alignment_score`, a character n-gram F-score), and a DPO loss prefers the better of each pair.

Half-precision models (float16, bfloat16) train through a float32 master copy of the trained parameters, with
dynamic loss scaling for float16, so the optimiser never divides by a number that underflows. The comparison of
language neurons before and after is in `lnlib.compare`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lnlib import models, store, work
from lnlib.batching import batches, check_encoded, check_examples, check_size, encode_example, warn_skipped
from lnlib.cache import model_fingerprint
from lnlib.config import cache_dir, progress_bar
from lnlib.evaluate import target_logprobs

# ----------------------------------------------------------------------------------------------
# Training examples


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
    """Save the trained parameters atomically (safetensors) with a JSON record (`config`: base model, languages,
    method, steps...) in its header. Refuses to replace an existing file unless overwrite=True."""
    tensors = {name: p.detach() for name, p in trainable_parameters(model, which).items()}
    return store.save(path, "aligned", tensors, {"which": which, "config": config}, overwrite)


def read_aligned_record(path: str | Path) -> dict:
    """The record saved with aligned parameters (its "config" holds what the caller passed to `save_aligned`)."""
    return store.load(path, "aligned")[1]


def apply_aligned(model: nn.Module, path: str | Path) -> nn.Module:
    """Load trained parameters saved by `save_aligned` into `model` (in place). Every name and shape is checked
    before any parameter changes, so a file that does not fit leaves the model as it was."""
    tensors, _ = store.load(path, "aligned")
    params = dict(model.named_parameters())
    unknown = [name for name in tensors if name not in params]
    if unknown:
        raise ValueError(f"{path} holds parameters this model lacks (e.g. {unknown[0]}); it was trained on "
                         "another architecture")
    wrong = [f"{name}: file {tuple(v.shape)}, model {tuple(params[name].shape)}" for name, v in tensors.items()
             if v.shape != params[name].shape]
    if wrong:
        raise ValueError(f"{path} does not fit this model ({len(wrong)} tensors of another shape, e.g. {wrong[0]}); "
                         "nothing was changed")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    return model


def load_aligned(path: str | Path, base_model: str | None = None, dtype: torch.dtype | str | None = None,
                 device: str | None = None):
    """(model, tokenizer): `base_model` (default: the "base_model" recorded in the file; None there means the
    embedded default model) with the aligned parameters of `path` applied."""
    record = read_aligned_record(path)
    model, tokenizer = models.load_model(base_model or record["config"].get("base_model"), dtype=dtype, device=device)
    return apply_aligned(model, path), tokenizer


# ----------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class AlignConfig:
    """Settings of one alignment run.

    method: "question" (examples are (prompt, English question) pairs) or "dpo" (examples are
    `PreferencePair` objects); train: which parameters move ("mlp" or "all"); steps of `batch_size` examples,
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
    """What a run did: loss per step, checkpoints as (step, file), training tokens (prompt + response, forward
    and backward), seconds, the float16 loss scale's skipped steps (0 otherwise), and the file of the final
    parameters when the run was cached (`aligned`)."""

    config: AlignConfig
    losses: list[float]
    checkpoints: list[tuple[int, Path]]
    tokens: int
    seconds: float
    skipped: int = 0
    final: Path | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")

    @property
    def final_loss(self) -> float:
        """The mean loss of the last three steps (of all steps, when there are fewer): where the run ended, less
        noisy than the last step alone."""
        last = self.losses[-3:]
        return sum(last) / len(last) if last else float("nan")


def _sequence_logps(model: nn.Module, tokenizer, pairs: list[tuple[str, str]], max_length: int) -> torch.Tensor:
    """Summed log-probability of each response given its prompt, in the order of `pairs` [pairs]."""
    (batch,) = batches(tokenizer, pairs, len(pairs), max_length, models.input_device(model))
    rows, logp = target_logprobs(model, batch)
    out = torch.zeros(len(pairs), dtype=logp.dtype, device=logp.device).index_add(0, rows.to(logp.device), logp)
    return out[torch.argsort(torch.tensor(batch.index, device=logp.device))]


class _Master:
    """The optimiser's view of the trained parameters: the parameters themselves in float32, or float32 master
    copies of half-precision ones (with a dynamic loss scale for float16: a step whose gradients overflow is
    skipped and the scale halved; the scale doubles after 100 good steps)."""

    def __init__(self, params: dict[str, nn.Parameter]):
        self.params = list(params.values())
        self.half = any(p.dtype in (torch.float16, torch.bfloat16) for p in self.params)
        self.copies = ([p.detach().float().clone().requires_grad_(True) for p in self.params] if self.half
                       else self.params)
        self.scale = 2.0 ** 16 if any(p.dtype == torch.float16 for p in self.params) else 1.0
        self.good = 0

    def backward(self, loss: torch.Tensor) -> None:
        (loss * self.scale).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Move gradients to the master copies, unscaled; step unless they overflowed. True when stepped."""
        if self.half:
            for param, copy in zip(self.params, self.copies, strict=True):
                copy.grad = None if param.grad is None else param.grad.float() / self.scale
                param.grad = None
            if not all(c.grad is None or torch.isfinite(c.grad).all() for c in self.copies):
                self.scale, self.good = self.scale / 2, 0
                return False
        optimizer.step()
        if self.half:
            with torch.no_grad():
                for param, copy in zip(self.params, self.copies, strict=True):
                    param.copy_(copy.to(param.dtype))
            self.good += 1
            if self.scale > 1 and self.good % 100 == 0:
                self.scale *= 2
        return True


def align(model: nn.Module, tokenizer, examples: Sequence, config: AlignConfig = AlignConfig(),
          checkpoint_dir: str | Path | None = None, record: dict | None = None, progress: bool = True,
          overwrite: bool = False) -> AlignRun:
    """Train `model` in place on `examples` (see `AlignConfig.method`) and return the run's record.

    Only the parameters chosen by `config.train` move; every other parameter keeps its value. The run is
    deterministic for a given seed. With `checkpoint_every` and `checkpoint_dir`, the trained parameters
    are saved as step-<n>.safetensors (see `save_aligned`; `record` goes into each file's header); an
    existing checkpoint file is an error unless overwrite=True. A loss that is not finite stops the run with an
    error (lower the learning rate) rather than training on.
    """
    if config.method not in ("question", "dpo"):
        raise ValueError(f"method must be 'question' or 'dpo', got {config.method!r}")
    if config.method == "question":
        examples = check_examples(examples, "examples")
    elif isinstance(examples, PreferencePair) or not hasattr(examples, "__iter__"):
        raise ValueError(f"examples must be a list of PreferencePair, not {type(examples).__name__}: wrap a single "
                         "one in a list")
    elif not (examples := list(examples)):
        raise ValueError("no training examples")
    want = PreferencePair if config.method == "dpo" else tuple
    if not all(isinstance(ex, want) for ex in examples):
        raise ValueError(f"method {config.method!r} trains on {want.__name__} examples; build them with "
                         f"{'preference_pairs' if config.method == 'dpo' else 'lnlib.protocols.alignment_pairs'}")
    for name in ("steps", "batch_size", "max_length"):
        check_size(name, getattr(config, name))
    check_size("checkpoint_every", config.checkpoint_every, least=0)
    if isinstance(config.lr, bool) or not (isinstance(config.lr, int | float) and math.isfinite(config.lr)
                                           and config.lr > 0):
        raise ValueError(f"lr must be a positive number, got {config.lr!r}")
    if config.method == "question":  # a pair with no response token to predict would make a batch's loss NaN
        encoded = check_encoded(model, [encode_example(tokenizer, ex, config.max_length) for ex in examples],
                                "examples")
        keep = [len(ids) > max(start, 1) for ids, start in encoded]
        warn_skipped(keep.count(False), len(examples), "train on")
        examples = [ex for ex, kept in zip(examples, keep, strict=True) if kept]
        if not examples:
            raise ValueError("no example has a response token to train on (empty responses, or responses cut off "
                             f"by max_length = {config.max_length}); check the examples or raise max_length")
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
        with torch.no_grad(), models.evaluating(model):
            reference = {i: _sequence_logps(model, tokenizer, [(ex.prompt, ex.chosen), (ex.prompt, ex.rejected)],
                                            config.max_length) for i, ex in enumerate(examples)}
    master = _Master(params)
    optimizer = torch.optim.AdamW(master.copies, lr=config.lr, weight_decay=0.0)
    losses, checkpoints, tokens, skipped = [], [], 0, 0
    start = time.perf_counter()
    model.train()
    try:
        for step in progress_bar(range(1, config.steps + 1), "align", progress):
            first = (step - 1) * config.batch_size
            picks = [order[(first + j) % len(order)] for j in range(config.batch_size)]
            if config.method == "question":
                pairs = [examples[i] for i in picks]
                (batch,) = batches(tokenizer, pairs, len(pairs), config.max_length, models.input_device(model))
                _, logp = target_logprobs(model, batch)
                loss = -logp.mean()
                n = batch.n_tokens
            else:
                pairs = [(examples[i].prompt, text) for i in picks
                         for text in (examples[i].chosen, examples[i].rejected)]
                logps = _sequence_logps(model, tokenizer, pairs, config.max_length).view(-1, 2)
                ref = torch.stack([reference[i] for i in picks]).to(logps.device)
                loss = dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], config.beta)
                n = sum(len(encode_example(tokenizer, pair, config.max_length)[0]) for pair in pairs)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {float(loss.detach())} at step {step}; lower the learning rate "
                                         f"(lr = {config.lr:g}) or check the examples")
            for p in master.copies:
                p.grad = None
            for p in params.values():
                p.grad = None
            master.backward(loss)
            skipped += not master.step(optimizer)
            losses.append(float(loss.detach()))
            tokens += n
            work.add("train", n)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                path = save_aligned(model, Path(checkpoint_dir) / f"step-{step}.safetensors",
                                    {**(record or {}), "step": step}, config.train, overwrite)
                checkpoints.append((step, path))
    finally:
        model.eval()
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
            p.grad = None
    return AlignRun(config, losses, checkpoints, tokens, time.perf_counter() - start, skipped)


def aligned(model: nn.Module, tokenizer, examples: Sequence, config: AlignConfig = AlignConfig(),
            record: dict | None = None, progress: bool = True) -> AlignRun:
    """`align` with the result cached: the trained parameters, checkpoints and the run's record are kept under
    `<cache>/aligned/<key>/`, with a key that covers the base model's weights, the examples and the settings.
    When they are there, the final parameters are applied to `model` and the stored run is returned, so a later
    chapter (or a second run) trains nothing; a damaged entry is trained again."""
    if isinstance(examples, PreferencePair):
        raise ValueError("examples must be a list of PreferencePair, not a single one: wrap it in a list")
    examples = examples if isinstance(examples, str | Mapping) else list(examples)  # `align` refuses wrong ones
    key_record = {"model": model_fingerprint(model), "config": asdict(config),
                  "examples": [list(ex) if isinstance(ex, tuple) else asdict(ex) if isinstance(ex, PreferencePair)
                               else repr(ex) for ex in examples]}
    key = hashlib.sha256(json.dumps(key_record, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:24]
    folder = cache_dir() / "aligned" / key
    final = folder / "final.safetensors"
    try:
        stored = read_aligned_record(final)["config"]["run"]
        apply_aligned(model, final)
        return AlignRun(config, stored["losses"], [(step, folder / f"step-{step}.safetensors") for step in
                                                   stored["checkpoint_steps"]], stored["tokens"], stored["seconds"],
                        stored["skipped"], final)
    except store.StoreError:
        pass
    run = align(model, tokenizer, examples, config, checkpoint_dir=folder, record=record, progress=progress,
                overwrite=True)
    summary = {"losses": run.losses, "checkpoint_steps": [step for step, _ in run.checkpoints], "tokens": run.tokens,
               "seconds": run.seconds, "skipped": run.skipped}
    save_aligned(model, final, {**(record or {}), "step": config.steps, "run": summary}, config.train, overwrite=True)
    return dataclasses.replace(run, final=final)
