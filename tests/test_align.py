import math

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import align, hooks, models

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
    assert [(step, p.name) for step, p in run.checkpoints] == [(2, "step-2.safetensors")]
    assert align.read_aligned_record(run.checkpoints[0][1])["config"]["step"] == 2
    final = align.save_aligned(model, tmp_path / "final.safetensors", {"base_model": "tiny"})
    with pytest.raises(FileExistsError):
        align.save_aligned(model, final, {})
    fresh = align.apply_aligned(tiny_model("llama"), final)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, model(ids).logits)
    mid = align.apply_aligned(tiny_model("llama"), run.checkpoints[0][1])
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


def test_apply_checks_every_tensor_before_changing_any(tmp_path):
    model = tiny_model("llama")
    with torch.no_grad():
        models.mlps(model)[0].up_proj.weight.add_(1.0)
    path = align.save_aligned(model, tmp_path / "a.safetensors", {})
    other = tiny_model("llama")  # same names; make one shape differ
    other.model.layers[1].mlp.down_proj = torch.nn.Linear(48, 16, bias=False)
    before = {name: p.clone() for name, p in other.named_parameters()}
    with pytest.raises(ValueError, match="nothing was changed"):
        align.apply_aligned(other, path)
    assert all(torch.equal(before[name], p) for name, p in other.named_parameters())


def test_saving_is_atomic_and_refuses_a_folder(tmp_path, monkeypatch):
    model = tiny_model("llama")
    path = align.save_aligned(model, tmp_path / "a.safetensors", {"note": "first"})
    old = path.read_bytes()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        align.save_aligned(model, tmp_path, {})
    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        align.save_aligned(model, path, {"note": "second"}, overwrite=True)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_trains_stably_through_a_float32_master_copy(dtype):
    """Plain AdamW on float16 weights goes to NaN within steps (its epsilon underflows); the master copy and, for
    float16, the loss scale keep losses finite and falling and the weights finite."""
    model, tok = tiny_model("llama").to(dtype), word_tokenizer()
    config = align.AlignConfig(steps=12, batch_size=2, lr=5e-3)
    run = align.align(model, tok, PAIRS, config, progress=False)
    assert all(torch.isfinite(torch.tensor(run.losses))) and run.losses[-1] < run.losses[0]
    assert all(torch.isfinite(p).all() and p.dtype == dtype for p in model.parameters())
    assert hooks.hook_count(model) == 0


def test_a_diverging_run_stops_with_advice():
    model, tok = tiny_model("llama"), word_tokenizer()
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        align.align(model, tok, PAIRS, align.AlignConfig(steps=6, batch_size=2, lr=1e30), progress=False)


def test_a_cached_run_is_applied_instead_of_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path))
    config = align.AlignConfig(steps=4, batch_size=2, lr=1e-2, checkpoint_every=2)
    first_model, tok = tiny_model("llama"), word_tokenizer()
    first = align.aligned(first_model, tok, PAIRS, config, {"note": "x"}, progress=False)

    def must_not_train(*args, **kwargs):
        raise AssertionError("the cached run should have been applied")

    monkeypatch.setattr(align, "align", must_not_train)
    second_model = tiny_model("llama")
    second = align.aligned(second_model, tok, PAIRS, config, progress=False)
    assert second.losses == first.losses and [s for s, _ in second.checkpoints] == [2]
    assert all(torch.equal(a, b) for a, b in zip(first_model.state_dict().values(),
                                                  second_model.state_dict().values(), strict=True))
    monkeypatch.undo()
    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path))
    other = align.aligned(tiny_model("llama"), tok, PAIRS[:2], config, progress=False)  # other examples: trained
    assert other.losses != first.losses


def test_final_loss_is_the_mean_of_the_last_three_steps():
    def run(losses):
        return align.AlignRun(align.AlignConfig(), losses, [], 0, 0.0)

    assert run([9.0, 4.0, 3.0, 2.0]).final_loss == 3.0 and run([5.0, 1.0]).final_loss == 3.0
    assert math.isnan(run([]).final_loss)
