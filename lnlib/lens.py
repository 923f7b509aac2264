"""The logit lens: decode every layer's residual stream through the final norm and the output embedding,
and attribute the decoded tokens to languages.

Used as evidence for the paper's stages 3 and 4 (Zhang et al. 2026, Sec. 5.1): where does the model move
from a shared (often English-looking) space back to the input language? The latent-English picture is
Wendler et al. (2024).

Residual stream: the output of every transformer block, captured with forward hooks. Each is decoded as
head(final_norm(h)), the norm applied exactly once, with Gemma 2/3's final logit soft-capping when set. (In
Hugging Face's `hidden_states` the last entry already has the final norm applied and the last block's raw
output is missing, so the hooks are used instead.) The last layer's lens therefore equals the model's logits.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from lnlib import hooks, models, stats, work
from lnlib.batching import Batch, batches, check_encoded, check_examples, check_size, encode_all
from lnlib.config import progress_bar
from lnlib.data import LANG_NAMES
from lnlib.evaluate import logit_head
from lnlib.models import body, final_norm

UNATTRIBUTED = -1


# ----------------------------------------------------------------------------------------------
# A data-driven lexicon: which language does a token belong to?


@dataclass(frozen=True)
class Lexicon:
    """Token -> language, built from corpora by `build_lexicon`.

    langs: the K language codes; token_lang: int64 [vocab], index into `langs` or -1 (unattributed);
    counts: int64 [vocab, K], occurrences of each token in each language's corpus; rule: the parameters.
    """

    langs: tuple[str, ...]
    token_lang: torch.Tensor
    counts: torch.Tensor
    rule: dict

    def lang_of(self, token_id: int) -> str | None:
        k = int(self.token_lang[token_id])
        return None if k == UNATTRIBUTED else self.langs[k]

    def sizes(self) -> pd.Series:
        """Number of tokens attributed to each language (and unattributed among those seen)."""
        seen = self.counts.sum(1) > 0
        sizes = {lang: int((self.token_lang == k).sum()) for k, lang in enumerate(self.langs)}
        sizes["unattributed (seen)"] = int(((self.token_lang == UNATTRIBUTED) & seen).sum())
        return pd.Series(sizes, name="tokens")


# Unicode scripts that identify one of the paper's languages on their own (by character name prefix).
SCRIPT_LANGS = {"CYRILLIC": "ru", "BENGALI": "bn", "THAI": "th", "HIRAGANA": "ja", "KATAKANA": "ja"}


def script_lang(text: str) -> str | None:
    """The language a token's letters point to unambiguously by script (Cyrillic -> ru, Bengali -> bn,
    Thai -> th, Hiragana/Katakana -> ja), or None (Latin, Han, digits, punctuation or a mix)."""
    found = set()
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        lang = next((code for prefix, code in SCRIPT_LANGS.items() if name.startswith(prefix)), None)
        if lang is None:
            return None
        found.add(lang)
    return found.pop() if len(found) == 1 else None


def build_lexicon(tokenizer, texts_by_lang: Mapping[str, Sequence[str]], min_share: float = 0.8,
                  min_count: int = 3, vocab_size: int | None = None, script_fallback: bool = False) -> Lexicon:
    """Attribute tokens to languages from how often they occur in each language's texts.

    Rule: tokenize every text (no special tokens) and count each token's occurrences c_k per language k;
    turn them into rates f_k = c_k / T_k (T_k: all tokens of language k), so a language with longer texts
    does not win by volume; share_k = f_k / Σ f. A token belongs to the language with the largest share when
    that share is >= `min_share` and the token occurs there at least `min_count` times. Everything else
    (digits, punctuation, subwords common to several languages, rare tokens) is unattributed (-1).
    With `script_fallback`, a token left unattributed whose letters are all in a script used by exactly one
    of the languages (`script_lang`) is given that language, seen in the corpora or not. Off by default: it
    covers Cyrillic, Bengali, Thai and kana tokens only, so it attributes far more tokens to those languages
    than to the Latin-script ones.

    vocab_size: default the tokenizer's length. Returns a `Lexicon`.
    """
    if not 0.5 < min_share <= 1:
        raise ValueError(f"min_share must lie in (0.5, 1] so that at most one language can pass it, got {min_share}")
    langs = tuple(texts_by_lang)
    if len(langs) < 2:
        raise ValueError(f"a lexicon needs texts in at least 2 languages, got {langs}")
    vocab = vocab_size or len(tokenizer)
    counts = torch.zeros(vocab, len(langs), dtype=torch.int64)
    for k, lang in enumerate(langs):
        texts = list(texts_by_lang[lang])
        if not texts:
            raise ValueError(f"no texts for language {lang!r}")
        ids = [i for row in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in row]
        counts[:, k] = torch.bincount(torch.tensor(ids, dtype=torch.int64), minlength=vocab)[:vocab]
    rates = counts.double() / counts.sum(0).clamp(min=1).double()
    total = rates.sum(1, keepdim=True)
    share = torch.where(total > 0, rates / total.clamp(min=1e-300), torch.zeros_like(rates))
    best_share, best = share.max(1)
    best_count = counts.gather(1, best[:, None]).squeeze(1)
    token_lang = torch.where((best_share >= min_share) & (best_count >= min_count), best,
                             torch.full_like(best, UNATTRIBUTED))
    if script_fallback:
        index = {lang: k for k, lang in enumerate(langs)}
        todo = (token_lang == UNATTRIBUTED).nonzero().squeeze(1).tolist()
        for token_id, text in zip(todo, tokenizer.batch_decode([[i] for i in todo]), strict=True):
            lang = script_lang(text)
            if lang in index:
                token_lang[token_id] = index[lang]
    rule = {"min_share": min_share, "min_count": min_count, "script_fallback": script_fallback}
    return Lexicon(langs, token_lang, counts, rule)


# ----------------------------------------------------------------------------------------------
# The logit lens


@dataclass(frozen=True)
class LensResult:
    """Per layer, the top tokens of the decoded residual stream at the chosen positions.

    rows: one per decoded position; text_index, position: int64 [rows], the text and token position.
    token: int64 [rows], the input token at that position; target: int64 [rows], the next input token
    (-1 where the text ends).
    top_ids: int64 [layers, rows, top_k]; top_probs: float32 [layers, rows, top_k] (softmax probabilities).
    lang_mass: float32 [layers, rows, K + 1] or None: probability mass on the tokens of each lexicon
    language, the last column the unattributed rest (only when a lexicon was given).
    """

    texts: tuple[str, ...]
    text_index: torch.Tensor
    position: torch.Tensor
    token: torch.Tensor
    target: torch.Tensor
    top_ids: torch.Tensor
    top_probs: torch.Tensor
    lang_mass: torch.Tensor | None = None
    langs: tuple[str, ...] = ()

    @property
    def layers(self) -> int:
        return self.top_ids.shape[0]

    def top_tokens(self, tokenizer, row: int, k: int = 1) -> list[list[str]]:
        """The top-k decoded tokens of one row, per layer."""
        return [[tokenizer.decode([t]) for t in self.top_ids[layer, row, :k].tolist()] for layer in range(self.layers)]


def _decoded_rows(batch: Batch, position: str, special: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: the (row, position) pairs of a batch to decode: each text's last token, or every token that is not
    special (such as BOS)."""
    mask = batch.attention_mask.bool().cpu()
    ids = batch.input_ids.cpu()
    if position == "last":
        keep = torch.zeros_like(mask)
        keep[torch.arange(len(mask)), mask.sum(1) - 1] = True
    else:
        keep = mask & ~torch.isin(ids, special)
    return keep.nonzero(as_tuple=True)


def _block_states(model: nn.Module, batch: Batch) -> list[torch.Tensor]:
    """Step 2: the residual stream after every block, [batch, tokens, hidden] each (hooks, removed after)."""
    store: dict[int, torch.Tensor] = {}
    with hooks.on_layers(model, lambda layer, out: store.__setitem__(layer, out), "block"):
        body(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    work.add("forward", batch.n_tokens)
    return [store[layer] for layer in sorted(store)]


def _decode(states: list[torch.Tensor], rr: torch.Tensor, cc: torch.Tensor, head, norm, top_k: int,
            token_lang: torch.Tensor | None, n_k: int, chunk_positions: int):
    """Step 3: per layer, the top-k tokens and probabilities at the chosen positions, and (with a lexicon) the
    probability mass on each of the lexicon's `n_k` languages and the rest: ([layers, rows, k], [layers, rows, k],
    [layers, rows, n_k + 1] or None)."""
    tops, probs, masses = [], [], []
    for hidden in states:
        h = hidden[rr.to(hidden.device), cc.to(hidden.device)]
        t_ids, t_probs, t_mass = [], [], []
        for start in range(0, len(h), chunk_positions):
            p = torch.softmax(head(norm(h[start:start + chunk_positions])), dim=-1)
            values, index = p.topk(top_k, dim=-1)
            t_ids.append(index.cpu())
            t_probs.append(values.float().cpu())
            if token_lang is not None:
                vocab = min(p.shape[-1], len(token_lang))
                m = torch.zeros(len(p), n_k + 1, device=p.device)
                m.index_add_(1, token_lang[:vocab].to(p.device), p[:, :vocab].float())
                m[:, n_k] += p[:, vocab:].float().sum(-1)
                t_mass.append(m.cpu())
        tops.append(torch.cat(t_ids))
        probs.append(torch.cat(t_probs))
        if token_lang is not None:
            masses.append(torch.cat(t_mass))
    return torch.stack(tops), torch.stack(probs), torch.stack(masses) if masses else None


@torch.no_grad()
def logit_lens(model: nn.Module, tokenizer, texts: Sequence[str], top_k: int = 5, position: str = "last",
               lexicon: Lexicon | None = None, max_length: int = 256, batch_size: int = 8,
               chunk_positions: int = 128, progress: bool = False) -> LensResult:
    """Decode the residual stream after every block: softmax(head(final_norm(h))) at the chosen positions.

    position: "last" (the last token of each text) or "all" (every token except special ones such as BOS).
    lexicon: when given, also the probability mass on each of its languages' tokens (`LensResult.lang_mass`).
    Texts are truncated to `max_length` tokens; the output embedding is applied to at most `chunk_positions`
    positions at a time. Cost: every decoded position needs one output-embedding product per layer (layers ×
    vocabulary × hidden multiply-adds), which for a large vocabulary (Gemma: 262,144) dwarfs the forward pass;
    on a CPU decode a few hundred positions, not thousands. Rows come in text order, then position order.
    """
    if position not in ("last", "all"):
        raise ValueError(f"position must be 'last' or 'all', got {position!r}")
    texts = check_examples(texts, "texts")
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("the logit lens decodes plain texts, not (prompt, response) pairs")
    vocab = model.get_output_embeddings().weight.shape[0]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab:
        raise ValueError(f"top_k must be a whole number between 1 and the vocabulary size {vocab}, got {top_k!r}")
    check_size("chunk_positions", chunk_positions)
    encoded = check_encoded(model, encode_all(tokenizer, texts, check_size("max_length", max_length)), "texts",
                            need_tokens=True)  # an empty text has no last token: padding would be decoded
    head, norm = logit_head(model), final_norm(model)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    token_lang, n_k = None, 0
    if lexicon is not None:
        n_k = len(lexicon.langs)
        token_lang = lexicon.token_lang.clone()
        token_lang[token_lang == UNATTRIBUTED] = len(lexicon.langs)
    parts = []
    with models.evaluating(model):
        for batch in progress_bar(batches(tokenizer, texts, batch_size, max_length, models.input_device(model),
                                          encoded), "logit lens", progress):
            rr, cc = _decoded_rows(batch, position, special)
            lengths = batch.attention_mask.sum(1).cpu()
            ids = batch.input_ids.cpu()
            following = torch.where(cc + 1 < lengths[rr], ids[rr, (cc + 1).clamp(max=ids.shape[1] - 1)],
                                    torch.full_like(cc, -1))
            decoded = _decode(_block_states(model, batch), rr, cc, head, norm, top_k, token_lang, n_k,
                              chunk_positions)
            parts.append((torch.tensor(batch.index)[rr], cc, ids[rr, cc], following, *decoded))
    return _assemble(texts, parts, lexicon)


def _assemble(texts, parts, lexicon: Lexicon | None) -> LensResult:
    """Step 4: the batches' rows in text order, then position order."""
    text_index, position, token, target = (torch.cat([p[i] for p in parts]) for i in range(4))
    top_ids, top_probs = torch.cat([p[4] for p in parts], 1), torch.cat([p[5] for p in parts], 1)
    mass = torch.cat([p[6] for p in parts], 1) if parts[0][6] is not None else None
    order = torch.argsort(text_index * (int(position.max()) + 1) + position)
    return LensResult(tuple(texts), text_index[order], position[order], token[order], target[order],
                      top_ids[:, order], top_probs[:, order], None if mass is None else mass[:, order],
                      lexicon.langs if lexicon is not None else ())


def language_shares(result: LensResult, lexicon: Lexicon, input_langs: Sequence[str], by: str = "top1",
                    pivot: str = "en", texts: Sequence[int] | None = None) -> pd.DataFrame:
    """Per layer, which language the decoded tokens belong to, relative to each text's input language.

    input_langs: the language of every text of `result` (in order). by: "top1" (share of rows whose top
    token is attributed to each group), "topk" (share of all top-k tokens) or "mass" (mean probability mass,
    needs `result.lang_mass`). Columns: "input language", `pivot` (English, for texts in another language),
    "other languages", "unattributed"; the four add up to 1 per layer. Texts whose input language is the
    pivot count their pivot tokens as "input language". texts: indices of the texts to include (default all).
    """
    if len(input_langs) != len(result.texts):
        raise ValueError(f"input_langs has {len(input_langs)} entries for {len(result.texts)} texts")
    unknown = sorted(set(input_langs) - set(lexicon.langs))
    if unknown:
        raise ValueError(f"input languages {unknown} are not in the lexicon; known: {', '.join(lexicon.langs)}")
    if texts is not None:
        keep = torch.isin(result.text_index, torch.as_tensor(list(texts), dtype=torch.int64))
        if not keep.any():
            raise ValueError(f"none of the texts {list(texts)} has a decoded row")
        result = LensResult(result.texts, result.text_index[keep], result.position[keep], result.token[keep],
                            result.target[keep], result.top_ids[:, keep], result.top_probs[:, keep],
                            None if result.lang_mass is None else result.lang_mass[:, keep], result.langs)
    k = len(lexicon.langs)
    own = torch.tensor([lexicon.langs.index(input_langs[i]) for i in result.text_index.tolist()])
    piv = lexicon.langs.index(pivot) if pivot in lexicon.langs else -2
    cols = ("input language", pivot, "other languages", "unattributed")
    if by == "mass":
        if result.lang_mass is None:
            raise ValueError("by='mass' needs a LensResult computed with a lexicon (logit_lens(..., lexicon=...))")
        mass = result.lang_mass.double()  # [layers, rows, K + 1]
        rows = torch.arange(mass.shape[1])
        in_lang = mass[:, rows, own]
        pivot_mass = mass[:, :, piv] if piv >= 0 else torch.zeros_like(in_lang)
        pivot_mass = torch.where(own == piv, torch.zeros_like(pivot_mass), pivot_mass)
        unattr = mass[:, :, k]
        other = mass[:, :, :k].sum(-1) - in_lang - pivot_mass
        parts = torch.stack([in_lang, pivot_mass, other, unattr], -1).mean(1)
        parts = parts / parts.sum(-1, keepdim=True)
    elif by in ("top1", "topk"):
        ids = result.top_ids[:, :, :1] if by == "top1" else result.top_ids
        token_lang = lexicon.token_lang
        if int(ids.max()) >= len(token_lang):  # tokens beyond the lexicon's vocabulary are unattributed
            token_lang = torch.cat([token_lang, torch.full((int(ids.max()) + 1 - len(token_lang),), UNATTRIBUTED)])
        lang = token_lang[ids]  # [layers, rows, k]
        own_b = own[None, :, None].expand_as(lang)
        is_own = lang == own_b
        is_pivot = (lang == piv) & ~is_own
        is_unattr = lang == UNATTRIBUTED
        is_other = ~(is_own | is_pivot | is_unattr)
        parts = torch.stack([g.double().mean((1, 2)) for g in (is_own, is_pivot, is_other, is_unattr)], -1)
    else:
        raise ValueError(f"by must be 'top1', 'topk' or 'mass', got {by!r}")
    return pd.DataFrame(parts.numpy(), columns=list(cols), index=pd.Index(range(result.layers), name="layer"))


CATEGORIES = ("input language", "pivot", "other languages", "unattributed")


def text_shares(result: LensResult, lexicon: Lexicon, input_langs: Sequence[str], pivot: str = "en") -> torch.Tensor:
    """Per text and layer, the share of its decoded positions whose top-1 token belongs to its input language, to
    the `pivot` (English), to another language, or to none: float64 [texts, layers, 4] (`CATEGORIES`). Averaging
    over texts gives `language_shares(..., by="top1")` up to the weighting of texts; resampling texts gives
    intervals."""
    shares = torch.zeros(len(result.texts), result.layers, len(CATEGORIES), dtype=torch.float64)
    for text in range(len(result.texts)):
        frame = language_shares(result, lexicon, input_langs, pivot=pivot, texts=[text])
        shares[text] = torch.tensor(frame.to_numpy())
    return shares


@dataclass(frozen=True, eq=False)
class ShareBands(Mapping):
    """Bootstrap bands of the decoded tokens' languages per group of texts, made by `share_bands`.

    It reads as the mapping (group, category, layer) -> `lnlib.stats.Estimate` of the group's mean share
    (categories: `CATEGORIES`; what `lnlib.plot.lens_bands` draws). groups: group name -> text indices, the texts
    outside the pivot language first ("non-English"), then those in it ("English"); layers: number of layers.
    The methods read one group, by default the first.
    """

    estimates: dict
    groups: dict
    layers: int

    def __getitem__(self, key) -> stats.Estimate:
        return self.estimates[key]

    def __iter__(self):
        return iter(self.estimates)

    def __len__(self) -> int:
        return len(self.estimates)

    def _group(self, group: str | None) -> str:
        if group is None:
            return next(iter(self.groups))
        if group not in self.groups:
            raise ValueError(f"no group {group!r}; the groups are {', '.join(self.groups)}")
        return group

    def at(self, category: str, layer: int, group: str | None = None) -> stats.Estimate:
        """The band of one category (`CATEGORIES`) at one layer."""
        return self.estimates[(self._group(group), category, layer)]

    def curve(self, category: str, group: str | None = None) -> list[float]:
        """One category's share at every layer (the bands' point values)."""
        return [self.at(category, layer, group).value for layer in range(self.layers)]

    def pivot_peak(self, group: str | None = None) -> int:
        """The layer where the pivot language's (English's) share is largest (the first such layer)."""
        pivot = self.curve("pivot", group)
        return max(range(self.layers), key=lambda layer: pivot[layer])

    def return_layer(self, group: str | None = None) -> int | None:
        """The first layer after `pivot_peak` where the input language's share exceeds the pivot's: where the input
        language comes back (None if it never leads again)."""
        peak, pivot, own = self.pivot_peak(group), self.curve("pivot", group), self.curve("input language", group)
        return next((layer for layer in range(self.layers) if layer > peak and own[layer] > pivot[layer]), None)


def share_bands(shares: torch.Tensor, input_langs: Sequence[str], pivot: str = "en", n: int = 1000,
                seed: int = 0) -> ShareBands:
    """Bands over texts of `text_shares` (float [texts, layers, 4]): per group of texts, the mean share of each
    category at every layer with its bootstrap interval (`lnlib.stats.bootstrap`, `n` resamples of the texts drawn
    with replacement within each group, `seed`). The groups are the texts whose input language is not `pivot`
    ("non-English") and those in it ("English"); a group without texts is left out."""
    if shares.ndim != 3 or shares.shape[0] != len(input_langs) or shares.shape[2] != len(CATEGORIES):
        raise ValueError(f"shares must be [texts, layers, {len(CATEGORIES)}] for the {len(input_langs)} texts of "
                         f"input_langs, got shape {tuple(shares.shape)}")
    name = LANG_NAMES.get(pivot, pivot)
    groups = {f"non-{name}": [i for i, k in enumerate(input_langs) if k != pivot],
              name: [i for i, k in enumerate(input_langs) if k == pivot]}
    groups = {group: members for group, members in groups.items() if members}
    if not groups:
        raise ValueError("share_bands needs at least one text")

    def curves(index):
        rows = {}
        for group, members in groups.items():
            members = torch.tensor(members)
            picked = members if index is None else members[index[group]]
            rows.update({(group, c, layer): float(v) for c_i, c in enumerate(CATEGORIES)
                         for layer, v in enumerate(shares[picked, :, c_i].mean(0))})
        return rows

    bands = stats.bootstrap(curves, {group: len(members) for group, members in groups.items()}, n=n, seed=seed)
    return ShareBands(bands, groups, shares.shape[1])
