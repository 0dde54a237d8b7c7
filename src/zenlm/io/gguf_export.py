"""Write a Llama-architecture zenlm model (and its byte-level BPE tokenizer) as GGUF.

The file follows what llama.cpp's convert_hf_to_gguf.py writes for a Llama model:
the same metadata keys, tensor names, and Q/K rows permuted from the Hugging Face
"rotate half" RoPE layout into llama.cpp's interleaved one. Norm weights stay float32;
matrices are float16 or Q8_0 (blocks of 32 int8 values with one float16 scale).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch

from zenlm.errors import UnsupportedModelError
from zenlm.io.hf import convert_to_hf
from zenlm.models import DecoderLM
from zenlm.tokenizer import Tokenizer

GGUF_TYPES = {
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}

_NAMES = {  # Hugging Face Llama names -> GGUF names ({i}: layer)
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}


def permute_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """convert_hf_to_gguf.py's `permute`: rotate-half rows -> interleaved pairs, per head.

    Args:
        weight: q_proj or k_proj weight (n_heads * head_dim, d_model).
        n_heads: Heads of that projection (KV heads for k_proj).
    """
    rows = weight.shape[0]
    return (weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _check_supported(model: DecoderLM) -> None:
    c = model.config
    problems = [
        f"{name}={value!r}" for name, value, ok in [
            ("hf_model_type", c.hf_model_type, c.hf_model_type == "llama"),
            ("positions", c.positions, c.positions == "rope"),
            ("norm", c.norm, c.norm == "rmsnorm"),
            ("gated_mlp", c.gated_mlp, c.gated_mlp),
            ("activation", c.activation, c.activation == "silu"),
            ("qkv_bias", c.qkv_bias, not c.qkv_bias),
            ("rope_scaling", c.rope_scaling, c.rope_scaling is None),
        ] if not ok
    ]
    if problems:
        raise UnsupportedModelError(
            f"GGUF export supports plain Llama models only; this one has {', '.join(problems)}")


def export_gguf(model: DecoderLM, tokenizer: Tokenizer, path: str | Path, *,
                type: str = "f16") -> Path:  # noqa: A002 - the CLI's word
    """Write `model` and `tokenizer` to a GGUF file llama.cpp runs.

    Args:
        model: A Llama-architecture DecoderLM.
        tokenizer: Its byte-level BPE tokenizer.
        path: Output .gguf file.
        type: "f16" or "q8_0" for the matrices (norms stay float32).

    Raises:
        UnsupportedModelError: another architecture, or a non-byte-level-BPE tokenizer.
        ValueError: an unknown type.
    """
    if type not in GGUF_TYPES:
        raise ValueError(f"unknown GGUF type {type!r}; choose one of {', '.join(GGUF_TYPES)}")
    _check_supported(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    _write_config(writer, model, GGUF_TYPES[type][1])
    _write_tokenizer(writer, tokenizer, model.config.vocab_size)
    for name, tensor in _gguf_tensors(model):
        _add_tensor(writer, name, tensor, GGUF_TYPES[type][0])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _write_config(writer: gguf.GGUFWriter, model: DecoderLM, file_type: int) -> None:
    c = model.config
    writer.add_context_length(c.max_seq_len)
    writer.add_embedding_length(c.d_model)
    writer.add_block_count(c.n_layers)
    writer.add_feed_forward_length(c.d_ff)
    writer.add_head_count(c.n_heads)
    writer.add_head_count_kv(c.kv_heads)
    writer.add_rope_dimension_count(c.dim_per_head)
    writer.add_key_length(c.dim_per_head)
    writer.add_value_length(c.dim_per_head)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(file_type)


def _write_tokenizer(writer: gguf.GGUFWriter, tokenizer: Tokenizer, vocab_size: int) -> None:
    """Byte-level BPE as llama.cpp's "gpt2" tokenizer model: tokens, types, merges."""
    spec = json.loads(tokenizer.backend.to_str())
    if spec["model"]["type"] != "BPE" or (spec.get("pre_tokenizer") or {}).get("type") not in (
        "ByteLevel", "Sequence"
    ):
        raise UnsupportedModelError(
            "GGUF export needs a byte-level BPE tokenizer (zenlm tokenizer train --kind bpe); "
            f"this one is {spec['model']['type']}")
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    by_id = {i: tok for tok, i in tokenizer.backend.get_vocab(with_added_tokens=True).items()}
    tokens, types = [], []
    for index in range(vocab_size):
        if index in by_id:  # ids past the tokenizer (padded vocab) become unused slots
            tokens.append(by_id[index])
            types.append(gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # GPT-2 split regex, as ByteLevel(use_regex) splits
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for add, value in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                       (writer.add_eos_token_id, tokenizer.eos_token_id),
                       (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if value is not None:
            add(value)
    writer.add_add_bos_token(bool(tokenizer.add_bos))


def _gguf_tensors(model: DecoderLM):  # noqa: ANN202
    c = model.config
    for hf_name, tensor in convert_to_hf(model).items():
        parts = hf_name.split(".")
        layer = parts[2] if hf_name.startswith("model.layers.") else None
        pattern = hf_name.replace(f".{layer}.", ".{i}.", 1) if layer else hf_name
        if pattern not in _NAMES:
            raise UnsupportedModelError(f"no GGUF name for tensor {hf_name}")
        if pattern.endswith("q_proj.weight"):
            tensor = permute_qk(tensor, c.n_heads)
        elif pattern.endswith("k_proj.weight"):
            tensor = permute_qk(tensor, c.kv_heads)
        yield _NAMES[pattern].replace("{i}", layer or ""), tensor.float()


def _add_tensor(writer: gguf.GGUFWriter, name: str, tensor: torch.Tensor,
                qtype: gguf.GGMLQuantizationType) -> None:
    data = tensor.detach().cpu().numpy().astype(np.float32)
    if data.ndim == 1:
        writer.add_tensor(name, data)  # norms: float32, as llama.cpp's converter keeps them
        return
    if qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32 == 0:
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        return
    writer.add_tensor(name, data.astype(np.float16))
