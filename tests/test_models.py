import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import models

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


@pytest.mark.parametrize("family", ["gemma3", "gemma3_text", "llama"])
@pytest.mark.parametrize("prefix", ["model", "language_model", "nothing_like_it"])
def test_the_body_is_found_whatever_the_base_model_prefix(family, prefix, monkeypatch):
    """transformers 4.x names Gemma 3's prefix "language_model", 5.x "model": lnlib must not depend on it."""
    model = tiny_model(family)
    monkeypatch.setattr(type(model), "base_model_prefix", prefix)
    body = models.body(model)
    assert isinstance(body.layers, torch.nn.ModuleList) and models.n_layers(model) == 2
    out = body(input_ids=torch.tensor([[1, 5, 6]]), attention_mask=torch.ones(1, 3, dtype=torch.long))
    assert out.last_hidden_state.shape[:2] == (1, 3)


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
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load_model(str(tmp_path / "nowhere"))


def test_load_model_refuses_bad_settings_before_loading(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16"):
        models.load_model(tmp_path, dtype="float61")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        models.load_model(tmp_path, device="cuda")
    with pytest.raises(ValueError, match="not a device name"):
        models.load_model(tmp_path, device="gpu0")


def test_load_model_explains_an_unsupported_family(tmp_path):
    import transformers

    transformers.T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2).save_pretrained(
        tmp_path)
    with pytest.raises(models.UnsupportedArchitectureError, match="'t5' is not in lnlib's architecture registry"):
        models.load_model(tmp_path)


def test_offline_a_hub_id_fails_at_once_with_advice(monkeypatch, tmp_path):
    import time

    monkeypatch.setenv("LNLIB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    start = time.perf_counter()
    with pytest.raises(OSError, match="offline .* loads only from the local hub cache"):
        models.load_model("someone/some-model")
    assert time.perf_counter() - start < 10


def test_load_with_device_map_auto_on_cpu(tmp_path):
    pytest.importorskip("accelerate")
    model = tiny_model("llama")
    model.save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)
    loaded, _ = models.load_model(tmp_path, device_map="auto")
    assert models.input_device(loaded).type == "cpu" and loaded.dtype == torch.float32
    ids = torch.tensor([[1, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits)


def test_provenance_records_what_is_known(tmp_path):
    model = tiny_model("llama")
    record = models.provenance(model)
    assert record["model_type"] == "llama" and record["layers"] == 2 and record["neurons"] == 48
    assert "revision" not in record  # nothing invented




def test_the_default_models_conversion_shows_a_text_bar_not_a_widget():
    from tqdm import std
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    before = gguf_utils.tqdm
    with models.text_progress_bars():
        assert gguf_utils.tqdm is std.tqdm  # tqdm.auto would be a Jupyter widget, dead in a saved notebook
    assert gguf_utils.tqdm is before
