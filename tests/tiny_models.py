"""Tiny random models of every registered family, built from configs (no download)."""

from __future__ import annotations

import torch
import transformers as tf
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

SMALL = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128)


def _config(model_type: str):
    if model_type == "gpt2":
        return tf.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    if model_type == "gemma3":
        vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      image_size=28, patch_size=14)
        return tf.Gemma3Config(text_config=dict(SMALL, model_type="gemma3_text"), vision_config=vision,
                               mm_tokens_per_image=4)
    classes = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config,
               "qwen3": tf.Qwen3Config, "gemma": tf.GemmaConfig, "gemma2": tf.Gemma2Config,
               "gemma3_text": tf.Gemma3TextConfig}
    return classes[model_type](**SMALL)


def tiny_model(model_type: str, seed: int = 0):
    torch.manual_seed(seed)
    config = _config(model_type)
    if model_type == "gemma3":
        return tf.Gemma3ForConditionalGeneration(config).eval()
    return tf.AutoModelForCausalLM.from_config(config).eval()


def word_tokenizer():
    """A whitespace word-level tokenizer over <pad> <bos> <eos> <unk> w0..w99 (ids 0..103), adding <bos>."""
    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(100)])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                      eos_token="<eos>", unk_token="<unk>")
