"""The default model's tokenizer, which lnlib builds from the GGUF file itself so that transformers 4 and 5 give
the same one (transformers' own GGUF reader splits Gemma 3's words before 5.24). Checked on a tiny GGUF file."""

import pytest
from transformers import AutoTokenizer

from lnlib import models

gguf = pytest.importorskip("gguf")

# Gemma's layout: pad, eos, bos, unk, then pieces; merges follow the order of the pieces in the file.
TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "a", "b", "c", "\u2581", "ab", "\u2581a", "\u2581ab", "  ",
          "abc", "<0x7A>", "bc", "ca"]
KINDS = [gguf.TokenType.CONTROL] * 5 + [gguf.TokenType.NORMAL] * 9 + [gguf.TokenType.BYTE] + [gguf.TokenType.NORMAL] * 2


@pytest.fixture
def tiny_gguf(tmp_path):
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(TOKENS)
    writer.add_token_types(KINDS)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gemma_tokenizer_is_bpe_in_file_order(tiny_gguf):
    tok = models._gemma_tokenizer(tiny_gguf)
    assert tok("ab ab")["input_ids"] == [2, 9, 11]  # "ab" then "▁ab": BOS first, no prefix space
    assert tok("bca")["input_ids"] == [2, 15, 5]  # "bc" comes before "ca" in the file, so it merges first
    assert tok("  c")["input_ids"] == [2, 12, 7]  # a run of spaces is a token of its own
    assert tok("<mask>a")["input_ids"] == [2, 4, 5]  # control tokens stay whole
    assert tok("z q")["input_ids"] == [2, 14, 8, 3]  # byte fallback, else <unk>
    assert tok.decode([9, 11]) == "ab ab"
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == ("<bos>", "<eos>", "<unk>", "<pad>")


def test_gemma_tokenizer_reloads_from_its_folder(tiny_gguf, tmp_path):
    models._gemma_tokenizer(tiny_gguf).save_pretrained(tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tok("ab ab  c")["input_ids"] == [2, 9, 11, 12, 7] and tok.pad_token_id == 0
