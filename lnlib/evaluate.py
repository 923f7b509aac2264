"""Evaluation: perplexity without ever materialising [batch, tokens, vocabulary] logits.

Gemma's vocabulary has 262,144 entries, so `model(input_ids, labels=...)` on a padded batch of 8 x 256
tokens would build a 2 GB logits tensor. Here the model body runs once per batch and the output
embedding is applied to chunks of positions, each turned into log-probabilities of the actual next token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class TextNLL:
    """Summed negative log-likelihood (nats) and number of predicted tokens, per text: both [texts].
    A text of n tokens has n - 1 predicted tokens (the first has no prediction)."""

    nll_sum: torch.Tensor
    n_tokens: torch.Tensor

    def perplexity(self, aggregation: str = "official") -> float:
        """'official' (the paper's code): exp of the mean over texts of each text's mean NLL.
        'token': exp of the total NLL over the total number of tokens (token-weighted)."""
        if aggregation == "official":
            return float(torch.exp((self.nll_sum / self.n_tokens.clamp(min=1)).mean()))
        if aggregation == "token":
            return float(torch.exp(self.nll_sum.sum() / self.n_tokens.sum().clamp(min=1)))
        raise ValueError(f"aggregation must be 'official' or 'token', not {aggregation!r}")


def _logit_head(model: nn.Module):
    """hidden [n, d] -> logits [n, vocab], including the final logit soft-capping of Gemma 2/3 when set."""
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if getattr(model.config, "text_config", None) is not None:
        cap = getattr(model.config.text_config, "final_logit_softcapping", cap)

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        out = head(hidden).float()
        return torch.tanh(out / cap) * cap if cap else out

    return logits


@torch.no_grad()
def text_nll(model: nn.Module, tokenizer, texts: list[str], batch_size: int = 8, max_length: int = 512,
             chunk_positions: int = 256, progress: bool = True) -> TextNLL:
    """Per-text NLL of `texts` under `model` (texts truncated to `max_length` tokens).

    Texts are batched by length; padding is never scored; the output embedding is applied to at most
    `chunk_positions` positions at a time, so peak memory is chunk_positions x vocabulary floats.
    """
    if not texts:
        raise ValueError("texts is empty: give at least one text to score")
    device = next(model.parameters()).device
    head = _logit_head(model)
    nll_sum = torch.zeros(len(texts), dtype=torch.float64)
    n_tok = torch.zeros(len(texts), dtype=torch.int64)
    encoded = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="perplexity", disable=not progress, leave=False):
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, :len(encoded[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        # position t predicts token t + 1; keep pairs where both are real tokens
        scored = mask[:, 1:].bool()
        rows = torch.arange(len(batch), device=device).unsqueeze(1).expand_as(scored)[scored]
        h = hidden[:, :-1][scored]
        targets = ids[:, 1:][scored]
        token_nll = torch.empty(len(targets), dtype=torch.float64, device=device)
        for start in range(0, len(targets), chunk_positions):
            sl = slice(start, start + chunk_positions)
            logp = torch.log_softmax(head(h[sl]), dim=-1)
            token_nll[sl] = -logp.gather(1, targets[sl].unsqueeze(1)).squeeze(1).double()
        batch_index = torch.tensor(batch)
        nll_sum[batch_index] += torch.zeros(len(batch), dtype=torch.float64).index_add_(
            0, rows.cpu(), token_nll.cpu())
        n_tok[batch_index] += scored.sum(1).cpu()
    return TextNLL(nll_sum, n_tok)


def perplexity(model: nn.Module, tokenizer, texts: list[str], aggregation: str = "official", **kwargs) -> float:
    """Perplexity of `texts`; see `TextNLL.perplexity` for the two aggregations and `text_nll` for options."""
    return text_nll(model, tokenizer, texts, **kwargs).perplexity(aggregation)
