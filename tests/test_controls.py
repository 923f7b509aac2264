"""lnlib.controls: stability under resampled texts, the sensitivity grid, the released counts resampled by token,
deactivation against matched random neurons, data hygiene, flagging and removing texts in another language, and
steering (DiffMean directions, neuron and direction edits, steered continuations), each checked against the same
quantity computed by hand on small synthetic counts or tiny models."""

from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import compare, controls, evaluate, hooks, identify, intervene, langid, models, pipeline, stages, stats
from lnlib.counts import ActivationCounts
from lnlib.data import LANGS, Problem, ReleasedCounts
from lnlib.generation import generate_responses
from lnlib.protocols import Source

pytestmark = pytest.mark.filterwarnings("ignore::lnlib.identify.IntervalWarning")  # synthetic counts, tiny models

LANGS3 = ("en", "de", "fr")
SOURCES = (Source("mgsm", range(0, 8)), Source("mgsm", range(8, 12)))
GROUP_SIZE = 2


# ----------------------------------------------------------------------------------------------
# Synthetic studies: counts kept per group of texts, with specific, related and general neurons planted


def _probs(layers: int = 4, neurons: int = 50, seed: int = 0) -> torch.Tensor:
    """[layers, neurons, 3]: moderate random firing, plus planted neurons: specific to one language (layers 0
    and 2), shared by two (layers 1 and 3), and general (layer 3, neurons 10 to 12)."""
    g = torch.Generator().manual_seed(seed)
    p = 0.05 + 0.4 * torch.rand(layers, neurons, 3, generator=g)
    for k in range(3):
        p[0, k] = 0.02
        p[0, k, k] = 0.95
        p[1, k] = 0.95
        p[1, k, k] = 0.02
        p[2, k] = 0.02
        p[2, k, k] = 0.9
        p[3, k] = 0.9
        p[3, k, (k + 1) % 3] = 0.02
    p[3, 10:13] = 0.9
    return p


def _counts(p: torch.Tensor, groups: int, tokens: int, generator=None) -> dict[str, ActivationCounts]:
    """Per-language counts of `groups` groups of `tokens` tokens each: identical groups (round(p · tokens)) without a
    generator, binomial draws with one."""
    if generator is None:
        per_group = (p * tokens).round().to(torch.int32).expand(groups, *p.shape).clone()
    else:
        per_group = torch.binomial(torch.full((groups, *p.shape), float(tokens)), p.expand(groups, *p.shape),
                                   generator=generator).to(torch.int32)
    return {lang: ActivationCounts(per_group[..., k].sum(0, dtype=torch.int64), groups * tokens, groups * GROUP_SIZE,
                                   0, per_group[..., k].contiguous(), torch.full((groups,), tokens, dtype=torch.int64))
            for k, lang in enumerate(LANGS3)}


SETTINGS = pipeline.Settings(rate=0.05)


def _study(groups=(4, 2), tokens: int = 50, seed: int | None = None,
           settings: pipeline.Settings = SETTINGS) -> pipeline.NeuronStudy:
    """A study of two sources (4 and 2 groups of two texts by default); seed None: every group identical."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    p = _probs()
    by_source = {source.label: _counts(p, n, tokens, generator) for source, n in zip(SOURCES, groups, strict=True)}
    texts = pipeline.Texts(sources=SOURCES, langs=LANGS3, group_size=GROUP_SIZE)
    return pipeline.from_counts(by_source, settings, texts, {"model": "synthetic"})


def _pairs(ident, kind: str, lang: str) -> set:
    return {tuple(p) for p in ident.neurons(kind, lang).tolist()}


def _share_kept(reference, other, kind: str, lang: str) -> float:
    a = _pairs(reference, kind, lang)
    return len(a & _pairs(other, kind, lang)) / len(a) if a else float("nan")


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b)


# ----------------------------------------------------------------------------------------------
# Overlaps and stability


def test_overlaps_are_the_share_of_reference_neurons_found_again():
    study = _study(seed=1)
    other = study.with_settings(rate=0.03).ident
    got = controls._overlaps(study.ident, other)
    assert list(got) == [(lang, kind) for lang in LANGS3 for kind in ("specific", "related")]
    for (lang, kind), value in got.items():
        assert _same(value, _share_kept(study.ident, other, kind, lang)), (lang, kind)
    assert any(v < 1 for v in got.values())  # fewer selected neurons: some of the reference's are lost
    assert all(v == 1.0 for v in controls._overlaps(study.ident, study.ident).values())


def test_stability_of_identical_resamples_is_full_overlap():
    """Every group of texts counts the same, so every resample and both halves give the study's probabilities."""
    study = _study(seed=None)
    table = controls.stability(study, n=3)
    assert table.index.names == ["language", "kind"]
    assert list(table.index) == [(lang, kind) for lang in LANGS3 for kind in ("specific", "related")]
    assert list(table.columns) == ["neurons", "kept under resampling", "95 % interval", "kept between halves"]
    for (lang, kind), row in table.iterrows():
        assert row["neurons"] == len(study.ident.neurons(kind, lang)) > 0
    assert (table["kept under resampling"] == 1.0).all()
    assert (table["kept between halves"] == 1.0).all()
    assert (table["95 % interval"] == "1.00 to 1.00").all()


def test_stability_equals_a_bootstrap_and_halves_computed_by_hand():
    """Resample the groups with the same generator, count them up with ActivationCounts.select and from_counts (not
    the study's probs_of), identify, and compare; the halves are the even and odd groups."""
    study = _study(tokens=10, seed=1)
    n, seed = 4, 3
    table = controls.stability(study, n=n, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(n):
        by_source = {}
        for label, by_lang in study.by_source.items():
            by_source[label] = {}
            for lang in LANGS3:
                g = by_lang[lang].n_groups
                by_source[label][lang] = by_lang[lang].select(torch.randint(g, (g,), generator=generator))
        draws.append(pipeline.from_counts(by_source, study.settings).ident)
    halves = [pipeline.from_counts({label: {lang: c[lang].select(torch.arange(part, c[lang].n_groups, 2))
                                            for lang in LANGS3} for label, c in study.by_source.items()},
                                   study.settings).ident for part in (0, 1)]
    for lang in LANGS3:
        for kind in ("specific", "related"):
            row = table.loc[(lang, kind)]
            shares = [_share_kept(study.ident, d, kind, lang) for d in draws]
            assert row["kept under resampling"] == pytest.approx(np.nanmean(shares)), (lang, kind)
            lo, hi = np.percentile([s for s in shares if not np.isnan(s)], [2.5, 97.5])
            assert row["95 % interval"] == f"{lo:.2f} to {hi:.2f}"
            assert _same(row["kept between halves"], _share_kept(halves[0], halves[1], kind, lang)), (lang, kind)
    # the noisy resamples and halves lose neurons somewhere, so mean, interval and halves are not all 1
    assert (table["kept under resampling"] < 1).any() and (table["kept between halves"] < 1).any()
    assert ((table["kept under resampling"] >= 0) & (table["kept under resampling"] <= 1)).all()


def test_stability_halves_need_two_groups_in_every_source():
    study = _study(groups=(4, 1), tokens=20, seed=2)
    table = controls.stability(study, n=2)
    assert table["kept between halves"].isna().all()
    assert table["kept under resampling"].between(0, 1).all()
    assert controls.stability(study, n=2).equals(table)  # seeded


# ----------------------------------------------------------------------------------------------
# Sensitivity


def test_sensitivity_has_one_row_per_setting_with_the_papers_inside():
    study = _study(seed=1, settings=pipeline.Settings())  # the paper's rate 1 % and bar 0.95
    table = controls.sensitivity(study)
    rates, bars = (0.005, 0.01, 0.02, 0.05), (0.9, 0.95, 0.975)
    assert table.index.names == ["rate", "bar"]
    assert list(table.index) == [(r, b) for r in rates for b in bars]
    paper = table.loc[(0.01, 0.95)]
    assert paper["λ*"] == study.lam and paper["language neurons kept"] == 1.0
    assert {k: paper[k] for k in ("specific", "related", "general")} == compare.totals(study.ident)
    assert table["language neurons kept"].between(0, 1).all()
    # one other cell, identified by hand with AutoSweep
    lam, ident = identify.autosweep(study.probs, 0.05, 0.9, 0.0, 0.2, 1e-3, LANGS3, 2.0)
    row = table.loc[(0.05, 0.9)]
    assert row["λ*"] == lam
    assert row["specific"] == sum(len(ident.neurons("specific", lang)) for lang in LANGS3)
    assert row["related"] == sum(len(ident.neurons("related", lang)) for lang in LANGS3)
    assert row["general"] == int((ident.n_above == 3).sum())
    base = {tuple(p) for p in study.ident.neurons("language").tolist()}
    kept = {tuple(p) for p in ident.neurons("language").tolist()}
    assert row["language neurons kept"] == len(base & kept) / len(base)
    assert row["stages"] == stages.stages_of(ident).describe()
    assert table["specific"].nunique() > 1  # the classes move with the settings


def test_sensitivity_takes_its_grid_and_refuses_a_rate_outside_0_1():
    study = _study(seed=1)
    table = controls.sensitivity(study, rates=(0.05,), bars=(0.95,))
    assert list(table.index) == [(0.05, 0.95)] and table.loc[(0.05, 0.95), "language neurons kept"] == 1.0
    with pytest.raises(ValueError, match="rate must lie strictly between 0 and 1"):
        controls.sensitivity(study, rates=(1.5,), bars=(0.95,))
    with pytest.raises(ValueError, match="bar must lie strictly between 0 and 1"):
        controls.sensitivity(study, rates=(0.05,), bars=(0.0,))


# ----------------------------------------------------------------------------------------------
# The released counts, resampled by token


def test_released_resample_reads_the_released_counts(data_dir):
    table = controls.released_resample(n=2, seed=0)
    assert table.index.names == ["language", "kind"]
    assert list(table.index) == [(lang, kind) for lang in LANGS for kind in ("specific", "related")]
    released = pipeline.from_released()  # the same identification, from lnlib.counts' response probabilities
    for (lang, kind), row in table.iterrows():
        assert row["neurons"] == len(released.ident.neurons(kind, lang)), (lang, kind)
    mean, smallest = table["kept (mean)"], table["kept (smallest)"]
    assert mean.between(0, 1).all() and smallest.between(0, 1).all() and (smallest <= mean).all()
    assert (mean < 1).any() and mean.median() > 0.9  # token noise moves a few neurons, not most


def test_released_resample_uses_response_counts_and_token_totals(monkeypatch):
    """A small fake release: the response counts are full − prefix clamped at 0, over full − prefix tokens; with a
    huge number of tokens the binomial draws reproduce the probabilities, so every neuron is kept."""
    p = _probs()
    tokens = torch.tensor([10 ** 12, 2 * 10 ** 12, 3 * 10 ** 12], dtype=torch.int64)
    prefix_tokens = torch.tensor([1000, 2000, 3000], dtype=torch.int64)
    response = (p.double() * tokens.double()).round().to(torch.int64)
    prefix = torch.zeros_like(response)
    prefix[2, :, 0] = 5
    full = response + prefix
    full[0, 0, 0], prefix[0, 0, 0] = 0, response[0, 0, 0]  # more prefix than full counts: clamped to 0, not kept
    fake = ReleasedCounts(LANGS3, full, prefix, tokens + prefix_tokens, prefix_tokens)
    monkeypatch.setattr(controls, "load_released_counts", lambda dataset: fake)
    settings = pipeline.Settings(rate=0.06, widen=None)  # the 12 planted neurons: no tie at the selection's edge
    table = controls.released_resample("mgsm", n=2, settings=settings)
    by_hand = (full - prefix).clamp(min=0).double() / tokens.double()
    ident = settings.run(by_hand.float(), LANGS3)
    assert (0, 0) not in _pairs(ident, "specific", "en") and len(_pairs(ident, "specific", "en")) == 1
    for (lang, kind), row in table.iterrows():
        assert row["neurons"] == len(ident.neurons(kind, lang)), (lang, kind)
    assert (table["kept (mean)"] == 1.0).all() and (table["kept (smallest)"] == 1.0).all()


# ----------------------------------------------------------------------------------------------
# Deactivation against matched random neurons


def _tiny_study() -> pipeline.NeuronStudy:
    """A study shaped like the tiny llama's MLP ([2 layers, 48 neurons]) with a specific (layer 0) and a related
    (layer 1) neuron planted for every language of LANGS3, identified at a fixed λ."""
    g = torch.Generator().manual_seed(5)
    p = 0.05 + 0.3 * torch.rand(2, 48, 3, generator=g)
    for k in range(3):
        p[0, 2 * k] = 0.01
        p[0, 2 * k, k] = 0.95
        p[1, 2 * k + 1] = 0.95
        p[1, 2 * k + 1, k] = 0.01
    return pipeline.from_counts({"synthetic": _counts(p, 2, 100)}, pipeline.Settings(rate=0.1, lam=0.0))


def test_matched_deactivation_scores_own_neurons_and_seeded_matched_controls():
    """Each row by hand: the perplexity of the language's texts under `intervene.deactivate` of its own neurons, and of
    random sets drawn with seeds 0 and 1 (per layer; per layer and firing rate), as % change from no intervention."""
    model, tok = tiny_model("llama"), word_tokenizer()
    study = _tiny_study()
    texts = {"en": ["w1 w2 w3 w4 w5 w6", "w9 w8 w7 w6"], "fr": ["w30 w31 w32 w33 w34", "w40 w41 w42"]}
    got = controls.matched_deactivation(model, tok, study, texts, n=2, progress=False)
    assert list(got.table.index) == ["en", "fr"]
    assert list(got.table.columns) == ["own neurons", "layer-matched", "rate-matched"]
    own = dict(zip(LANGS3, study.ident.mask("language"), strict=True))
    width = models.n_neurons(model)
    for lang, lang_texts in texts.items():
        assert sum(len(layer) for layer in own[lang]) > 0
        base = evaluate.perplexity(model, tok, lang_texts, progress=False)

        def change(neurons, lang_texts=lang_texts, base=base) -> float:
            with intervene.deactivate(model, neurons):
                return 100 * (evaluate.perplexity(model, tok, lang_texts, progress=False) - base) / base

        row = got.table.loc[lang]
        layer = [change(intervene.random_like(own[lang], width, seed=i)) for i in (0, 1)]
        rate = [change(intervene.matched_random(own[lang], study.probs, seed=i)) for i in (0, 1)]
        assert row["own neurons"] == pytest.approx(change(own[lang]), abs=1e-5), lang
        assert row["layer-matched"] == pytest.approx(sum(layer) / 2, abs=1e-5), lang
        assert row["rate-matched"] == pytest.approx(sum(rate) / 2, abs=1e-5), lang
        assert len({round(v, 5) for v in (change(own[lang]), *layer, *rate)}) == 5  # five different sets
        assert got.grids[lang].names == (lang, f"{lang} layer-matched #0", f"{lang} rate-matched #0",
                                         f"{lang} layer-matched #1", f"{lang} rate-matched #1")
    assert hooks.hook_count(model) == 0 and not hooks.is_edited(model)
    with pytest.raises(ValueError, match="'xx' not among the study's languages"):
        controls.matched_deactivation(model, tok, study, {"xx": ["w1 w2"]}, progress=False)
    with pytest.raises(ValueError, match="n must be a whole number"):
        controls.matched_deactivation(model, tok, study, texts, n=0, progress=False)


def test_survives_is_the_median_share_of_the_effect_a_control_does_not_reproduce():
    table = pd.DataFrame({"own neurons": [10.0, 20.0, 4.0], "layer-matched": [5.0, 30.0, 1.0],
                          "rate-matched": [2.0, 10.0, -4.0]}, index=["en", "de", "fr"])
    matched = controls.MatchedControls(table, {})
    # layer-matched: 1 − 0.5, 1 − min(1.5, 1), 1 − 0.25 → median of 0.5, 0, 0.75
    assert matched.survives("layer-matched") == pytest.approx(0.5)
    # rate-matched: 1 − 0.2, 1 − 0.5, 1 − (−1) → median of 0.8, 0.5, 2
    assert matched.survives("rate-matched") == pytest.approx(0.8)
    with pytest.raises(ValueError, match="control must be one of layer-matched, rate-matched"):
        matched.survives("own neurons")


# ----------------------------------------------------------------------------------------------
# Data hygiene


def test_hygiene_flags_other_languages_scripts_and_digits():
    texts = {"en": ["Janet has three ducks and she sells the eggs at the market every day.",
                    "Собака бежит по улице и громко лает на прохожих.",  # another script
                    "12 + 30 = 42",  # digits only: no language
                    "Der Hund läuft schnell über die Straße und bellt laut."],  # German
             "de": ["Der Hund läuft schnell über die Straße und bellt laut.", "小明有三个苹果，他又买了五个。"],
             "fr": []}
    table = controls.hygiene(texts)
    assert table.index.name == "language" and list(table.index) == ["en", "de", "fr"]
    en, de, fr = table.loc["en"], table.loc["de"], table.loc["fr"]
    assert en["texts"] == 4 and en["detected as another language"] == 2 and en["no language detected"] == 1
    assert de["texts"] == 2 and de["detected as another language"] == 1 and de["no language detected"] == 0
    assert en["digits, % of characters"] == pytest.approx(100 * 6 / sum(map(len, texts["en"])))
    assert de["digits, % of characters"] == 0
    # words after the first of each text: 13 + 8 + 4 + 9 in English, of which "Hund" and "Straße" are capitalised
    assert en["capitalised words inside sentences, %"] == pytest.approx(100 * 2 / 34)
    assert de["capitalised words inside sentences, %"] == pytest.approx(100 * 2 / 9)
    assert fr["texts"] == 0 and fr["digits, % of characters"] == 0 and fr["detected as another language"] == 0


class _FakeSource:
    """A source of given questions per language, shaped like `lnlib.protocols.Source` (label, problems)."""

    def __init__(self, label: str, questions: dict):
        self.label, self.questions = label, questions

    def problems(self, lang: str):
        return [Problem(lang, i, q, 0.0, q) for i, q in enumerate(self.questions[lang])]


def test_foreign_texts_flags_positions_detected_as_another_language():
    english = "Janet has three ducks and she sells the eggs at the market every day."
    german = "Der Hund läuft schnell über die Straße und bellt laut."
    sources = [_FakeSource("a[0:4]", {"en": [english, "Собака бежит по улице и громко лает на прохожих.",
                                              "12 + 30 = 42", german],  # another script, no language, German
                                       "de": [german, english]}),
               _FakeSource("b[0:1]", {"en": [english], "de": ["小明有三个苹果，他又买了五个。"]})]
    assert controls.foreign_texts(sources, ["en", "de"]) == {"a[0:4]": {"en": [1, 3], "de": [1]},
                                                            "b[0:1]": {"en": [], "de": [0]}}
    assert controls.foreign_texts(sources, ["de"]) == {"a[0:4]": {"de": [1]}, "b[0:1]": {"de": [0]}}


# ----------------------------------------------------------------------------------------------
# Removing flagged texts


def test_without_flagged_removes_exactly_the_flagged_groups():
    study = _study(seed=1)
    first, second = (source.label for source in SOURCES)
    # texts 0, 3 and 5 of the first source are in groups 0, 1 and 2 (two texts a group); text 1 of the second in 0
    cleaned = controls.without_flagged(study, {first: {"en": [0, 3, 5]}, second: {"de": [1]}})
    a, b = study.by_source[first], study.by_source[second]
    expected = {"en": (a["en"].groups[3].long() + b["en"].over_zero, int(a["en"].group_tokens[3]) + b["en"].n_tokens),
                "de": (a["de"].over_zero + b["de"].groups[1].long(), a["de"].n_tokens + int(b["de"].group_tokens[1])),
                "fr": (a["fr"].over_zero + b["fr"].over_zero, a["fr"].n_tokens + b["fr"].n_tokens)}
    for lang, (over_zero, n_tokens) in expected.items():
        assert torch.equal(cleaned.counts[lang].over_zero, over_zero), lang
        assert cleaned.counts[lang].n_tokens == n_tokens, lang
    by_hand = torch.stack([(o.double() / t).float() for o, t in expected.values()], -1)
    assert torch.equal(cleaned.probs, by_hand)
    assert cleaned.langs == LANGS3 and cleaned.settings == study.settings and cleaned.provenance == study.provenance
    assert not torch.equal(cleaned.probs, study.probs)
    untouched = controls.without_flagged(study, {})
    assert torch.equal(untouched.probs, study.probs) and torch.equal(untouched.ident.selected, study.ident.selected)


def test_without_flagged_refuses_to_flag_every_text_of_a_language():
    study = _study(seed=1)
    first = SOURCES[0].label
    with pytest.raises(ValueError, match="every text of 'en' in .* is flagged"):
        controls.without_flagged(study, {first: {"en": list(range(8))}})


def test_stability_needs_texts_and_a_number_of_resamples():
    study = _study(seed=1)
    with pytest.raises(ValueError, match="n must be a whole number"):
        controls.stability(study, n=0)
    with pytest.raises(ValueError, match="released_resample"):
        controls.stability(pipeline.from_counts(study.by_source, study.settings), n=2)


def test_without_flagged_needs_a_group_size():
    study = _study(seed=1)
    bare = pipeline.from_counts(study.by_source, study.settings)
    with pytest.raises(ValueError, match="group size"):
        controls.without_flagged(bare, {SOURCES[0].label: {"en": [0]}})


# ----------------------------------------------------------------------------------------------
# Steering: directions


def _mean_states_by_hand(model, tok, texts, layer):
    """Per text, run alone (no padding): the mean over its tokens of hidden_states[layer + 1]."""
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok(text)["input_ids"]])
            rows.append(model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0].mean(0))
    return torch.stack(rows)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_diffmean_direction_is_the_difference_of_mean_residual_streams(family):
    model, tok = tiny_model(family), word_tokenizer()
    target = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9", "w10 w11 w12 w13"]  # different lengths: batches are padded
    source = ["w50 w51 w52", "w60 w61 w62 w63 w64 w65", "w70", "w71 w72"]
    for layer in (0, 1):
        got = controls.diffmean_direction(model, tok, target, source, layer)
        expected = _mean_states_by_hand(model, tok, target, layer).mean(0) - \
            _mean_states_by_hand(model, tok, source, layer).mean(0)
        assert got.shape == (32,) and got.norm() > 0
        assert torch.allclose(got, expected, atol=1e-5), layer
        norm = controls.residual_norm(model, tok, source, layer)
        assert norm == pytest.approx(float(_mean_states_by_hand(model, tok, source, layer).norm(dim=-1).mean()),
                                     rel=1e-5)
    assert torch.allclose(controls.diffmean_direction(model, tok, target, source, -1),
                          controls.diffmean_direction(model, tok, target, source, 1))
    with pytest.raises(ValueError, match="layer must be an integer in \\[0, 2\\)"):
        controls.diffmean_direction(model, tok, target, source, 2)


# ----------------------------------------------------------------------------------------------
# Steering: edits


@contextmanager
def _hand_hooks(modules, fn):
    """Forward hooks, registered here without lnlib, that replace each module's output by fn(layer, output)."""
    handles = [m.register_forward_hook(lambda mod, args, out, i=i: fn(i, out)) for i, m in enumerate(modules)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _neuron_hooks(model, mask, edit):
    """Hand-made neuron edit: edit(output, index) at each layer's MLP activation."""
    return _hand_hooks(models.mlp_activations(model), lambda i, out: edit(out, mask[i]) if len(mask[i]) else None)


def _ident_for(layers: int, width: int) -> identify.Identification:
    """An identification of probabilities [layers, width, 3] with a specific (layer 0) and a related (layer 1)
    neuron planted for every language of LANGS3."""
    g = torch.Generator().manual_seed(5)
    p = 0.05 + 0.3 * torch.rand(layers, width, 3, generator=g)
    for k in range(3):
        p[0, 2 * k] = 0.01
        p[0, 2 * k, k] = 0.95
        p[1, 2 * k + 1] = 0.95
        p[1, 2 * k + 1, k] = 0.01
    return identify.identify(p, 0.0, 0.1, 0.95, LANGS3)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[4, 10, 20, 30, 40, 50]])).logits


def test_neuron_edits_switch_off_the_source_and_amplify_each_target():
    model = tiny_model("llama")
    ident = _ident_for(2, 48)
    masks = dict(zip(LANGS3, ident.mask("language"), strict=True))
    assert all(sum(len(layer) for layer in masks[lang]) > 0 for lang in LANGS3)
    edits = controls.neuron_edits(model, ident, "en", ["de", "fr"], 4.0)
    assert list(edits) == ["source neurons off", "target neurons × 4"]
    assert all(list(by_target) == ["de", "fr"] for by_target in edits.values())
    base = _logits(model)
    with _neuron_hooks(model, masks["en"], lambda out, idx: out.index_fill(-1, idx, 0)):
        off = _logits(model)
    for target in ("de", "fr"):
        with edits["source neurons off"][target]():
            assert hooks.is_edited(model)
            assert torch.allclose(_logits(model), off, atol=1e-6)
        assert hooks.hook_count(model) == 0 and not hooks.is_edited(model)
    amplified = {}
    for target in ("de", "fr"):
        with _neuron_hooks(model, masks[target], lambda out, idx: out.index_copy(-1, idx, out[..., idx] * 4.0)):
            expected = _logits(model)
        with edits["target neurons × 4"][target]():
            amplified[target] = _logits(model)
        assert torch.allclose(amplified[target], expected, atol=1e-6), target
        assert hooks.hook_count(model) == 0
    assert not torch.allclose(off, base) and not torch.allclose(amplified["de"], base)
    assert not torch.allclose(amplified["de"], amplified["fr"])  # each target's own neurons, not the last one's
    assert torch.equal(_logits(model), base)


def test_direction_edits_add_the_unit_direction_after_the_block():
    model = tiny_model("llama")
    g = torch.Generator().manual_seed(0)
    directions = {"de": torch.randn(32, generator=g) * 7, "fr": torch.randn(32, generator=g) * 0.1}
    edits = controls.direction_edits(model, directions, -2, 3.0)
    assert list(edits) == ["DiffMean at layer 0"] and list(edits["DiffMean at layer 0"]) == ["de", "fr"]
    base = _logits(model)
    steered = {}
    for target, d in directions.items():
        with _hand_hooks(models.blocks(model)[:1], lambda i, out, d=d: out + 3.0 * d / d.norm()):
            expected = _logits(model)
        with edits["DiffMean at layer 0"][target]():
            steered[target] = _logits(model)
        assert torch.allclose(steered[target], expected, atol=1e-5), target
        assert hooks.hook_count(model) == 0 and not hooks.is_edited(model)
    assert not torch.allclose(steered["de"], base) and not torch.allclose(steered["de"], steered["fr"])
    assert torch.equal(_logits(model), base)


def test_edits_refuse_bad_input_and_leave_no_hook():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="layer must be an integer"):
        controls.direction_edits(model, {"de": torch.ones(32)}, 2, 1.0)
    wrong_size = controls.direction_edits(model, {"de": torch.ones(31)}, 0, 1.0)["DiffMean at layer 0"]["de"]
    with pytest.raises(ValueError, match="31 entries"), wrong_size():
        _logits(model)
    assert hooks.hook_count(model) == 0 and not hooks.is_edited(model)
    other_shape = _ident_for(3, 48)  # three layers, the llama has two
    edit = controls.neuron_edits(model, other_shape, "en", ["de"], 2.0)["target neurons × 2"]["de"]
    with pytest.raises(ValueError, match="3 layer entries but the model has 2 layers"), edit():
        _logits(model)
    assert hooks.hook_count(model) == 0 and not hooks.is_edited(model)


# ----------------------------------------------------------------------------------------------
# Steering: continuations


def _generating_model():
    model = tiny_model("llama")
    model.generation_config.eos_token_id = None
    model.generation_config.suppress_tokens = [0, 1, 2, 3, *range(104, 128)]  # random model: continue in words
    return model


def _perplexity_by_hand(model, tok, prompt: str, continuation: str) -> float:
    """exp of the mean NLL of the continuation's tokens given the prompt, from the model's logits."""
    p, c = tok(prompt)["input_ids"], tok(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    nll = -logp[torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(c)]
    return float(nll.mean().exp())


def test_steered_continuations_one_text_per_prompt_and_restore_the_model():
    model, tok = _generating_model(), word_tokenizer()
    prompts = ["w1 w2 w3", "w40 w41", "w7 w8 w9 w10 w11"]
    ident = _ident_for(2, 48)
    g = torch.Generator().manual_seed(1)
    alpha = 20 * controls.residual_norm(model, tok, prompts, 0)
    edits = {"none": {"de": None}, **controls.neuron_edits(model, ident, "en", ["de"], 4.0),
             **controls.direction_edits(model, {"de": torch.randn(32, generator=g)}, 0, alpha)}
    base = _logits(model)
    steering = controls.steered_continuations(model, tok, prompts, edits, max_new_tokens=3)
    assert hooks.hook_count(model) == 0 and not hooks.is_edited(model) and torch.equal(_logits(model), base)
    keys = [("none", "de"), ("source neurons off", "de"), ("target neurons × 4", "de"), ("DiffMean at layer 0", "de")]
    assert list(steering.texts) == keys and list(steering.detected) == keys and list(steering.perplexity) == keys
    for key in keys:
        assert len(steering.texts[key]) == len(prompts) and all(len(t.split()) == 3 for t in steering.texts[key])
        assert steering.detected[key] == langid.detect_languages(steering.texts[key])
        for prompt, text, ppl in zip(prompts, steering.texts[key], steering.perplexity[key], strict=True):
            assert ppl == pytest.approx(_perplexity_by_hand(model, tok, prompt, text), rel=1e-4), key
    assert steering.texts[("none", "de")] == generate_responses(model, tok, prompts, 3, progress=False)
    en_off = dict(zip(LANGS3, ident.mask("language"), strict=True))["en"]
    with _neuron_hooks(model, en_off, lambda out, idx: out.index_fill(-1, idx, 0)):
        by_hand = generate_responses(model, tok, prompts, 3, progress=False)
    assert steering.texts[("source neurons off", "de")] == by_hand
    assert steering.texts[("DiffMean at layer 0", "de")] != steering.texts[("none", "de")]  # the edit was applied
    assert steering.perplexity[("DiffMean at layer 0", "de")] != steering.perplexity[("none", "de")]


def test_steering_table_counts_hits_over_targets_and_pools_perplexities():
    texts = {("none", "de"): ["a", "b"], ("none", "fr"): ["c", "d"],
             ("off", "de"): ["e", "f"], ("off", "fr"): ["g", "h"]}
    detected = {("none", "de"): ["en", "en"], ("none", "fr"): ["en", None],
                ("off", "de"): ["de", "en"], ("off", "fr"): ["fr", "fr"]}
    perplexity = {("none", "de"): [1.0, 2.0], ("none", "fr"): [3.0, 4.0],
                  ("off", "de"): [10.0, 50.0], ("off", "fr"): [20.0, 30.0]}
    table = controls.Steering(texts, detected, perplexity).table()
    assert list(table.index) == ["none", "off"] and table.index.name == "method"
    assert table.loc["none", "in the target language"] == stats.proportion(0, 4)
    assert table.loc["off", "in the target language"] == stats.proportion(3, 4)
    assert table.loc["off", "in the target language"].value == 0.75
    assert table.loc["none", "median perplexity (unmodified model)"] == 2.5
    assert table.loc["off", "median perplexity (unmodified model)"] == 25.0
