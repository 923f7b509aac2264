"""Evaluation: perplexity without ever materialising [batch, tokens, vocabulary] logits, and the representation
metrics of alignment.

Gemma's vocabulary has 262,144 entries, so `model(input_ids, labels=...)` on a padded batch of 8 x 256 tokens
would build a 2 GB logits tensor. Here the model body runs once per batch and the output embedding is applied to
chunks of positions, each turned into log-probabilities of the actual next token.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lnlib import models, stats, work
from lnlib.batching import Batch, SkippedWarning, batches, check_encoded, check_examples, check_size, encode_all
from lnlib.config import progress_bar
from lnlib.data import Problem
from lnlib.protocols import alignment_pairs


@dataclass(frozen=True)
class TextNLL:
    """Summed negative log-likelihood (nats) and number of predicted tokens, per text: both [texts].
    A text of n tokens has n - 1 predicted tokens (the first has no prediction); a text with none (one token,
    an empty response, a response cut off by max_length) has n_tokens 0 and is left out of every perplexity."""

    nll_sum: torch.Tensor
    n_tokens: torch.Tensor

    @property
    def scored(self) -> torch.Tensor:
        """bool [texts]: texts with at least one predicted token."""
        return self.n_tokens > 0

    def subset(self, index) -> TextNLL:
        """The texts at `index` (positions or a bool mask), e.g. a bootstrap resample."""
        return TextNLL(self.nll_sum[index], self.n_tokens[index])

    def perplexity(self, aggregation: str = "official") -> float:
        """'official' (the paper's code): exp of the mean over texts of each text's mean NLL.
        'token': exp of the total NLL over the total number of tokens (token-weighted).
        Texts with no predicted token are left out (with a warning); none at all is an error."""
        if aggregation not in ("official", "token"):
            raise ValueError(f"aggregation must be 'official' or 'token', not {aggregation!r}")
        keep = self.scored
        if not keep.any():
            raise ValueError("no text has a token to score (each is one token long, empty, or cut off by "
                             "max_length); give longer texts or raise max_length")
        if not keep.all():
            warnings.warn(f"{int((~keep).sum())} of {len(keep)} texts have no token to score and were left out of "
                          "the perplexity", SkippedWarning, stacklevel=2)
        nll, tokens = self.nll_sum[keep], self.n_tokens[keep]
        if aggregation == "official":
            return float(torch.exp((nll / tokens).mean()))
        return float(torch.exp(nll.sum() / tokens.sum()))


def logit_head(model: nn.Module):
    """hidden [n, d] -> float32 logits [n, vocab] on the output layer's device, including the final logit
    soft-capping of Gemma 2/3 when set."""
    head = model.get_output_embeddings()
    device = models.device_of(head)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(config, "final_logit_softcapping", None)

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        out = head(hidden.to(device)).float()
        return torch.tanh(out / cap) * cap if cap else out

    return logits


def target_logprobs(model: nn.Module, batch: Batch, head=None, chunk_positions: int = 256, hidden=None):
    """Log-probability of each target token of `batch` given everything before it, computed with the
    output embedding applied to at most `chunk_positions` positions at a time (differentiable). `hidden`: the
    body's last hidden state for the batch, when the caller already has it.

    Returns (rows, logp): the batch row of each scored token [n] and its log-probability [n]. The first
    token of a sequence has no prediction and is never scored.
    """
    head = head or logit_head(model)
    if hidden is None:
        hidden = models.body(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    scored = batch.target_mask[:, 1:].to(hidden.device)  # token t + 1 is predicted at position t
    rows = torch.arange(len(scored), device=scored.device).unsqueeze(1).expand_as(scored)[scored]
    h, targets = hidden[:, :-1][scored], batch.input_ids[:, 1:].to(hidden.device)[scored]
    pieces = []
    for i in range(0, len(targets), chunk_positions):
        logits = head(h[i:i + chunk_positions])
        pieces.append(-F.cross_entropy(logits, targets[i:i + chunk_positions].to(logits.device), reduction="none"))
    return rows, torch.cat(pieces).to(hidden.device) if pieces else h.new_zeros(0, dtype=torch.float32)


def scatter_nll(n_texts: int, batch: Batch, rows: torch.Tensor,
                logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-text summed NLL [n_texts] (float64) and predicted tokens [n_texts] of one batch's scored tokens."""
    index = torch.tensor(batch.index)
    nll = torch.zeros(n_texts, dtype=torch.float64)
    nll[index] += torch.zeros(len(index), dtype=torch.float64).index_add_(0, rows.cpu(), -logp.detach().double().cpu())
    tokens = torch.zeros(n_texts, dtype=torch.int64)
    tokens[index] += batch.target_mask[:, 1:].sum(1).cpu()
    return nll, tokens


@torch.no_grad()
def text_nll(model: nn.Module, tokenizer, texts: Sequence, batch_size: int = 8, max_length: int = 512,
             chunk_positions: int = 256, progress: bool = True) -> TextNLL:
    """Per-example NLL under `model`, in eval mode. `texts`: plain texts (every token after the first is scored)
    or (prompt, response) pairs (only the response tokens are scored, given the prompt). Truncated to
    `max_length` tokens; batched by length; padding is never scored; peak memory of the output layer is
    chunk_positions x vocabulary floats.
    """
    texts = check_examples(texts, "texts")
    check_size("chunk_positions", chunk_positions)
    head = logit_head(model)
    nll_sum = torch.zeros(len(texts), dtype=torch.float64)
    n_tok = torch.zeros(len(texts), dtype=torch.int64)
    encoded = check_encoded(model, encode_all(tokenizer, texts, check_size("max_length", max_length)))
    with models.evaluating(model):
        for batch in progress_bar(batches(tokenizer, texts, batch_size, max_length, models.input_device(model),
                                          encoded), "perplexity", progress):
            rows, logp = target_logprobs(model, batch, head, chunk_positions)
            nll, tokens = scatter_nll(len(texts), batch, rows, logp)
            nll_sum += nll
            n_tok += tokens
            work.add("forward", batch.n_tokens)
    return TextNLL(nll_sum, n_tok)


def perplexity(model: nn.Module, tokenizer, texts: Sequence, aggregation: str = "official", **kwargs) -> float:
    """Perplexity of `texts`; see `TextNLL.perplexity` for the two aggregations and `text_nll` for options."""
    return text_nll(model, tokenizer, texts, **kwargs).perplexity(aggregation)


# ----------------------------------------------------------------------------------------------
# Representations and alignment metrics


@torch.no_grad()
def mean_hidden_states(model: nn.Module, tokenizer, texts: Sequence[str], layer: int, batch_size: int = 16,
                       max_length: int = 256) -> torch.Tensor:
    """Mean over tokens (padding excluded) of the residual stream after block `layer`, per text: [texts, hidden]."""
    texts = check_examples(texts, "texts")
    layer = models.check_layer(model, layer)
    encoded = check_encoded(model, encode_all(tokenizer, texts, check_size("max_length", max_length)), "texts",
                            need_tokens=True)  # an empty text has no mean: it would be NaN
    out = None
    with models.evaluating(model):
        for batch in batches(tokenizer, texts, batch_size, max_length, models.input_device(model), encoded):
            hidden = models.body(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        output_hidden_states=True).hidden_states[layer + 1]
            weights = batch.attention_mask.to(hidden.device).unsqueeze(-1).to(hidden.dtype)
            pooled = ((hidden * weights).sum(1) / weights.sum(1)).float().cpu()
            if out is None:
                out = torch.empty(len(texts), pooled.shape[-1])
            out[torch.tensor(batch.index)] = pooled
            work.add("forward", batch.n_tokens)
    return out


def retrieval_accuracy(queries: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of queries [n, d] whose most cosine-similar target [n, d] is the parallel one (same row)."""
    if queries.shape != targets.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and targets {tuple(targets.shape)} must be parallel")
    sims = F.normalize(queries, dim=-1) @ F.normalize(targets, dim=-1).T
    return float((sims.argmax(-1) == torch.arange(len(queries))).double().mean())


@dataclass(frozen=True, eq=False)
class AlignmentMetrics:
    """Per-text alignment measurements of a model, per language: nll [texts] (the English question's NLL per
    token given the question) and hit [texts] (bool: its representation retrieves its own English question)."""

    nll: dict[str, TextNLL]
    hit: dict[str, torch.Tensor]

    def means(self, index: Mapping[str, torch.Tensor] | None = None) -> dict[str, dict[str, float]]:
        """Per language, nll and retrieval over the texts at `index` (language -> positions; default all)."""
        out = {}
        for lang, nll in self.nll.items():
            part = nll if index is None else nll.subset(index[lang])
            hits = self.hit[lang] if index is None else self.hit[lang][index[lang]]
            out[lang] = {"nll": float(part.nll_sum.sum() / part.n_tokens.sum()),
                         "retrieval": float(hits.float().mean())}
        return out

    def changes(self, after: AlignmentMetrics, n: int = 1000, seed: int = 0) -> dict:
        """after − self, over the same held-out texts, with bootstrap intervals (the texts resampled within each
        language, the same draw for both models): the mean over languages of the NLL and retrieval changes, and
        each language's NLL change."""
        def statistic(index):
            a, b = self.means(index), after.means(index)
            langs = list(a)
            out = {"nll": sum(b[k]["nll"] - a[k]["nll"] for k in langs) / len(langs),
                   "retrieval": sum(b[k]["retrieval"] - a[k]["retrieval"] for k in langs) / len(langs)}
            out.update({f"nll {k}": b[k]["nll"] - a[k]["nll"] for k in langs})
            return out

        return stats.bootstrap(statistic, {k: len(v.n_tokens) for k, v in self.nll.items()}, n=n, seed=seed)

    def table(self) -> pd.DataFrame:
        """Per language: nll (nats per token, token-weighted) and retrieval (share of hits)."""
        return pd.DataFrame.from_dict(self.means(), orient="index").rename_axis("lang")


def alignment_metrics(model: nn.Module, tokenizer, problems_by_lang: Mapping[str, Sequence[Problem]],
                      layer: int | None = None, batch_size: int = 8) -> AlignmentMetrics:
    """Per non-English language, on its (held-out) problems: the NLL of the parallel English question given the
    question (`lnlib.protocols.alignment_prompt`), and whether each question's mean representation after block
    `layer` (default: the middle block) is closer (cosine) to its own English question's than to any other's."""
    layer = models.n_layers(model) // 2 if layer is None else models.check_layer(model, layer)
    nll, hit = {}, {}
    for lang, problems in problems_by_lang.items():
        problems = list(problems)
        nll[lang] = text_nll(model, tokenizer, alignment_pairs(problems), batch_size=batch_size, progress=False)
        queries = mean_hidden_states(model, tokenizer, [p.question for p in problems], layer, batch_size)
        targets = mean_hidden_states(model, tokenizer, [p.question_en for p in problems], layer, batch_size)
        sims = F.normalize(queries, dim=-1) @ F.normalize(targets, dim=-1).T
        hit[lang] = sims.argmax(-1) == torch.arange(len(problems))
    return AlignmentMetrics(nll, hit)


def metric_changes(before: AlignmentMetrics, after: AlignmentMetrics, control: AlignmentMetrics | None = None,
                   n: int = 1000, seed: int = 0) -> stats.Controlled:
    """The change of the alignment metrics from `before` to `after` (`AlignmentMetrics.changes`), read against a
    control fine-tune of the same base: the control's change (before → control) and after − control, each over the
    same resampled texts (`n` resamples, `seed`). Without a control, the change alone."""
    effect = before.changes(after, n=n, seed=seed)
    if control is None:
        return stats.Controlled(effect)
    return stats.Controlled(effect, before.changes(control, n=n, seed=seed), control.changes(after, n=n, seed=seed))
