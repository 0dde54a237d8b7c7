"""A GGUF file's hyperparameters <-> a transformers config.json dict.

Most hyperparameters are one metadata key each, renamed: a `Key` says which, and the
same table is read on import and written on export. What is not one key is derived
here: llama's head size, tied embeddings (from the tensors), the special token ids,
and Llama 3's rope scaling, which llama.cpp keeps only as per-frequency factors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gguf.constants import GGMLQuantizationType, Keys

from zenlm.errors import CheckpointError, UnsupportedModelError
from zenlm.io.gguf.reader import REQUIRED, GGUFFile, GGUFHeader, meta


@dataclass(frozen=True)
class Key:
    """`{arch}.<gguf>` metadata <-> `hf` config key.

    Attributes:
        gguf: gguf-py's key pattern, e.g. `Keys.LLM.BLOCK_COUNT` ("{arch}.block_count").
        hf: The transformers config key, e.g. "num_hidden_layers".
        kind: int (written as uint32) or float (written as float32).
        default: Used when the file lacks the key: a value, or a function of the keys
            read before it. Required when not given.
    """

    gguf: str
    hf: str
    kind: type
    default: Any = REQUIRED

    def read(self, header: GGUFHeader, arch: str, hf: dict[str, Any]) -> Any:
        """The value in `header` (`hf`: the config read so far, for defaults)."""
        default = self.default(hf) if callable(self.default) else self.default
        return meta(header, self.gguf.format(arch=arch), self.kind, default)


def read_keys(header: GGUFHeader, arch: str, keys: tuple[Key, ...]) -> dict[str, Any]:
    """The config values the key table names, in table order."""
    hf: dict[str, Any] = {}
    for key in keys:
        hf[key.hf] = key.read(header, arch, hf)
    return hf


def write_keys(writer: Any, arch: str, keys: tuple[Key, ...], hf: dict[str, Any]) -> None:
    """The same table walked the other way, into a `gguf.GGUFWriter`."""
    for key in keys:
        add = writer.add_uint32 if key.kind is int else writer.add_float32
        add(key.gguf.format(arch=arch), hf[key.hf])


def _same_as(hf_key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda hf: hf[hf_key]


LLAMA_KEYS = (
    Key(Keys.LLM.CONTEXT_LENGTH, "max_position_embeddings", int),
    Key(Keys.LLM.EMBEDDING_LENGTH, "hidden_size", int),
    Key(Keys.LLM.BLOCK_COUNT, "num_hidden_layers", int),
    Key(Keys.LLM.FEED_FORWARD_LENGTH, "intermediate_size", int),
    Key(Keys.Attention.HEAD_COUNT, "num_attention_heads", int),
    Key(Keys.Attention.HEAD_COUNT_KV, "num_key_value_heads", int, _same_as("num_attention_heads")),
    Key(Keys.Attention.LAYERNORM_RMS_EPS, "rms_norm_eps", float),
    Key(Keys.Rope.FREQ_BASE, "rope_theta", float, 10000.0),
)
GPT2_KEYS = (
    Key(Keys.LLM.CONTEXT_LENGTH, "n_positions", int),
    Key(Keys.LLM.EMBEDDING_LENGTH, "n_embd", int),
    Key(Keys.LLM.BLOCK_COUNT, "n_layer", int),
    Key(Keys.Attention.HEAD_COUNT, "n_head", int),
    Key(Keys.Attention.LAYERNORM_EPS, "layer_norm_epsilon", float),
)


# =================================================================== llama
def llama_config(file: GGUFFile) -> dict[str, Any]:
    """The transformers LlamaConfig dict a llama GGUF file describes."""
    h = file.header
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": _vocab_size(h, "llama"),
        **read_keys(h, "llama", LLAMA_KEYS),
        "hidden_act": "silu",
    }
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        raise CheckpointError(
            f"{h.path}: {heads} attention heads cannot be shared by {kv_heads} key/value heads"
        )
    config["head_dim"] = _llama_head_dim(h, config["hidden_size"] // heads)
    # llama.cpp's llama graph takes these biases when the tensors exist
    config["attention_bias"] = "blk.0.attn_q.bias" in h.tensors
    config["mlp_bias"] = "blk.0.ffn_gate.bias" in h.tensors
    config["tie_word_embeddings"] = is_tied(file)
    config.update(special_ids(h))
    rope_scaling = _llama_rope_scaling(file, config)
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling
    return config


def write_llama_config(writer: Any, hf: dict[str, Any]) -> None:
    """What convert_hf_to_gguf.py writes for a plain Llama (no rope scaling)."""
    write_keys(writer, "llama", LLAMA_KEYS, hf)
    for key in (Keys.Rope.DIMENSION_COUNT, Keys.Attention.KEY_LENGTH, Keys.Attention.VALUE_LENGTH):
        writer.add_uint32(key.format(arch="llama"), hf["head_dim"])
    writer.add_uint32(Keys.LLM.VOCAB_SIZE.format(arch="llama"), hf["vocab_size"])


def _llama_head_dim(h: GGUFHeader, default: int) -> int:
    # llama.cpp writes key_length only when head_dim is not hidden / heads
    head_dim = meta(h, "llama.attention.key_length", int, None) or meta(
        h, "llama.rope.dimension_count", int, default
    )
    value_dim = meta(h, "llama.attention.value_length", int, head_dim)
    if value_dim != head_dim:
        raise UnsupportedModelError(
            f"{h.path}: value heads of {value_dim} != key heads of {head_dim} dimensions"
        )
    return head_dim


def _llama_rope_scaling(file: GGUFFile, config: dict[str, Any]) -> dict[str, Any] | None:
    h = file.header
    if "rope_freqs.weight" in h.tensors:
        return _llama3_rope_scaling(file, config)
    kind = meta(h, "llama.rope.scaling.type", str, None)
    factor = meta(h, "llama.rope.scaling.factor", float, None)
    if kind is None and (linear := meta(h, "llama.rope.scale_linear", float, None)):
        kind, factor = "linear", linear  # the key older converters wrote
    if kind in (None, "none") or factor == 1.0:
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn":
        original = meta(h, "llama.rope.scaling.original_context_length", int)
        return {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}
    raise UnsupportedModelError(
        f"{h.path}: rope scaling {kind!r} is not supported; supported: none, linear, yarn, "
        "llama3 (as rope_freqs)"
    )


def _llama3_rope_scaling(file: GGUFFile, config: dict[str, Any]) -> dict[str, Any]:
    """Recover Llama 3.x rope scaling from the per-frequency factors llama.cpp stores.

    llama.cpp keeps only the factors (`rope_freqs.weight`, one per rotated pair). The
    largest is `factor`; the other parameters are Meta's published ones, and are kept
    only if they reproduce every stored factor.
    """
    info = file.header.tensors["rope_freqs.weight"]
    head_dim = config["head_dim"]
    if info.shape != (head_dim // 2,) or info.ggml_type != GGMLQuantizationType.F32:
        raise CheckpointError(
            f"{file.header.path}: rope_freqs.weight is {info.type_name} {info.shape}, "
            f"expected F32 ({head_dim // 2},)"
        )
    stored = torch.from_numpy(file.values(info, torch.float32)[0].astype(np.float64))
    scaling = {
        "rope_type": "llama3",
        "factor": float(stored.max()),
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    expected = _llama3_factors(scaling, config["rope_theta"], head_dim)
    if not torch.allclose(expected, stored, rtol=1e-5, atol=0):
        raise UnsupportedModelError(
            f"{file.header.path}: rope_freqs.weight does not follow Llama 3's rope scaling "
            f"(factor {scaling['factor']}, low/high frequency factors 1 and 4, original "
            "context 8192); other per-frequency rope factors are not supported"
        )
    return scaling


def _llama3_factors(scaling: dict[str, Any], theta: float, head_dim: int) -> torch.Tensor:
    """The factors convert_hf_to_gguf.py computes for Llama 3 rope scaling, (head_dim/2,)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    wavelen = 2 * math.pi / freqs.double()
    original = scaling["original_max_position_embeddings"]
    low, high, factor = scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["factor"]
    smooth = (original / wavelen - low) / (high - low)
    factors = 1 / ((1 - smooth) / factor + smooth)
    factors = torch.where(wavelen > original / low, torch.full_like(factors, factor), factors)
    return torch.where(wavelen < original / high, torch.ones_like(factors), factors)


# =================================================================== gpt2
def gpt2_config(file: GGUFFile) -> dict[str, Any]:
    """The transformers GPT2Config dict a gpt2 GGUF file describes."""
    h = file.header
    config: dict[str, Any] = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": _vocab_size(h, "gpt2"),
        **read_keys(h, "gpt2", GPT2_KEYS),
    }
    n_embd = config["n_embd"]
    n_inner = meta(h, "gpt2.feed_forward_length", int, 4 * n_embd)
    config["n_inner"] = None if n_inner == 4 * n_embd else n_inner  # None: 4 * n_embd, as HF
    config["activation_function"] = "gelu_new"  # ggml_gelu is the tanh approximation
    config["tie_word_embeddings"] = is_tied(file)
    config.update(special_ids(h))
    return config


# =================================================================== shared
def is_tied(file: GGUFFile, embedding: str = "token_embd.weight") -> bool:
    """Tied when there is no output matrix, or it is a byte-for-byte copy of the embedding.

    llama.cpp writes no `output.weight` for a tied llama, and a copy for GPT-2.
    """
    tensors = file.header.tensors
    output, embed = tensors.get("output.weight"), tensors.get(embedding)
    if output is None:
        return True
    if embed is None or (output.shape, output.ggml_type) != (embed.shape, embed.ggml_type):
        return False
    return output.nbytes >= 0 and np.array_equal(file.raw(output), file.raw(embed))


def special_ids(header: GGUFHeader) -> dict[str, int]:
    """bos/eos/pad token ids, as config.json holds them (absent ones left out)."""
    keys = {
        "bos_token_id": Keys.Tokenizer.BOS_ID,
        "eos_token_id": Keys.Tokenizer.EOS_ID,
        "pad_token_id": Keys.Tokenizer.PAD_ID,
    }
    ids = {name: meta(header, key, int, None) for name, key in keys.items()}
    return {name: value for name, value in ids.items() if value is not None}


def _vocab_size(header: GGUFHeader, arch: str) -> int:
    size = meta(header, Keys.LLM.VOCAB_SIZE.format(arch=arch), int, None)
    if size is None:  # as transformers: the vocabulary's length, else the embedding's rows
        tokens = header.metadata.get(Keys.Tokenizer.LIST)
        embed = header.tensors.get("token_embd.weight")
        size = len(tokens) if isinstance(tokens, list) else embed.shape[0] if embed else 0
    return size
