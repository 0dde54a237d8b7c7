"""The GGUF family tables, walked both ways, against gguf-py's and llama.cpp's own.

Oracles: gguf-py's `TensorNameMap` (the Hugging Face -> GGUF names llama.cpp's converter
uses), its `GGUFWriter.add_*` methods for metadata keys, convert_hf_to_gguf.py's
`permute` (gguf_fixtures.llama_permute, verbatim), and the round trip export -> read.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from zenlm.config import ModelConfig, to_hf_config
from zenlm.io.gguf import export_gguf, permute_qk, read_gguf
from zenlm.io.gguf.families import FAMILIES
from zenlm.io.gguf.hparams import write_llama_config
from zenlm.io.hf import convert_to_hf
from zenlm.models import build_model
from zenlm.tokenizer_train import train_tokenizer

from .gguf_fixtures import llama_permute

ARCHES = {"llama": gguf.MODEL_ARCH.LLAMA, "gpt2": gguf.MODEL_ARCH.GPT2}


def _hf_names(arch: str) -> list[str]:
    """Every tensor name of a transformers model of `arch` (llama: with all its biases)."""
    transformers = pytest.importorskip("transformers")
    if arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True)
        cls = transformers.LlamaForCausalLM
    else:
        config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4,
                                         n_positions=16)
        cls = transformers.GPT2LMHeadModel
    with torch.device("meta"):
        names = list(cls(config).state_dict())
    return [n for n in names if not n.endswith((".attn.bias", ".attn.masked_bias"))]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_names_are_gguf_py_names_and_walk_back(arch):
    family = FAMILIES[arch]
    theirs = gguf.get_tensor_name_map(ARCHES[arch], 2)
    for hf_name in _hf_names(arch):
        found = family.to_gguf(hf_name)
        assert found is not None, hf_name
        gguf_name, layout = found
        assert gguf_name == theirs.get_name(hf_name, try_suffixes=(".weight", ".bias")), hf_name
        assert family.to_hf(gguf_name) == (hf_name, layout)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_every_rule_is_a_tensor_of_its_llama_cpp_architecture(arch):
    kinds = {gguf.TENSOR_NAMES[t].replace("{bid}", "{i}") for t in gguf.MODEL_TENSORS[ARCHES[arch]]}
    assert {rule.gguf for rule in FAMILIES[arch].tensors} <= kinds


def test_unknown_names_have_no_rule():
    llama = FAMILIES["llama"]
    assert llama.to_hf("blk.0.attn_sinks.weight") is None
    assert llama.to_hf("blk.0.attn_q.scale") is None
    assert llama.to_gguf("model.layers.0.self_attn.rotary_emb.inv_freq") is None


@pytest.mark.parametrize("heads", [1, 2, 3, 6])
def test_permute_qk_is_convert_hf_to_gguf_permute_and_inverts(heads):
    weight = np.random.default_rng(heads).standard_normal((6 * 8, 5)).astype(np.float32)
    permuted = permute_qk(weight, heads)
    assert np.array_equal(permuted, llama_permute(weight, heads, heads))
    assert np.array_equal(permute_qk(permuted, heads, inverse=True), weight)
    bias = weight[:, 0].copy()
    assert np.array_equal(permute_qk(bias, heads), llama_permute(bias, heads, heads))
    as_torch = permute_qk(torch.from_numpy(weight), heads)  # export hands it torch tensors too
    assert torch.equal(as_torch, torch.from_numpy(llama_permute(weight, heads, heads)))


def _tiny_llama() -> ModelConfig:
    return ModelConfig(vocab_size=300, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                       d_ff=128, max_seq_len=64, tie_embeddings=False, rope_theta=50000.0)


def test_llama_metadata_keys_are_gguf_py_keys():
    hf = to_hf_config(_tiny_llama())
    ours = gguf.GGUFWriter("unused.gguf", "llama")
    write_llama_config(ours, hf)
    theirs = gguf.GGUFWriter("unused.gguf", "llama")
    theirs.add_context_length(64)
    theirs.add_embedding_length(64)
    theirs.add_block_count(2)
    theirs.add_feed_forward_length(128)
    theirs.add_head_count(4)
    theirs.add_head_count_kv(2)
    theirs.add_layer_norm_rms_eps(1e-5)
    theirs.add_rope_freq_base(50000.0)
    theirs.add_rope_dimension_count(16)
    theirs.add_key_length(16)
    theirs.add_value_length(16)
    theirs.add_vocab_size(300)

    def kv(writer: gguf.GGUFWriter) -> dict:
        return {key: (value.type, value.value) for key, value in writer.kv_data[0].items()}

    assert kv(ours) == kv(theirs)


def test_export_then_read_gives_the_model_back(tmp_path):
    """The table walked to GGUF and back: names, Q/K rows and config survive (f16 rounding)."""
    text = "the quick brown fox jumps over the lazy dog. " * 20
    tokenizer = train_tokenizer([text], kind="bpe", vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    model = build_model(_tiny_llama())
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:  # norms: not all ones, so a misplaced one shows
                parameter.normal_()
    path = export_gguf(model, tokenizer, tmp_path / "tiny.gguf", type="f16")
    checkpoint = read_gguf(path)
    expected = convert_to_hf(model)
    assert checkpoint.state_dict.keys() == expected.keys()
    for name, tensor in expected.items():  # matrices f16, norms f32
        stored = tensor if tensor.dim() == 1 else tensor.half().float()
        assert torch.equal(checkpoint.state_dict[name], stored), name
    config = checkpoint.hf_config
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"],
            config["rope_theta"]) == (4, 2, 16, 50000.0)
