"""Generation: a model's greedy (or seeded sampled) continuations of prompts, and the paper's protocol of
force-decoding the model's own answers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lnlib import models, work
from lnlib.batching import check_encoded, check_size, left_padded
from lnlib.config import progress_bar
from lnlib.protocols import mathoctopus_prompt


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
        raise ValueError("prompts must be a list of texts, not a single text: wrap it in a list")
    prompts = list(prompts)
    if not prompts:
        return []
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts[{bad[0]}] is {type(prompts[bad[0]]).__name__} {prompts[bad[0]]!r:.60}; each prompt "
                         "must be a text")
    if isinstance(stop, str):
        raise ValueError(f"stop must be a list of strings, not a single string: wrap it in a list, [{stop!r}]")
    check_encoded(model, [(tokenizer(p)["input_ids"], 0) for p in prompts], "prompts", need_tokens=True)
    check_size("max_new_tokens", max_new_tokens)
    if model.training:
        raise ValueError("the model is in training mode (dropout on); call model.eval() first")
    device = models.input_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    options = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad)
    if do_sample:
        options.update(temperature=temperature, top_p=top_p)
    else:  # neutralise sampling settings a model's generation config may carry
        options.update(temperature=None, top_p=None, top_k=None)
    out: list[str] = [""] * len(prompts)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        runs = list(left_padded(tokenizer, prompts, batch_size, device))
        for index, ids, mask in progress_bar(runs, "generating", progress):
            width = ids.shape[1]
            criteria = [_StopOnText(tokenizer, stop, width)] if stop else None
            generated = model.generate(input_ids=ids, attention_mask=mask, stopping_criteria=criteria, **options)
            work.add("forward", int(mask.sum()) + len(index) * (generated.shape[1] - width))
            for row, i in enumerate(index):
                out[i] = _cut(tokenizer.decode(generated[row, width:], skip_special_tokens=True), stop)
    return out


def answer_pairs(model: nn.Module, tokenizer, problems: Sequence, max_new_tokens: int = 256, batch_size: int = 8,
                 progress: bool = True) -> list[tuple[str, str]]:
    """The paper's protocol: (MathOctopus prompt, the model's own greedy answer) for each problem, to be
    force-decoded by `lnlib.capture.count_activations` (only the answer's tokens count)."""
    prompts = [mathoctopus_prompt(p) for p in problems]
    answers = generate_responses(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size,
                                 stop=["\n\n###"], progress=progress)
    return list(zip(prompts, answers, strict=True))
