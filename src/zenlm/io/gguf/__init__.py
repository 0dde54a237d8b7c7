"""GGUF files (llama.cpp's format): read into Hugging Face form, and export.

A GGUF file holds a model's hyperparameters and tokenizer as metadata, under
llama.cpp's key names, and its tensors under llama.cpp's names and layouts, often
quantized in blocks. The package, one concern per module:

- `reader`: the container (header, metadata, tensor table) over a memory map;
- `quants`: ggml's block types dequantized to float32;
- `hparams`: metadata keys <-> transformers config keys, one table per family;
- `families`: GGUF tensor names and layouts <-> transformers', one two-way table per
  family, with the Q/K permutation (`permute_qk`);
- `tokenizer`: `tokenizer.ggml.*` <-> a zenlm `Tokenizer`;
- `load`: `open_gguf` / `read_gguf`, with the expected tensors taken from the built model skeleton;
- `export`: `export_gguf`, the same tables walked the other way.
"""

from zenlm.io.gguf.export import GGUF_TYPES, export_gguf
from zenlm.io.gguf.families import SUPPORTED_ARCHITECTURES, permute_qk
from zenlm.io.gguf.load import GGUFCheckpoint, GGUFModelFile, open_gguf, read_gguf
from zenlm.io.gguf.quants import SUPPORTED_TENSOR_TYPES, dequantize
from zenlm.io.gguf.reader import GGUFHeader, GGUFTensorInfo, read_gguf_header
from zenlm.io.gguf.tokenizer import SUPPORTED_TOKENIZER_MODELS

__all__ = [
    "GGUF_TYPES",
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_TENSOR_TYPES",
    "SUPPORTED_TOKENIZER_MODELS",
    "GGUFCheckpoint",
    "GGUFHeader",
    "GGUFModelFile",
    "GGUFTensorInfo",
    "dequantize",
    "export_gguf",
    "open_gguf",
    "permute_qk",
    "read_gguf",
    "read_gguf_header",
]
