import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import models
from lnlib.evaluate import text_nll

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma3", "gpt2"]


def test_every_family_is_registered():
    assert set(FAMILIES) <= set(models.ARCHITECTURES)


@pytest.mark.parametrize("family", FAMILIES)
def test_registry_finds_one_activation_per_layer(family):
    model = tiny_model(family)
    acts = models.mlp_activations(model)
    assert models.n_layers(model) == len(acts) == 2
    width = 128 if family == "gpt2" else 48  # GPT-2's MLP is 4 x n_embd
    assert models.n_neurons(model) == width

    seen = []
    handles = [a.register_forward_hook(lambda m, i, o: seen.append(o.shape)) for a in acts]
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 5, 7, 9]]))
    for h in handles:
        h.remove()
    assert seen == [torch.Size([1, 4, width])] * 2  # each layer's activation fires once per forward


@pytest.mark.parametrize("family", FAMILIES)
def test_activation_output_reaches_down_projection(family):
    """The hooked module's output is what the down projection reads (times the up branch when gated):
    zeroing it there removes the neuron."""
    model = tiny_model(family)
    act, down = models.mlp_activations(model)[0], models.mlp_down_projections(model)[0]
    captured = {}
    hooks = [act.register_forward_hook(lambda m, i, o: captured.__setitem__("act", o)),
             down.register_forward_pre_hook(lambda m, i: captured.__setitem__("down_in", i[0]))]
    if family != "gpt2":
        up = models.blocks(model)[0].mlp.up_proj
        hooks.append(up.register_forward_hook(lambda m, i, o: captured.__setitem__("up", o)))
    with torch.no_grad():
        model(input_ids=torch.tensor([[3, 4, 5]]))
    for h in hooks:
        h.remove()
    if family == "gpt2":  # c_proj(act(c_fc(x))): no gate
        assert torch.equal(captured["act"], captured["down_in"])
    else:  # down(act(gate(x)) * up(x))
        assert torch.allclose(captured["down_in"], captured["act"] * captured["up"])


def test_final_norm_is_found():
    model = tiny_model("gemma3")
    assert models.final_norm(model) is model.model.language_model.norm


def test_unknown_architecture_lists_supported_and_how_to_add():
    class Fake(torch.nn.Module):
        class config:  # noqa: N801
            model_type = "mystery"

    with pytest.raises(models.UnsupportedArchitectureError) as err:
        models.mlp_activations(Fake())
    message = str(err.value)
    assert "'mystery'" in message and "gemma3_text" in message and "register_architecture" in message


def test_register_architecture_adds_a_family(monkeypatch):
    monkeypatch.setitem(models.ARCHITECTURES, "llama_alias", models.ARCHITECTURES["llama"])
    model = tiny_model("llama")
    model.config.model_type = "llama_alias"
    assert len(models.mlp_activations(model)) == 2


def test_shared_activation_module_is_refused():
    model = tiny_model("llama")
    shared = model.model.layers[0].mlp.act_fn
    model.model.layers[1].mlp.act_fn = shared
    with pytest.raises(models.UnsupportedArchitectureError, match="share one activation module"):
        models.mlp_activations(model)


def test_load_model_from_local_folder(tmp_path):
    model = tiny_model("qwen3")
    tokenizer = word_tokenizer()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = models.load_model(tmp_path, device="cpu")
    ids = torch.tensor([[1, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits)
    assert loaded.dtype == torch.float32 and not loaded.training and tok.pad_token == "<pad>"


def test_load_model_missing_folder_explains(tmp_path):
    with pytest.raises(OSError, match="offline, pass a local folder, or None"):
        models.load_model(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("family", ["gemma3_text", "gpt2", "gemma2"])
def test_text_nll_equals_labels_loss(family):
    model = tiny_model(family)
    tokenizer = word_tokenizer()
    texts = ["w1 w2 w3 w4 w5 w6", "w9 w8", "w3 w3 w3 w1 w2"]
    result = text_nll(model, tokenizer, texts, batch_size=2, chunk_positions=3, progress=False)
    for i, text in enumerate(texts):
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        assert result.n_tokens[i] == ids.shape[1] - 1
        assert result.nll_sum[i].item() == pytest.approx(loss * (ids.shape[1] - 1), rel=1e-5)
    official = torch.exp((result.nll_sum / result.n_tokens).mean()).item()
    assert result.perplexity("official") == pytest.approx(official)
    assert result.perplexity("token") == pytest.approx(torch.exp(result.nll_sum.sum() / 10).item())
    with pytest.raises(ValueError, match="'official' or 'token'"):
        result.perplexity("mean")
