import math

import pandas as pd
import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import align
from lnlib.data import Problem
from lnlib.identify import Identification

PAIRS = [("w1 w2 w3", " w10 w11 w12"), ("w4 w5", " w13 w14"), ("w6 w7 w8 w9", " w15"), ("w2 w9", " w16 w17")]


def test_dpo_loss_hand_computed():
    # logits = beta * ((-1 - -2) - (-3 - -1)) = 0.5 * (1 + 2) = 1.5 ; second pair: 0.5 * (0 - 0) = 0
    loss = align.dpo_loss(torch.tensor([-1.0, -5.0]), torch.tensor([-3.0, -4.0]),
                          torch.tensor([-2.0, -5.0]), torch.tensor([-1.0, -4.0]), beta=0.5)
    expected = (math.log1p(math.exp(-1.5)) + math.log(2)) / 2
    assert loss.item() == pytest.approx(expected)


def test_alignment_score():
    assert align.alignment_score("how many eggs", "how  many eggs") == pytest.approx(1.0)
    assert align.alignment_score("xyz", "abc") == 0.0
    assert 0 < align.alignment_score("how many eggs", "how many apples") < 1
    better = align.alignment_score("she sells eggs", "she sells the eggs")
    assert better > align.alignment_score("he buys milk", "she sells the eggs")


def test_preference_pairs_rank_by_score_and_skip_close_or_equal():
    pairs = align.preference_pairs("p", ["she sells eggs", "he buys milk", "she sells eggs ", "she sells the eggs"],
                                   "she sells the eggs", min_margin=0.05)
    assert pairs[0].chosen == "she sells the eggs" and pairs[0].rejected == "he buys milk"
    assert all(p.margin >= 0.05 and p.chosen.strip() != p.rejected.strip() for p in pairs)
    assert [p.margin for p in pairs] == sorted((p.margin for p in pairs), reverse=True)


def test_question_pairs_map_to_english_and_refuse_english():
    problem = Problem("de", 0, "Wie viele?", 3.0, "How many?")
    assert align.question_pairs([problem]) == [("German: Wie viele?\nEnglish:", " How many?")]
    with pytest.raises(ValueError, match="non-English problems only"):
        align.question_pairs([Problem("en", 0, "How many?", 3.0, "How many?")])


def _train(steps=6, method="question", examples=PAIRS, **kwargs):
    model, tok = tiny_model("llama"), word_tokenizer()
    config = align.AlignConfig(method=method, steps=steps, batch_size=2, lr=1e-2, **kwargs)
    return model, tok, align.align(model, tok, examples, config, progress=False, **{
        k: v for k, v in kwargs.items() if k == "checkpoint_dir"})


def test_question_alignment_learns_and_moves_only_the_mlps():
    base = tiny_model("llama").state_dict()
    model, _, run = _train(steps=12)
    assert len(run.losses) == 12 and run.losses[-1] < run.losses[0] and run.tokens > 0
    moved = {name for name, value in model.state_dict().items() if not torch.equal(value, base[name])}
    assert moved and all(".mlp." in name for name in moved)
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_alignment_is_deterministic():
    first, _, _ = _train(steps=5)
    second, _, _ = _train(steps=5)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(),
                                                  strict=True))


def test_checkpoints_reload_and_saving_refuses_to_overwrite(tmp_path):
    model, tok = tiny_model("llama"), word_tokenizer()
    config = align.AlignConfig(steps=4, batch_size=2, lr=1e-2, checkpoint_every=2)
    run = align.align(model, tok, PAIRS, config, checkpoint_dir=tmp_path, record={"base_model": "tiny"},
                      progress=False)
    assert [p.name for p in run.checkpoints] == ["step-2.safetensors"]
    assert align.read_aligned_record(run.checkpoints[0])["step"] == 2
    final = align.save_aligned(model, tmp_path / "final.safetensors", {"base_model": "tiny"})
    with pytest.raises(FileExistsError):
        align.save_aligned(model, final, {})
    fresh = align.apply_aligned(tiny_model("llama"), final)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, model(ids).logits)
    mid = align.apply_aligned(tiny_model("llama"), run.checkpoints[0])
    with torch.no_grad():
        assert not torch.equal(mid(ids).logits, model(ids).logits)
    with pytest.raises(FileExistsError):  # a second run into the same folder keeps the first's files ...
        align.align(tiny_model("llama"), tok, PAIRS, config, checkpoint_dir=tmp_path, progress=False)
    again = align.align(tiny_model("llama"), tok, PAIRS, config, checkpoint_dir=tmp_path, progress=False,
                        overwrite=True)  # ... unless told to replace them
    assert again.checkpoints == run.checkpoints


def test_apply_refuses_another_architecture(tmp_path):
    path = align.save_aligned(tiny_model("llama"), tmp_path / "a.safetensors", {})
    with pytest.raises(ValueError, match="another architecture"):
        align.apply_aligned(tiny_model("gpt2"), path)


def test_dpo_starts_at_log2_and_prefers_chosen():
    pairs = [align.PreferencePair("w1 w2", " w10 w11", " w40 w41", 0.5),
             align.PreferencePair("w3 w4", " w12", " w42", 0.5)]
    model, tok, run = _train(steps=8, method="dpo", examples=pairs, beta=1.0)
    assert run.losses[0] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 1
    assert run.losses[-1] < run.losses[0]


def test_method_and_examples_must_match():
    with pytest.raises(ValueError, match="trains on PreferencePair"):
        _train(method="dpo")
    with pytest.raises(ValueError, match="'question' or 'dpo'"):
        _train(method="sft")


def _ident(selected, high, n_above, langs=("en", "de", "zh")):
    return Identification(tuple(langs), "entropy-lambda", 0.1, 0.01, 0.95, 0.5, torch.tensor(selected),
                          torch.tensor(high), torch.tensor(n_above))


# 2 layers x 3 neurons, 3 languages. Base: neuron 0 de-specific; neuron 4 related (de, zh); neuron 5 general.
BASE = _ident([0, 4], [[False, True, False], [False, True, True]], [[1, 0, 0], [0, 2, 3]])
# Aligned: neuron 0 now related (en, de); neuron 1 zh-specific; neuron 2 general too.
ALIGNED = _ident([0, 1], [[True, True, False], [False, False, True]], [[2, 1, 3], [0, 0, 3]])


def test_layer_change():
    change = align.layer_change(BASE, ALIGNED)
    assert change.loc[0].tolist() == [0, 1, 1]  # layer 0: specific 1 -> 1, related 0 -> 1, general 0 -> 1
    assert change.loc[1].tolist() == [0, -1, 0]


def test_n_change_over_all_neurons_and_selected():
    table = align.n_change(BASE, ALIGNED)
    assert table["before"].tolist() == [1, 1, 1] and table["after"].tolist() == [1, 1, 2]
    assert table["change"].tolist() == [0, 0, 1]
    assert align.n_change(BASE, ALIGNED, over="selected")["change"].tolist() == [0, 0, 0]


def test_overlap_and_language_changes():
    overlap = align.overlap_table(BASE, ALIGNED)
    assert overlap["specific"] == 0.0 and overlap["general"] == 100.0
    per_lang, means = align.lang_change(BASE, ALIGNED, trained=["de"])
    assert per_lang.loc["de"].tolist() == [-1, 0, True] and per_lang.loc["zh"].tolist() == [1, -1, False]
    assert isinstance(means, pd.DataFrame) and means.loc["untrained", "specific"] == 1.0  # zh only
    assert align.lang_change(BASE, ALIGNED, ["de"], include_english=True)[1].loc["untrained", "related"] == 0.0
    with pytest.raises(ValueError, match="not in the identification"):
        align.lang_change(BASE, ALIGNED, trained=["sw"])


def test_retrieval_accuracy():
    from lnlib.evaluate import retrieval_accuracy

    x = torch.eye(3)
    assert retrieval_accuracy(x, x) == 1.0
    assert retrieval_accuracy(x, x[[1, 0, 2]]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="parallel"):
        retrieval_accuracy(x, x[:2])


def test_alignment_metrics_on_a_tiny_model(monkeypatch):
    from lnlib import data

    monkeypatch.setitem(data.LANG_NAMES, "xx", "w99")  # the word tokenizer only knows w0..w99
    problems = [Problem("xx", i, f"w{i} w{i + 1}", 1.0, f"w{i + 50} w{i + 51}") for i in range(4)]
    model, tok = tiny_model("qwen3"), word_tokenizer()
    table = align.alignment_metrics(model, tok, {"xx": problems}, layer=0)
    assert list(table.index) == ["xx"] and set(table.columns) == {"nll", "retrieval"}
    assert table.loc["xx", "nll"] > 0 and 0 <= table.loc["xx", "retrieval"] <= 1
    same = [Problem("xx", i, f"w{i} w{i + 7}", 1.0, f"w{i} w{i + 7}") for i in range(4)]
    assert align.alignment_metrics(model, tok, {"xx": same}, layer=1).loc["xx", "retrieval"] == 1.0


def test_gpu_profile_path_end_to_end(tmp_path, monkeypatch):
    """The GPU profile's path on two tiny checkpoints: load a base and a published aligned model from folders,
    generate each model's answers after the MathOctopus prompt, force-decode them, identify, compare."""
    from lnlib import capture, data, models

    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path / "cache"))
    tok = word_tokenizer()
    folders = {}
    for name, shift in (("base", 0.0), ("aligned", 0.5)):
        model = tiny_model("mistral", seed=1)
        with torch.no_grad():
            models.mlps(model)[1].gate_proj.weight.add_(shift)
        folders[name] = tmp_path / name
        model.save_pretrained(folders[name])
        tok.save_pretrained(folders[name])
    problems = {lang: [Problem(lang, i, " ".join(f"w{10 * k + (i + j) % 10}" for j in range(6)), 1.0, "w1")
                       for i in range(6)] for k, lang in enumerate(data.LANGS)}
    found = {}
    for name, folder in folders.items():
        model, tokenizer = models.load_model(folder, device="cpu")
        examples = {lang: capture.answer_pairs(model, tokenizer, ps, max_new_tokens=4, progress=False)
                    for lang, ps in problems.items()}
        assert all(prompt == capture.mathoctopus_prompt(p)
                   for p, (prompt, _) in zip(problems["de"], examples["de"], strict=True))
        found[name] = capture.language_neurons(model, tokenizer, examples, rate=0.05, progress=False)
    (probs_base, lam_base, base), (probs_aligned, lam_aligned, aligned) = found["base"], found["aligned"]
    assert base.shape == aligned.shape == (2, 48) and lam_base >= 0 and lam_aligned >= 0
    assert not torch.equal(probs_base, probs_aligned)  # layer 1's gates moved
    assert align.layer_change(base, aligned).shape == (2, 3)
    # the same λ on the aligned model's (cached) counts: λ held fixed, as the alignment chapter also shows
    _, lam_fixed, fixed = capture.language_neurons(model, tokenizer, examples, rate=0.05, lam=lam_base)
    assert lam_fixed == fixed.lam == lam_base
    assert list(align.overlap_table(base, aligned).index) == ["specific", "related", "general"]
