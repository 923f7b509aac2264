"""lnlib.pipeline: one identification pipeline, per-source cached counts, derived studies, and the paper's
protocol (generated answers, force-decoded) on two tiny checkpoints."""

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import compare, data, models, pipeline, protocols
from lnlib.counts import ActivationCounts
from lnlib.data import Problem

pytestmark = pytest.mark.filterwarnings("ignore::lnlib.identify.IntervalWarning")  # random tiny models


@pytest.fixture
def word_data(monkeypatch, tmp_path):
    """A registered dataset of word-tokenizer "problems" in the paper's ten languages, and an empty cache."""
    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path / "cache"))

    def load(lang):
        k = data.LANGS.index(lang)
        return [Problem(lang, i, " ".join(f"w{10 * k + (i + j) % 10}" for j in range(6)), 1.0, "w1")
                for i in range(12)]

    monkeypatch.setitem(data.DATASETS, "words", data.Dataset("words", data.LANGS, 12, load, "none"))
    monkeypatch.setattr(protocols, "INSTRUCTION", "w99 w98")
    return pipeline.Texts(sources=(protocols.Source("words", range(0, 8)), protocols.Source("words", range(8, 12))),
                          group_size=2, batch_size=4)


def test_a_study_sums_its_sources_and_derives_others(word_data, monkeypatch):
    model, tok = tiny_model("llama"), word_tokenizer()
    monkeypatch.setattr(protocols, "book_pairs", lambda lang, source, instruction=None: protocols.prompt_pairs(
        [p.question for p in source.problems(lang)], "w99 w98"))
    study = pipeline.language_neurons(model, tok, word_data, pipeline.Settings(rate=0.05), progress=False)
    assert list(study.by_source) == ["words[0:8]", "words[8:12]"]
    assert study.counts["de"].n_tokens == 12 * 6 and study.probs.shape == (2, 48, 10)
    assert study.ident.interval is not None and study.settings.rate == 0.05
    assert study.provenance["protocol"] == "questions" and study.provenance["layers"] == 2
    one = study.source("words[0:8]")
    assert one.counts["de"].n_tokens == 8 * 6
    fixed = study.with_settings(lam=study.lam)
    assert torch.equal(fixed.ident.selected, study.ident.selected) and fixed.interval is None
    resampled = study.resampled_probs(torch.Generator().manual_seed(0))
    assert resampled.shape == study.probs.shape and not torch.equal(resampled, study.probs)

    def must_not_count(*args, **kwargs):
        raise AssertionError("the second study must read the cache")

    monkeypatch.setattr(pipeline.cache, "count_activations", must_not_count)
    again = pipeline.language_neurons(model, tok, word_data, pipeline.Settings(rate=0.05), progress=False)
    assert torch.equal(again.probs, study.probs)


def test_the_paper_protocol_on_two_tiny_checkpoints(word_data, tmp_path):
    """Load a base and an "aligned" model from folders, generate each model's answers after the MathOctopus
    prompt (cached), force-decode them, identify both, hold λ fixed, compare."""
    tok = word_tokenizer()
    folders = {}
    for name, shift in (("base", 0.0), ("aligned", 0.5)):
        model = tiny_model("mistral", seed=1)
        with torch.no_grad():
            models.mlps(model)[1].gate_proj.weight.add_(shift)
        folders[name] = tmp_path / name
        model.save_pretrained(folders[name])
        tok.save_pretrained(folders[name])
    texts = word_data.replace(protocol="answers", max_new_tokens=4)
    found = {}
    for name, folder in folders.items():
        model, tokenizer = models.load_model(folder, device="cpu")
        model.generation_config.eos_token_id = None
        model.generation_config.suppress_tokens = [0, 1, 2, 3, *range(104, 128)]  # random model: answer in words
        found[name] = pipeline.language_neurons(model, tokenizer, texts, pipeline.Settings(rate=0.05), progress=False)
    base, aligned = found["base"], found["aligned"]
    assert (tmp_path / "cache" / "answers").is_dir()
    pairs = pipeline.examples(model, tokenizer, texts.sources[0], texts)["de"]
    assert pairs[0][0] == protocols.mathoctopus_prompt(texts.sources[0].problems("de")[0])
    assert not torch.equal(base.probs, aligned.probs)  # layer 1's gates moved
    assert compare.layer_change(base.ident, aligned.ident).shape == (2, 3)
    fixed = pipeline.from_counts(aligned.by_source, base.fixed(), texts)
    assert fixed.lam == base.lam
    assert list(compare.overlap_table(base.ident, fixed.ident).index) == ["specific", "related", "general"]


def test_released_statistics_recover_the_paper_lambda(data_dir):
    study = pipeline.from_released()
    assert study.lam == data.RELEASED_LAMBDA and study.interval == (0.0, 0.2)
    assert study.provenance["revision"] == data.RELEASED_REVISION


def test_first_texts_equal_counting_only_those_texts(word_data):
    model, tok = tiny_model("llama"), word_tokenizer()
    study = pipeline.language_neurons(model, tok, word_data, pipeline.Settings(rate=0.05), progress=False)
    first = study.first_texts(4)
    alone = pipeline.language_neurons(model, tok, word_data.replace(
        sources=(protocols.Source("words", range(0, 4)), protocols.Source("words", range(8, 12)))),
        pipeline.Settings(rate=0.05), progress=False)
    assert list(first.by_source) == list(alone.by_source)
    for label in first.by_source:
        for lang in data.LANGS:
            a, b = first.by_source[label][lang], alone.by_source[label][lang]
            assert torch.equal(a.over_zero, b.over_zero) and a.n_tokens == b.n_tokens and a.n_groups == b.n_groups
    assert pipeline.paired_bootstrap(first, alone, lambda x, y: float(x.n_general - y.n_general), n=3).value == 0


def test_held_out_texts_must_not_be_counted(word_data):
    assert data.questions("words", range(3, 5), langs=("en", "de")) == {
        "en": ["w3 w4 w5 w6 w7 w8", "w4 w5 w6 w7 w8 w9"], "de": ["w43 w44 w45 w46 w47 w48", "w44 w45 w46 w47 w48 w49"]}
    pipeline.check_held_out(None, None, word_data, {"en": ["w1 w2 w99"], "de": ["w40"]})  # never counted
    with pytest.raises(ValueError, match="1 evaluation text"):
        pipeline.check_held_out(None, None, word_data, {"en": ["w1 w2 w99"], "de": data.questions("words", range(9, 10),
                                                                                                  langs=("de",))["de"]})


def test_per_language_summaries_of_a_study():
    # one layer, four neurons, three languages; probabilities en (1, 0, 0, .5), de (0, 1, 0, 1), zh (0, 0, .5, .5)
    made = {"en": ActivationCounts(torch.tensor([[4, 0, 0, 2]]), 4, 2),
            "de": ActivationCounts(torch.tensor([[0, 2, 0, 2]]), 2, 1),
            "zh": ActivationCounts(torch.tensor([[0, 0, 4, 4]]), 8, 3)}
    study = pipeline.from_counts({"data": made}, pipeline.Settings(rate=0.5, bar=0.6, lam=0.0))
    assert study.ident.tau == 0.5  # rank round(0.6 * 12) = 7 of the sorted probabilities: six 0s, then 0.5
    table = study.per_language()
    assert list(table.index) == ["en", "de", "zh"]
    assert table["examples"].tolist() == [2, 1, 3] and table["counted tokens"].tolist() == [4, 2, 8]
    assert table["mean p"].tolist() == pytest.approx([0.375, 0.5, 0.25])
    assert table["% of neurons with p > τ"].tolist() == [25.0, 50.0, 0.0]  # strictly above 0.5
    assert study.tokens.tolist() == [4, 2, 8]
    released_like = pipeline.NeuronStudy({}, study.probs, study.ident, study.settings, None,
                                         {"tokens": {"zh": 9, "en": 5, "de": 7}})
    assert released_like.tokens.tolist() == [5, 7, 9]  # in the study's language order
    with pytest.raises(ValueError, match="holds no counts"):
        released_like.per_language()


def _grouped_study(seed: int) -> pipeline.NeuronStudy:
    """Random counts of 4 groups of texts per language (2 layers x 48 neurons), identified with a 5 % rate."""
    generator = torch.Generator().manual_seed(seed)
    by_lang = {}
    for lang in data.LANGS:
        groups = torch.randint(0, 20, (4, 2, 48), generator=generator, dtype=torch.int32)
        tokens = torch.full((4,), 20, dtype=torch.int64)
        by_lang[lang] = ActivationCounts(groups.sum(0, dtype=torch.int64), 80, 8, 0, groups, tokens)
    return pipeline.from_counts({"data": by_lang}, pipeline.Settings(rate=0.05))


def test_a_controlled_bootstrap_sets_the_effect_against_the_control():
    base, other = _grouped_study(0), _grouped_study(1)
    same = pipeline.controlled_bootstrap(base, other, base, compare.totals_change, n=4)  # the base as its own control
    assert all(e.value == e.lo == e.hi == 0 for e in same.control.values())  # a control that changes nothing
    effect = pipeline.paired_bootstrap(base, other, compare.totals_change, n=4)
    assert same.effect == effect and same.beyond == effect  # effect minus a zero control: the effect
    control = _grouped_study(2)
    read = pipeline.controlled_bootstrap(base, other, control, compare.totals_change, n=4, seed=3)
    assert read.beyond == pipeline.paired_bootstrap(control, other, compare.totals_change, n=4, seed=3,
                                                    settings=base.fixed())
    assert read.control == pipeline.paired_bootstrap(base, control, compare.totals_change, n=4, seed=3)
    alone = pipeline.controlled_bootstrap(base, other, None, compare.totals_change, n=4)
    assert alone.effect == effect and alone.control is None and alone.beyond is None
