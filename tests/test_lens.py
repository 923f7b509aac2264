import pytest
import torch
from tiny_models import tiny_model
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from lnlib import lens, models
from lnlib.evaluate import logit_head

WORDS = ["the", "and", "der", "und", "le", "et", "1", "2", ".", "rare", "shared", "привет", "日本"]


def _tokenizer():
    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"] + WORDS + [f"w{i}" for i in range(60)])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")
    fast._tokenizer.post_processor = None
    return fast


def _with_bos(tokenizer):
    """The word tokenizer, prepending <bos> like Gemma's."""
    from tokenizers.processors import TemplateProcessing

    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return tokenizer


def _id(tok, word):
    return tok.convert_tokens_to_ids(word)


# ----------------------------------------------------------------------------------------------
# Lexicon


def test_lexicon_attributes_by_normalised_rate():
    tok = _tokenizer()
    corpora = {
        # en: 100 tokens; "the" x 30, "and" x 30, "shared" x 20, "1" x 10, "rare" x 1, filler
        "en": ["the " * 30 + "and " * 30 + "shared " * 20 + "1 " * 10 + "rare " + "w1 " * 9],
        # de: 1000 tokens; "der" x 300, "und" x 300, "shared" x 200 (same rate as en), "1" x 100, "the" x 3
        "de": ["der " * 300 + "und " * 300 + "shared " * 200 + "1 " * 100 + "the " * 3 + "w2 " * 97],
        # fr: 100 tokens, with "the" x 3 (rate 0.03 against en's 0.3) and "le" x 2 (below min_count)
        "fr": ["et " * 50 + "1 " * 10 + "the " * 3 + "le " * 2 + "w3 " * 35],
    }
    lex = lens.build_lexicon(tok, corpora, min_share=0.8, min_count=3)
    assert lex.langs == ("en", "de", "fr")
    assert lex.counts[_id(tok, "the")].tolist() == [30, 3, 3]
    assert lex.lang_of(_id(tok, "the")) == "en"  # rates 0.3 / 0.003 / 0.03: share 0.9
    assert lex.lang_of(_id(tok, "der")) == "de" and lex.lang_of(_id(tok, "und")) == "de"
    assert lex.lang_of(_id(tok, "et")) == "fr"
    # equal rates in en and de although de has 10x the count: shared, unattributed
    assert lex.lang_of(_id(tok, "shared")) is None
    assert lex.lang_of(_id(tok, "1")) is None  # digits occur everywhere
    assert lex.lang_of(_id(tok, "rare")) is None  # once only: below min_count
    assert lex.lang_of(_id(tok, "le")) is None
    assert lex.lang_of(_id(tok, "w50")) is None  # never seen
    sizes = lex.sizes()
    assert sizes["en"] == 3 and sizes["de"] == 3 and sizes["fr"] == 2  # incl. w1 x 9, w2 x 97, w3 x 35
    # a looser share lets "the" count for en even with raw counts balanced
    assert lens.build_lexicon(tok, corpora, min_count=1).lang_of(_id(tok, "rare")) == "en"


def test_lexicon_rejects_bad_arguments():
    tok = _tokenizer()
    with pytest.raises(ValueError, match="min_share"):
        lens.build_lexicon(tok, {"en": ["the"], "de": ["der"]}, min_share=0.5)
    with pytest.raises(ValueError, match="at least 2 languages"):
        lens.build_lexicon(tok, {"en": ["the"]})
    with pytest.raises(ValueError, match="no texts for language 'de'"):
        lens.build_lexicon(tok, {"en": ["the"], "de": []})


def test_script_language():
    assert lens.script_lang("▁привет") == "ru"
    assert lens.script_lang("カタカナ") == "ja" and lens.script_lang("ひらがな") == "ja"
    assert lens.script_lang("ภาษาไทย") == "th" and lens.script_lang("বাংলা") == "bn"
    assert lens.script_lang("hello") is None and lens.script_lang("日本") is None  # Latin, Han: ambiguous
    assert lens.script_lang("12.") is None and lens.script_lang("прив hello") is None


def test_script_fallback_attributes_unseen_tokens():
    tok = _tokenizer()
    corpora = {"en": ["the the the"], "ru": ["w1 w1 w1"], "ja": ["w2 w2 w2"]}
    plain = lens.build_lexicon(tok, corpora)
    assert plain.lang_of(_id(tok, "привет")) is None
    fallback = lens.build_lexicon(tok, corpora, script_fallback=True)
    assert fallback.lang_of(_id(tok, "привет")) == "ru"
    assert fallback.lang_of(_id(tok, "日本")) is None
    assert fallback.lang_of(_id(tok, "the")) == "en"


# ----------------------------------------------------------------------------------------------
# Logit lens on tiny models


TEXTS = ["the and der 1 .", "w5 w6", "le et w9 w10 w11 w12 2"]


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3_text", "gpt2"])
def test_last_layer_lens_equals_model_logits(family):
    model, tok = tiny_model(family), _tokenizer()
    result = lens.logit_lens(model, tok, TEXTS, top_k=4, position="last", batch_size=2)
    assert result.top_ids.shape == (2, 3, 4) and result.top_probs.shape == (2, 3, 4)
    assert result.text_index.tolist() == [0, 1, 2]
    for i, text in enumerate(TEXTS):
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1].float()
        values, index = torch.softmax(logits, -1).topk(4)
        assert torch.equal(result.top_ids[-1, i], index)
        assert torch.allclose(result.top_probs[-1, i], values, atol=1e-5)
        assert result.position[i] == ids.shape[1] - 1 and result.target[i] == -1


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_every_layer_is_normed_once(family):
    """Layer i < last decodes head(final_norm(block i's output)) = head(norm(hidden_states[i + 1])); the last
    layer decodes hidden_states[-1], on which Hugging Face already applied the norm, with no second norm."""
    model, tok = tiny_model(family), _tokenizer()
    norm = models.final_norm(model)
    with torch.no_grad():  # a freshly built norm is nearly idempotent; give it weights that are not
        norm.weight.copy_(torch.randn(norm.weight.shape, generator=torch.Generator().manual_seed(1)) * 3)
    text = TEXTS[2]
    ids = tok(text, return_tensors="pt").input_ids
    result = lens.logit_lens(model, tok, [text], top_k=3, position="all")
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        head = logit_head(model)
        expected = [torch.softmax(head(norm(hidden[1][0])), -1), torch.softmax(head(hidden[2][0]), -1)]
        twice = torch.softmax(head(norm(hidden[2][0])), -1)
    for layer in range(2):
        values, index = expected[layer].topk(3)
        assert torch.allclose(result.top_probs[layer], values, atol=1e-5)
        assert torch.equal(result.top_ids[layer], index)
    assert not torch.allclose(result.top_probs[1], twice.topk(3).values, atol=1e-3)


def test_positions_all_skip_special_tokens_and_padding():
    model, tok = tiny_model("gemma3_text"), _with_bos(_tokenizer())
    result = lens.logit_lens(model, tok, TEXTS, top_k=2, position="all", batch_size=3)
    lengths = [len(t.split()) for t in TEXTS]
    assert result.top_ids.shape == (2, sum(lengths), 2)
    assert result.text_index.tolist() == [i for i, n in enumerate(lengths) for _ in range(n)]
    assert result.position.tolist() == [p for n in lengths for p in range(1, n + 1)]  # position 0 is <bos>
    assert _id(tok, "<bos>") not in result.token.tolist()
    first = tok(TEXTS[0]).input_ids
    assert result.token[:5].tolist() == first[1:] and result.target[:5].tolist() == first[2:] + [-1]
    # batching with padding changes nothing: each text alone gives the same rows
    for i, text in enumerate(TEXTS):
        alone = lens.logit_lens(model, tok, [text], top_k=2, position="all")
        rows = result.text_index == i
        assert torch.equal(alone.top_ids, result.top_ids[:, rows])
        assert torch.allclose(alone.top_probs, result.top_probs[:, rows], atol=1e-5)


def test_lens_on_a_multimodal_gemma3():
    model, tok = tiny_model("gemma3"), _tokenizer()
    result = lens.logit_lens(model, tok, TEXTS[:1], top_k=3)
    ids = tok(TEXTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    assert torch.equal(result.top_ids[-1, 0], logits.topk(3).indices)


def test_language_mass_and_shares():
    model, tok = tiny_model("llama"), _tokenizer()
    lex = lens.build_lexicon(tok, {"en": ["the and w1 w1 w1 the the and and"],
                                   "de": ["der und w2 w2 w2 der der und und"]}, min_count=3)
    result = lens.logit_lens(model, tok, ["the and", "der und"], top_k=3, position="all", lexicon=lex)
    assert result.lang_mass.shape == (2, 4, 3) and result.langs == ("en", "de")
    assert torch.allclose(result.lang_mass.sum(-1), torch.ones(2, 4), atol=1e-5)
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=tok("the and", return_tensors="pt").input_ids).logits[0, 0], -1)
    en_ids = (lex.token_lang == 0).nonzero().squeeze(1)
    assert result.lang_mass[-1, 0, 0].item() == pytest.approx(probs[en_ids].sum().item(), abs=1e-5)
    for by in ("top1", "topk", "mass"):
        shares = lens.language_shares(result, lex, ["en", "de"], by=by)
        assert list(shares.columns) == ["input language", "en", "other languages", "unattributed"]
        assert shares.shape == (2, 4)
        assert torch.allclose(torch.tensor(shares.sum(axis=1).to_numpy()), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="not in the lexicon"):
        lens.language_shares(result, lex, ["en", "fr"])
    with pytest.raises(ValueError, match="by must be"):
        lens.language_shares(result, lex, ["en", "de"], by="vote")


def test_language_shares_on_a_hand_made_result():
    """Two texts (en, de), one row each, two layers, top-2 tokens with known languages."""
    lex = lens.Lexicon(("en", "de", "fr"), torch.tensor([0, 1, 2, -1, 0]), torch.zeros(5, 3, dtype=torch.int64), {})
    top_ids = torch.tensor([[[0, 3], [0, 2]],   # layer 0: en row -> en, unattr; de row -> en, fr
                            [[0, 4], [1, 1]]])  # layer 1: en row -> en, en; de row -> de, de
    result = lens.LensResult(("a", "b"), torch.tensor([0, 1]), torch.tensor([1, 1]), torch.tensor([5, 5]),
                             torch.tensor([-1, -1]), top_ids, torch.full((2, 2, 2), 0.5))
    top1 = lens.language_shares(result, lex, ["en", "de"], by="top1")
    assert top1.loc[0].tolist() == [0.5, 0.5, 0.0, 0.0]  # en row: own language; de row: English
    assert top1.loc[1].tolist() == [1.0, 0.0, 0.0, 0.0]
    topk = lens.language_shares(result, lex, ["en", "de"], by="topk")
    assert topk.loc[0].tolist() == [0.25, 0.25, 0.25, 0.25]
    only_de = lens.language_shares(result, lex, ["en", "de"], by="top1", texts=[1])
    assert only_de.loc[0].tolist() == [0.0, 1.0, 0.0, 0.0] and only_de.loc[1].tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="has a decoded row"):
        lens.language_shares(result, lex, ["en", "de"], texts=[5])
    with pytest.raises(ValueError, match="needs a LensResult computed with a lexicon"):
        lens.language_shares(result, lex, ["en", "de"], by="mass")


def test_logit_lens_rejects_bad_arguments():
    model, tok = tiny_model("llama"), _tokenizer()
    with pytest.raises(ValueError, match="position must be"):
        lens.logit_lens(model, tok, TEXTS, position="first")
    with pytest.raises(ValueError, match="texts is empty"):
        lens.logit_lens(model, tok, [])


def test_share_bands_average_and_bootstrap_each_group():
    # texts in de, en, fr; two layers; shares in CATEGORIES order (input language, pivot, other, unattributed)
    shares = torch.tensor([[[0, 1, 0, 0], [1, 0, 0, 0]],              # de: English at layer 0, German at 1
                           [[1, 0, 0, 0], [1, 0, 0, 0]],              # en
                           [[0, 0.5, 0, 0.5], [0.5, 0.25, 0, 0.25]]],  # fr
                          dtype=torch.float64)
    bands = lens.share_bands(shares, ["de", "en", "fr"], n=50)
    assert bands.groups == {"non-English": [0, 2], "English": [1]} and bands.layers == 2
    assert len(bands) == 2 * 4 * 2 and bands[("English", "input language", 0)].value == 1.0
    assert bands.at("pivot", 0).value == 0.75 and bands.at("input language", 1).value == 0.75
    assert bands.curve("pivot") == [0.75, 0.125] and bands.curve("input language", "English") == [1.0, 1.0]
    assert bands.pivot_peak() == 0 and bands.return_layer() == 1
    lone = bands.at("input language", 0, "English")  # one text: every resample is that text
    assert (lone.lo, lone.hi) == (1.0, 1.0)
    spread = bands.at("pivot", 0)  # resamples of {1, 0.5}: means 1, 0.75 or 0.5
    assert 0.5 <= spread.lo < spread.hi <= 1.0
    assert lens.share_bands(shares, ["de", "en", "fr"], n=50).estimates == bands.estimates  # seeded
    stays = lens.share_bands(shares[[0]].flip(1), ["de"], n=5)  # German first, then English: it never returns
    assert list(stays.groups) == ["non-English"] and stays.pivot_peak() == 1 and stays.return_layer() is None
    with pytest.raises(ValueError, match="shares must be"):
        lens.share_bands(shares, ["de", "en"])
    with pytest.raises(ValueError, match="no group"):
        bands.at("pivot", 0, "French")
