"""Write a Llama-architecture zenlm model (and its byte-level BPE tokenizer) as GGUF.

The file follows what llama.cpp's convert_hf_to_gguf.py writes for a Llama model: the
model is first put in Hugging Face form (io/hf.py), then the llama family's table
(families.py) is walked from transformers to GGUF: the same metadata keys and tensor
names `read_gguf` reads, and Q/K rows permuted into llama.cpp's interleaved RoPE
layout. Norm weights stay float32; matrices are float16 or Q8_0 (blocks of 32 int8
values with one float16 scale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.quants import quantize

from zenlm.config import to_hf_config
from zenlm.errors import UnsupportedModelError
from zenlm.io.gguf.families import LLAMA
from zenlm.io.gguf.tokenizer import write_tokenizer
from zenlm.io.hf import convert_to_hf
from zenlm.models import DecoderLM
from zenlm.tokenizer import Tokenizer

__all__ = ["GGUF_TYPES", "export_gguf"]

GGUF_TYPES = {
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}


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
    qtype, file_type = GGUF_TYPES[type]
    hf_config = to_hf_config(model.config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), LLAMA.arch)
    LLAMA.write_config(writer, hf_config)
    writer.add_file_type(file_type)
    write_tokenizer(writer, tokenizer, model.config.vocab_size)
    for hf_name, tensor in convert_to_hf(model).items():
        found = LLAMA.to_gguf(hf_name)
        if found is None:
            raise UnsupportedModelError(f"no GGUF name for tensor {hf_name}")
        name, layout = found
        values = layout.to_gguf(tensor.detach().float().cpu().numpy(), hf_config)
        _add_tensor(writer, name, values, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


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


def _add_tensor(writer: GGUFWriter, name: str, data: np.ndarray,
                qtype: GGMLQuantizationType) -> None:
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim == 1:
        writer.add_tensor(name, data)  # norms: float32, as llama.cpp's converter keeps them
        return
    if qtype == GGMLQuantizationType.Q8_0 and data.shape[-1] % 32 == 0:
        writer.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)
        return
    writer.add_tensor(name, data.astype(np.float16))
