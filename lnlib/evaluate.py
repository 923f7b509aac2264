"""Evaluation: perplexity without ever materialising [batch, tokens, vocabulary] logits.

Gemma's vocabulary has 262,144 entries, so `model(input_ids, labels=...)` on a padded batch of 8 x 256
tokens would build a 2 GB logits tensor. Here the model body runs once per batch and the output
embedding is applied to chunks of positions, each turned into log-probabilities of the actual next token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lnlib.config import progress_bar
from lnlib.models import Batch, batches


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


def logit_head(model: nn.Module):
    """hidden [n, d] -> logits [n, vocab], including the final logit soft-capping of Gemma 2/3 when set."""
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if getattr(model.config, "text_config", None) is not None:
        cap = getattr(model.config.text_config, "final_logit_softcapping", cap)

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        out = head(hidden).float()
        return torch.tanh(out / cap) * cap if cap else out

    return logits


def target_logprobs(model: nn.Module, batch: Batch, head=None, chunk_positions: int = 256):
    """Log-probability of each target token of `batch` given everything before it, computed with the
    output embedding applied to at most `chunk_positions` positions at a time (differentiable).

    Returns (rows, logp): the batch row of each scored token [n] and its log-probability [n]. The first
    token of a sequence has no prediction and is never scored.
    """
    head = head or logit_head(model)
    hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    scored = batch.target_mask[:, 1:]  # token t + 1 is predicted at position t
    rows = torch.arange(len(scored), device=scored.device).unsqueeze(1).expand_as(scored)[scored]
    h, targets = hidden[:, :-1][scored], batch.input_ids[:, 1:][scored]
    pieces = [-F.cross_entropy(head(h[i:i + chunk_positions]), targets[i:i + chunk_positions], reduction="none")
              for i in range(0, len(targets), chunk_positions)]
    return rows, torch.cat(pieces) if pieces else h.new_zeros(0)


@torch.no_grad()
def text_nll(model: nn.Module, tokenizer, texts: list, batch_size: int = 8, max_length: int = 512,
             chunk_positions: int = 256, progress: bool = True) -> TextNLL:
    """Per-example NLL under `model`. `texts`: plain texts (every token after the first is scored) or
    (prompt, response) pairs (only the response tokens are scored, given the prompt). Truncated to
    `max_length` tokens; batched by length; padding is never scored; peak memory of the output layer is
    chunk_positions x vocabulary floats.
    """
    if not texts:
        raise ValueError("texts is empty: give at least one text to score")
    device = next(model.parameters()).device
    head = logit_head(model)
    nll_sum = torch.zeros(len(texts), dtype=torch.float64)
    n_tok = torch.zeros(len(texts), dtype=torch.int64)
    for batch in progress_bar(batches(tokenizer, texts, batch_size, max_length, device), "perplexity",
                              progress):
        rows, logp = target_logprobs(model, batch, head, chunk_positions)
        index = torch.tensor(batch.index)
        nll_sum[index] += torch.zeros(len(index), dtype=torch.float64).index_add_(0, rows.cpu(), -logp.double().cpu())
        n_tok[index] += batch.target_mask[:, 1:].sum(1).cpu()
    return TextNLL(nll_sum, n_tok)


def perplexity(model: nn.Module, tokenizer, texts: list[str], aggregation: str = "official", **kwargs) -> float:
    """Perplexity of `texts`; see `TextNLL.perplexity` for the two aggregations and `text_nll` for options."""
    return text_nll(model, tokenizer, texts, **kwargs).perplexity(aggregation)


# ----------------------------------------------------------------------------------------------
# Alignment metrics


@torch.no_grad()
def mean_hidden_states(model: nn.Module, tokenizer, texts: list[str], layer: int, batch_size: int = 16,
                       max_length: int = 256) -> torch.Tensor:
    """Mean over tokens (padding excluded) of the residual stream after block `layer`, per text: [texts, hidden]."""
    out = None
    for batch in batches(tokenizer, texts, batch_size, max_length, next(model.parameters()).device):
        hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                  output_hidden_states=True).hidden_states[layer + 1]
        weights = batch.attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = ((hidden * weights).sum(1) / weights.sum(1)).float().cpu()
        if out is None:
            out = torch.empty(len(texts), pooled.shape[-1])
        out[torch.tensor(batch.index)] = pooled
    return out


def retrieval_accuracy(queries: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of queries [n, d] whose most cosine-similar target [n, d] is the parallel one (same row)."""
    if queries.shape != targets.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and targets {tuple(targets.shape)} must be parallel")
    sims = F.normalize(queries, dim=-1) @ F.normalize(targets, dim=-1).T
    return float((sims.argmax(-1) == torch.arange(len(queries))).double().mean())


# ----------------------------------------------------------------------------------------------
# Perplexity and accuracy under deactivation (the paper's Figs 2 and 10)


@dataclass(frozen=True, eq=False)
class PPLGrid:
    """Perplexity of each evaluated language with each neuron set switched off.

    nll: (condition, target language) -> `TextNLL`; condition "none" (no intervention), a set's name, or
    "random:<name>" for that set's random control. names: the switched-off sets, in row order; langs: the
    evaluated languages (columns); sizes: neurons in each set; seed: the control's base seed.
    Tables come for either aggregation ("official" or "token", see `TextNLL.perplexity`).
    """

    nll: dict
    names: tuple[str, ...]
    langs: tuple[str, ...]
    sizes: dict
    seed: int | None = None

    def _table(self, rows: list[str], labels: list[str], aggregation: str):
        import pandas as pd

        values = [[self.nll[(row, lang)].perplexity(aggregation) if (row, lang) in self.nll else float("nan")
                   for lang in self.langs] for row in rows]
        return pd.DataFrame(values, index=pd.Index(labels, name="switched off"),
                            columns=pd.Index(self.langs, name="evaluated"))

    def ppl(self, aggregation: str = "official", control: bool = False):
        """Perplexity table: rows "none" and each set (or, with control=True, each set's random control,
        NaN where it was not evaluated), columns the evaluated languages."""
        if control:
            return self._table([f"random:{name}" for name in self.names], list(self.names), aggregation)
        return self._table(["none", *self.names], ["none", *self.names], aggregation)

    def change(self, aggregation: str = "official", relative: bool = False, control: bool = False):
        """PPL(set switched off) − PPL(none), per set and evaluated language; relative=True divides by
        PPL(none). control=True: the same for the random controls."""
        base = self.ppl(aggregation).loc["none"]
        delta = self.ppl(aggregation, control).loc[list(self.names)] - base
        return delta / base if relative else delta

    def diagonal(self, aggregation: str = "official", control: bool = False):
        """The change where the switched-off set's name is the evaluated language (a Series by language)."""
        import pandas as pd

        change = self.change(aggregation, control=control)
        return pd.Series({n: change.loc[n, n] for n in self.names if n in self.langs}, name="diagonal")

    def summary(self, aggregation: str = "official", statistic: str = "mean"):
        """Per switched-off language: neurons, ΔPPL on its own language (diagonal), the `statistic` ("mean" or
        "median") of the ΔPPL on the other languages (off-diagonal), and the same two for the random control
        (NaN where it was not evaluated)."""
        import pandas as pd

        if statistic not in ("mean", "median"):
            raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
        change, rand = self.change(aggregation), self.change(aggregation, control=True)
        rows = {}
        for name in self.names:
            others = [lang for lang in self.langs if lang != name]
            rows[name] = {"neurons": self.sizes[name],
                          "diagonal": change.loc[name, name] if name in self.langs else float("nan"),
                          f"off-diagonal {statistic}": getattr(change.loc[name, others], statistic)(),
                          "random: diagonal": rand.loc[name, name] if name in self.langs else float("nan"),
                          f"random: off-diagonal {statistic}": getattr(rand.loc[name, others], statistic)()}
        return pd.DataFrame(rows).T.rename_axis("switched off")

    def tidy(self, aggregation: str = "official"):
        """One row per (condition, evaluated language): set, control, neurons, ppl, change, relative change."""
        import pandas as pd

        base = self.ppl(aggregation).loc["none"]
        rows = []
        for (condition, lang), nll in self.nll.items():
            is_control = condition.startswith("random:")
            name = condition.removeprefix("random:")
            value = nll.perplexity(aggregation)
            rows.append({"switched off": name, "control": is_control, "evaluated": lang,
                         "neurons": self.sizes.get(name, 0), "ppl": value, "change": value - base[lang],
                         "relative change": (value - base[lang]) / base[lang]})
        return pd.DataFrame(rows)


def ppl_grid(model: nn.Module, tokenizer, texts_by_lang: dict, neuron_sets: dict, control: bool | str = False,
             seed: int = 0, batch_size: int = 8, max_length: int = 512, chunk_positions: int = 256,
             progress: bool = True) -> PPLGrid:
    """Perplexity of every language of `texts_by_lang` (lang -> texts or (prompt, response) pairs, see
    `text_nll`) with no intervention (row "none", computed once) and with each set of `neuron_sets`
    (name -> per-layer neuron indices, usually a language code -> that language's neurons) switched off
    with `lnlib.intervene.deactivate`.

    control: False; True or "all" adds, per set, a random control of the same size in every layer
    (`lnlib.intervene.random_like`, seed `seed` + the set's row number) evaluated on every language;
    "diagonal" evaluates each control only on the language named like its set (cheaper: one cell per row).
    Each condition scores all its languages' texts in one `text_nll` call (fuller batches), split afterwards.
    """
    import contextlib

    from lnlib import intervene, models

    if control not in (False, True, "all", "diagonal"):
        raise ValueError(f"control must be False, True, 'all' or 'diagonal', got {control!r}")
    if not texts_by_lang or not all(len(texts) for texts in texts_by_lang.values()):
        raise ValueError("texts_by_lang must map at least one language to a non-empty list of texts")
    if "none" in neuron_sets or any(str(name).startswith("random:") for name in neuron_sets):
        raise ValueError("'none' and names starting with 'random:' are reserved for the baseline and controls")
    width = models.n_neurons(model)
    checked = {name: intervene.check_neurons(neurons, models.n_layers(model), width)
               for name, neurons in neuron_sets.items()}
    langs = list(texts_by_lang)
    jobs = [("none", None, langs)] + [(name, neurons, langs) for name, neurons in checked.items()]
    if control:
        for row, (name, neurons) in enumerate(checked.items()):
            targets = langs if control in (True, "all") else [lang for lang in langs if lang == name]
            if targets:
                jobs.append((f"random:{name}", intervene.random_like(neurons, width, seed=seed + row), targets))
    nll = {}
    for condition, neurons, targets in progress_bar(jobs, "perplexity grid", progress):
        # one text_nll call per condition over all its languages' texts: fuller batches, then split by language
        texts = [text for lang in targets for text in texts_by_lang[lang]]
        with intervene.deactivate(model, neurons) if neurons is not None else contextlib.nullcontext():
            result = text_nll(model, tokenizer, texts, batch_size, max_length, chunk_positions, progress=False)
        first = 0
        for lang in targets:
            last = first + len(texts_by_lang[lang])
            nll[(condition, lang)] = TextNLL(result.nll_sum[first:last], result.n_tokens[first:last])
            first = last
    sizes = {name: intervene.n_neurons_in(neurons) for name, neurons in checked.items()}
    return PPLGrid(nll, tuple(checked), tuple(texts_by_lang), sizes, seed if control else None)


def extract_last_number(text: str) -> float | None:
    """The last number in `text` (commas between digits removed, as MAPO's evaluator does), or None."""
    import re

    found = re.findall(r"-?\d+(?:\.\d+)?", re.sub(r"(?<=\d),(?=\d)", "", text))
    return float(found[-1]) if found else None


def is_correct_number(text: str, answer: float, tolerance: float = 1e-2) -> bool:
    """True when the last number of `text` is within `tolerance` of `answer` (MAPO's criterion)."""
    value = extract_last_number(text)
    return value is not None and abs(value - answer) <= tolerance


_IDENTIFIERS: dict = {}


def _language_identifier(langs: tuple[str, ...]):
    if langs not in _IDENTIFIERS:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        identifier.set_languages(list(langs))
        _IDENTIFIERS[langs] = identifier
    return _IDENTIFIERS[langs]


def detect_language(text: str, langs=None, min_letters: int = 3) -> str | None:
    """The most likely language of `text` among `langs` (py3langid, a naive Bayes model shipped with the
    package; no network), or None when the text has fewer than `min_letters` letters (numbers and symbols
    carry no language). langs: default `lnlib.data.LANGS`."""
    from lnlib.data import LANGS

    if sum(ch.isalpha() for ch in text) < min_letters:
        return None
    return _language_identifier(tuple(langs or LANGS)).classify(text)[0]


@dataclass(frozen=True, eq=False)
class AccuracyGrid:
    """Answers generated with each neuron set switched off, and whether each is right.

    outputs: (condition, language) -> generated texts; correct: -> bool [n] (last number within tolerance);
    in_language: -> bool [n] (detected language is the question's). condition "none" or a set's name.
    """

    outputs: dict
    correct: dict
    in_language: dict
    names: tuple[str, ...]
    langs: tuple[str, ...]

    def accuracy(self, require_language: bool = True):
        """Share of answers that are correct (and, by default, in the question's language): rows "none" and
        each set, columns the evaluated languages."""
        import pandas as pd

        rows = ["none", *self.names]
        values = [[float((self.correct[(r, lang)] & (self.in_language[(r, lang)] if require_language else True))
                         .float().mean()) for lang in self.langs] for r in rows]
        return pd.DataFrame(values, index=pd.Index(rows, name="switched off"),
                            columns=pd.Index(self.langs, name="evaluated"))

    def change(self, require_language: bool = True):
        """Accuracy with a set switched off minus accuracy with none (the paper's Fig. 2 cells)."""
        table = self.accuracy(require_language)
        return table.loc[list(self.names)] - table.loc["none"]


def accuracy_grid(model: nn.Module, tokenizer, problems_by_lang: dict, neuron_sets: dict, prompt=None,
                  max_new_tokens: int = 256, batch_size: int = 8, stop=(), tolerance: float = 1e-2,
                  generate=None, progress: bool = True) -> AccuracyGrid:
    """Greedy answers to `problems_by_lang` (lang -> `lnlib.data.Problem`s) with no intervention and with
    each set of `neuron_sets` switched off; an answer counts when its last number is within `tolerance` of
    the gold answer and `detect_language` finds the question's language (the paper's "correct and in the
    correct language"). prompt: Problem -> text (default `lnlib.capture.mathoctopus_prompt`); generate: the
    generation function (default `lnlib.capture.generate_responses`; tests pass a stub)."""
    from lnlib import capture, intervene

    prompt = prompt or capture.mathoctopus_prompt
    generate = generate or capture.generate_responses
    conditions = [("none", None)] + [(name, neurons) for name, neurons in neuron_sets.items()]
    outputs, correct, in_language = {}, {}, {}
    jobs = [(c, n, lang) for c, n in conditions for lang in problems_by_lang]
    for condition, neurons, lang in progress_bar(jobs, "accuracy grid", progress):
        problems = list(problems_by_lang[lang])
        prompts = [prompt(p) for p in problems]
        options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, stop=stop, progress=False)
        if neurons is None:
            texts = generate(model, tokenizer, prompts, **options)
        else:
            with intervene.deactivate(model, neurons):
                texts = generate(model, tokenizer, prompts, **options)
        outputs[(condition, lang)] = texts
        correct[(condition, lang)] = torch.tensor([is_correct_number(t, p.answer, tolerance)
                                                   for t, p in zip(texts, problems, strict=True)], dtype=torch.bool)
        in_language[(condition, lang)] = torch.tensor([detect_language(t) == p.lang
                                                       for t, p in zip(texts, problems, strict=True)],
                                                      dtype=torch.bool)
    return AccuracyGrid(outputs, correct, in_language, tuple(neuron_sets), tuple(problems_by_lang))
