"""Capture: count how often each MLP neuron is active, per language, with forward hooks on a live model.

A neuron is *active* on a token when its activation act(gate)_j is > 0 (`lnlib.models.mlp_activations`
finds that module in every supported family). SiLU (Llama, Mistral, Qwen) and GELU (Gemma, GPT-2) are both
positive exactly where their input is positive, so "active" means "gate pre-activation > 0".

`count_activations` runs a model over examples and returns `ActivationCounts`: int64 `over_zero
[layers, neurons]` (tokens at which each neuron was active) and `n_tokens` (tokens counted). The counts are
kept on the model's device and updated once per batch and layer; nothing per token is stored beyond the
current batch. Only the model body runs (no output layer), since the counts need no logits.

Examples are plain texts or (prompt, response) pairs:

- a plain text counts every token, the first (BOS) included;
- a pair counts only the response's tokens, in one forward pass over prompt ⊕ response (the paper's
  statistic: "we perform force-decoding on the responses"). The official code runs two passes, prompt ⊕
  response and prompt alone, and subtracts; in a causal model the prompt's positions see the same inputs
  in both, so the one-pass count is the same number (tested on a tiny model). Tokenization: the prompt is
  tokenized with the tokenizer's special tokens (BOS) and the response on its own, and the two id lists
  are concatenated (`lnlib.models.encode_example`), so the boundary is exact. Tokenizing the concatenated
  *string* instead (as the official code does) can merge characters across the boundary, e.g. a prompt
  ending in a space; a prompt ending in a newline, as in `prompt_pairs`, avoids that in practice.

Padding never counts: batches are right-padded and only positions of `Batch.target_mask` are counted.

The CPU protocol of the book (`prompt_pairs`): prompt = one English instruction (`INSTRUCTION`),
identical for every language; response = a question from MGSM or MSVAMP in language k. The shared English
instruction conditions the response but never enters the statistics. The paper's GPU protocol
force-decodes the model's own answers to MGSM questions instead: make them with `generate_responses`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lnlib import models
from lnlib.config import cache_dir, progress_bar
from lnlib.data import LANG_NAMES, LANGS
from lnlib.identify import activation_probs

FORMAT = "lnlib.activation-counts/1"

INSTRUCTION = "Below is a math word problem. Read it carefully.\n\n### Problem:\n"
"""The shared English prompt of the book's CPU protocol; its tokens are never counted."""


# ----------------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True, eq=False)
class ActivationCounts:
    """How often each MLP neuron was active.

    over_zero: int64 [layers, neurons], tokens at which act(gate) > 0;
    n_tokens: tokens counted (response tokens for pairs, every token of plain texts; never padding);
    n_examples: examples seen.
    """

    over_zero: torch.Tensor
    n_tokens: int
    n_examples: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """(layers, neurons)."""
        return tuple(self.over_zero.shape)

    def probs(self) -> torch.Tensor:
        """Activation probability [layers, neurons] (float32): over_zero / n_tokens."""
        return activation_probs(self.over_zero, self.n_tokens)

    def __add__(self, other: ActivationCounts) -> ActivationCounts:
        """Counts over both sets of examples (e.g. MGSM + MSVAMP)."""
        if not isinstance(other, ActivationCounts):
            return NotImplemented
        if self.shape != other.shape:
            raise ValueError(f"cannot add counts of shapes {self.shape} and {other.shape} (different models?)")
        return ActivationCounts(self.over_zero + other.over_zero.to(self.over_zero.device),
                                self.n_tokens + other.n_tokens, self.n_examples + other.n_examples)


def stack_counts(counts: Mapping[str, ActivationCounts], langs: Sequence[str] = LANGS
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-language counts as (over_zero [layers, neurons, K], n_tokens [K]) in `langs` order, on the CPU."""
    missing = [lang for lang in langs if lang not in counts]
    if missing:
        raise ValueError(f"no counts for {', '.join(missing)}; have {', '.join(counts)}")
    shapes = {counts[lang].shape for lang in langs}
    if len(shapes) != 1:
        raise ValueError(f"counts have different shapes {sorted(shapes)}; they must come from one model")
    over_zero = torch.stack([counts[lang].over_zero.cpu() for lang in langs], -1)
    return over_zero, torch.tensor([counts[lang].n_tokens for lang in langs], dtype=torch.int64)


def stacked_probs(counts: Mapping[str, ActivationCounts], langs: Sequence[str] = LANGS) -> torch.Tensor:
    """Activation probabilities [layers, neurons, K] in `langs` order: the input of `lnlib.identify`."""
    return activation_probs(*stack_counts(counts, langs))


def save_counts(counts: Mapping[str, ActivationCounts], path: str | Path, provenance: dict | None = None,
                overwrite: bool = False) -> Path:
    """Write per-language counts to a safetensors file (one int64 tensor per language) whose header holds a
    JSON record of the token and example totals and `provenance` (model, data, protocol: anything useful)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    record = {"format": FORMAT, "langs": list(counts),
              "n_tokens": {lang: c.n_tokens for lang, c in counts.items()},
              "n_examples": {lang: c.n_examples for lang, c in counts.items()},
              "provenance": provenance or {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({lang: c.over_zero.cpu().contiguous() for lang, c in counts.items()}, str(path),
              metadata={"lnlib": json.dumps(record)})
    return path


def load_counts(path: str | Path) -> tuple[dict[str, ActivationCounts], dict]:
    """Read counts written by `save_counts`: ({lang: ActivationCounts}, provenance)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        record = json.loads(meta.get("lnlib", "{}"))
        if record.get("format") != FORMAT:
            raise ValueError(f"{path} is not an lnlib counts file (format {record.get('format')!r}, "
                             f"expected {FORMAT!r})")
        counts = {lang: ActivationCounts(fh.get_tensor(lang), int(record["n_tokens"][lang]),
                                         int(record["n_examples"][lang])) for lang in record["langs"]}
    return counts, record["provenance"]


# ----------------------------------------------------------------------------------------------
# Hooks


class _Counter:
    """Per-layer int64 counters of act > 0 at the positions of a [batch, tokens] mask (set per batch)."""

    def __init__(self, n_layers: int, n_neurons: int, device: torch.device):
        self.over_zero = torch.zeros(n_layers, n_neurons, dtype=torch.int64, device=device)
        self.mask: torch.Tensor | None = None
        self.bar: torch.Tensor | None = None  # [batch, tokens, 1]: 0 where a position counts, +inf elsewhere

    def set_mask(self, mask: torch.Tensor) -> None:
        self.mask, self.bar = mask.bool(), None

    def hook(self, layer: int):
        def count(module: nn.Module, args, out: torch.Tensor) -> None:
            if self.mask is None:
                raise RuntimeError("counting hook ran without a mask; use count_activations")
            if self.bar is None or self.bar.dtype != out.dtype:
                if self.mask.shape != out.shape[:-1]:
                    raise RuntimeError(f"activation {tuple(out.shape)} does not match the mask "
                                       f"{tuple(self.mask.shape)}")
                zero = torch.zeros((), dtype=out.dtype, device=out.device)
                self.bar = torch.where(self.mask.to(out.device), zero, torch.inf).to(out.dtype).unsqueeze(-1)
            # one comparison against a per-position bar (0 or +inf) applies the mask; bool viewed as uint8
            # sums in int32 (exact below 2**31 positions per batch); two passes over the activation
            active = (out > self.bar).view(torch.uint8).reshape(-1, out.shape[-1])
            self.over_zero[layer] += active.sum(0, dtype=torch.int32)

        return count


@contextmanager
def counting_hooks(model: nn.Module) -> Iterator[_Counter]:
    """Forward hooks that count act > 0 per layer and neuron while the body runs; removed on exit, also
    when the body raises. Set the positions that count with `counter.set_mask(mask)` before each forward."""
    acts = models.mlp_activations(model)
    device = next(model.parameters()).device
    counter = _Counter(len(acts), models.n_neurons(model), device)
    handles = []
    try:
        for layer, act in enumerate(acts):
            handles.append(act.register_forward_hook(counter.hook(layer)))
        yield counter
    finally:
        for handle in handles:
            handle.remove()


def _check_examples(examples) -> list:
    if isinstance(examples, str | tuple):
        raise ValueError("examples must be a list of texts or of (prompt, response) pairs, not a single one")
    examples = list(examples)
    if not examples:
        raise ValueError("examples is empty: give at least one text or (prompt, response) pair")
    for i, ex in enumerate(examples):
        ok = isinstance(ex, str) or (isinstance(ex, tuple | list) and len(ex) == 2
                                     and all(isinstance(part, str) for part in ex))
        if not ok:
            raise ValueError(f"example {i} is {type(ex).__name__} {ex!r:.60}; each example must be a text or a "
                             "(prompt, response) pair of texts")
    return [ex if isinstance(ex, str) else tuple(ex) for ex in examples]


@torch.inference_mode()
def count_activations(model: nn.Module, tokenizer, examples: Sequence, batch_size: int = 8,
                      max_length: int = 512, progress: bool = True, desc: str = "counting") -> ActivationCounts:
    """Count, for every MLP neuron, the tokens at which it is active (act(gate) > 0).

    examples: texts (every token counts) or (prompt, response) pairs (only response tokens count), or a mix.
    Examples are batched by length (`batch_size` per batch, right-padded; padding never counts) and
    truncated to `max_length` tokens. Progress over batches shows with tqdm unless progress=False.
    Returns `ActivationCounts` with over_zero on the model's device.
    """
    examples = _check_examples(examples)
    device = next(model.parameters()).device
    body = model.base_model
    n_tokens = 0
    with counting_hooks(model) as counter:
        for batch in progress_bar(models.batches(tokenizer, examples, batch_size, max_length, device),
                                  desc, progress):
            counter.set_mask(batch.target_mask)
            body(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            n_tokens += int(batch.target_mask.sum())
    return ActivationCounts(counter.over_zero, n_tokens, len(examples))


def count_by_language(model: nn.Module, tokenizer, examples_by_lang: Mapping[str, Sequence], cache: bool = False,
                      **kwargs) -> dict[str, ActivationCounts]:
    """`count_activations` for each language of `examples_by_lang` (lang -> examples), in its order.

    cache=True reads the counts from `<cache>/counts/` when the same model weights were already run over the
    same examples with the same `max_length`, and writes them there otherwise (see `counts_key`); chapters
    use it so that a later chapter does not recount what an earlier one counted.
    """
    if not cache:
        return {lang: count_activations(model, tokenizer, examples, desc=f"counting {lang}", **kwargs)
                for lang, examples in examples_by_lang.items()}
    key = counts_key(model, examples_by_lang, kwargs.get("max_length", 512))
    path = cache_dir() / "counts" / f"{key}.safetensors"
    if path.is_file():
        counts, _ = load_counts(path)
        if list(counts) == list(examples_by_lang):
            return counts
    counts = count_by_language(model, tokenizer, examples_by_lang, **kwargs)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    save_counts(counts, partial, {"key": path.stem}, overwrite=True)
    partial.replace(path)  # atomic: a reader never sees a half-written file
    return counts


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's MLP weights (every 101st value of each): it changes when training or
    editing changes them, so cached counts of a base model are never taken for an aligned one."""
    digest = hashlib.sha256(str(getattr(model.config, "_name_or_path", "")).encode())
    for name, param in sorted(model.named_parameters()):
        if ".mlp." in name:
            digest.update(param.detach().flatten()[::101].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def counts_key(model: nn.Module, examples_by_lang: Mapping[str, Sequence], max_length: int = 512) -> str:
    """The cache key of `count_by_language(..., cache=True)`: model weights, examples, max_length, format."""
    record = {"format": FORMAT, "model": model_fingerprint(model), "max_length": max_length,
              "examples": {lang: [ex if isinstance(ex, str) else list(ex) for ex in exs]
                           for lang, exs in examples_by_lang.items()}}
    return hashlib.sha256(json.dumps(record, ensure_ascii=False).encode()).hexdigest()[:24]


def prompt_pairs(texts: Sequence[str], instruction: str = INSTRUCTION) -> list[tuple[str, str]]:
    """The book's CPU protocol: (shared English instruction, text) pairs, so only the text's tokens count."""
    return [(instruction, text) for text in texts]


def protocol_pairs(lang: str, mgsm: range = range(150), msvamp: range = range(100),
                   instruction: str = INSTRUCTION) -> list[tuple[str, str]]:
    """The book's CPU protocol for language `lang`: (shared English instruction, question) pairs for the MGSM
    items `mgsm` and the MSVAMP items `msvamp` (indices into the 250 and 1,000 questions). Keep the MGSM items
    used for evaluation (the book holds out 200–249) out of `mgsm`."""
    from lnlib.data import load_mgsm, load_msvamp

    mgsm_questions = load_mgsm(lang)
    msvamp_questions = load_msvamp(lang) if len(msvamp) else []
    texts = [mgsm_questions[i].question for i in mgsm] + [msvamp_questions[i].question for i in msvamp]
    return prompt_pairs(texts, instruction)


MATHOCTOPUS_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request "
    "in {language}. Please answer in {language}.\n\n### Instruction:\n{question}\n\n### Response:"
)
"""The MathOctopus/MAPO prompt (the paper's exact instruction strings were not released)."""


def mathoctopus_prompt(problem) -> str:
    """The MathOctopus-style prompt for a `lnlib.data.Problem`: the GPU protocol's prompt for generating
    answers (for force-decoding, `generate_responses`) and for accuracy under deactivation."""
    return MATHOCTOPUS_TEMPLATE.format(language=LANG_NAMES[problem.lang], question=problem.question)


def language_neurons(model: nn.Module, tokenizer, examples_by_lang: Mapping[str, Sequence], rate: float = 0.01,
                     bar: float = 0.95, lam: float | None = None, widen: float | None = 2.0, cache: bool = True,
                     **kwargs):
    """Count activations per language (`count_by_language`, cached by default) and identify language neurons:
    at λ = `lam` (code units) when given, else by AutoSweep over [0, 0.2], widened to [0, `widen`] when the
    criterion never binds there. Returns (probs [layers, neurons, K], λ, `Identification`)."""
    from lnlib.identify import autosweep, identify

    counts = count_by_language(model, tokenizer, examples_by_lang, cache=cache, **kwargs)
    probs = stacked_probs(counts, list(examples_by_lang))
    if lam is not None:
        return probs, lam, identify(probs, lam, rate, bar, list(examples_by_lang))
    lam, ident = autosweep(probs, rate, bar, langs=list(examples_by_lang), widen=widen)
    return probs, lam, ident


# ----------------------------------------------------------------------------------------------
# Generation


@torch.inference_mode()
def generate_responses(model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int = 256,
                       do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                       batch_size: int = 8, stop: Sequence[str] = (), progress: bool = True) -> list[str]:
    """The model's continuation of each prompt (new tokens only, special tokens dropped), in prompt order.

    Greedy by default; do_sample=True samples with `temperature` and `top_p`, seeded with `seed` (the
    global random state is restored afterwards). Prompts are grouped by length and left-padded per batch.
    stop: strings at which each continuation is cut (generation of a row also stops there). Use the
    results as the responses of (prompt, response) pairs to force-decode them, as the paper does.
    """
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of texts, not a single text")
    prompts = list(prompts)
    if not prompts:
        return []
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    options = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad)
    if do_sample:
        options.update(temperature=temperature, top_p=top_p)
    else:  # neutralise sampling settings a model's generation config may carry
        options.update(temperature=None, top_p=None, top_k=None)
    out: list[str] = [""] * len(prompts)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for first in progress_bar(range(0, len(order), batch_size), "generating", progress):
            index = order[first:first + batch_size]
            width = max(len(encoded[i]) for i in index)
            ids = torch.full((len(index), width), pad, dtype=torch.long)
            mask = torch.zeros((len(index), width), dtype=torch.long)
            for row, i in enumerate(index):
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            criteria = [_StopOnText(tokenizer, stop, width)] if stop else None
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                       stopping_criteria=criteria, **options)
            for row, i in enumerate(index):
                out[i] = _cut(tokenizer.decode(generated[row, width:], skip_special_tokens=True), stop)
    return out


class _StopOnText:
    """A stopping criterion: a row is done once its new text contains one of `stop` (works with any
    tokenizer, unlike token-level stop lists)."""

    def __init__(self, tokenizer, stop: Sequence[str], start: int):
        self.tokenizer, self.stop, self.start = tokenizer, list(stop), start

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool,
                            device=input_ids.device)


def _cut(text: str, stop: Sequence[str]) -> str:
    ends = [text.index(s) for s in stop if s in text]
    return text[:min(ends)] if ends else text


def answer_pairs(model: nn.Module, tokenizer, problems: Sequence, max_new_tokens: int = 256, batch_size: int = 8,
                 progress: bool = True) -> list[tuple[str, str]]:
    """The paper's GPU protocol: (MathOctopus prompt, the model's own greedy answer) for each problem, to be
    force-decoded by `count_activations` (only the answer's tokens count)."""
    prompts = [mathoctopus_prompt(p) for p in problems]
    answers = generate_responses(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size,
                                 stop=["\n\n###"], progress=progress)
    return list(zip(prompts, answers, strict=True))
