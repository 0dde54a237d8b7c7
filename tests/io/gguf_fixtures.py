"""Tiny GGUF files written the way llama.cpp's convert_hf_to_gguf.py writes them.

The tensors start as a transformers model's state dict (names and shapes from the
real architecture class), are converted to llama.cpp's names and layouts here, in
numpy, following convert_hf_to_gguf.py (its `LlamaModel.permute` and GPT-2's
transposes) and gguf-py's own name map, then written with `gguf.GGUFWriter`.
Nothing here imports zenlm: these files are an independent oracle for the reader.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import TokenType

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "Hello world! Hello there, how are you today? I am fine, thank you.",
    "def add(x, y):\n    return x + y\n\nprint(add(2, 3))  # 5\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "你好，世界。今天天气很好。我们去公园吧。",
    "Emoji are fun 😀 🎉 👍 and so are accents: café, naïve, déjà vu.",
    "   leading spaces, trailing spaces   \n\n\n  and blank lines\t\ttabs",
    "Numbers: 12345 3.14159 2024-06-01 1,000,000",
] * 3


# =================================================================== tokenizers
@dataclass
class TinyVocab:
    """What a GGUF's `tokenizer.ggml.*` keys hold."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (sentencepiece)
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    pre: str | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool | None = None
    chat_template: str | None = CHATML

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        if self.pre is not None:
            writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges is not None:
            writer.add_token_merges(self.merges)
        for value, add in [(self.bos_id, writer.add_bos_token_id),
                           (self.eos_id, writer.add_eos_token_id),
                           (self.unk_id, writer.add_unk_token_id),
                           (self.pad_id, writer.add_pad_token_id)]:
            if value is not None:
                add(value)
        if self.add_bos is not None:
            writer.add_add_bos_token(self.add_bos)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)


def byte_level_vocab(vocab_size: int = 400, pre: str = "gpt-2") -> TinyVocab:
    """A GPT-2-style byte-level BPE trained on CORPUS, with chat and user-defined tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
    tokens = [token for token, _ in vocab] + ["<think>"]
    types = [TokenType.CONTROL if t in specials else TokenType.NORMAL for t in tokens]
    types[-1] = TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return TinyVocab("gpt2", tokens, types, merges=merges, pre=pre, bos_id=1, eos_id=2,
                     unk_id=0, pad_id=0, add_bos=False)


def sentencepiece_vocab(pieces: int = 160) -> TinyVocab:
    """A llama.cpp "llama" vocabulary: specials, 256 byte tokens, scored pieces, no merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=pieces, show_progress=False))
    trained = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda item: item[1])]
    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tokens = specials + byte_tokens + trained
    types = ([TokenType.UNKNOWN] + [TokenType.CONTROL] * 4 + [TokenType.BYTE] * 256
             + [TokenType.NORMAL] * len(trained))
    # sentencepiece scores: pieces learned earlier score higher
    scores = [0.0] * (len(specials) + 256) + [-float(i) for i in range(len(trained))]
    return TinyVocab("llama", tokens, types, scores=scores, bos_id=1, eos_id=2, unk_id=0)


# =================================================================== models
@dataclass
class TinyModel:
    """A random transformers model: its config and its state dict (HF names and layouts)."""

    arch: str  # llama.cpp architecture
    config: Any  # transformers PretrainedConfig
    state_dict: dict[str, torch.Tensor] = field(repr=False)


def tiny_llama(vocab_size: int, *, tied: bool = False, seed: int = 0) -> TinyModel:
    """GQA llama: 4 query heads sharing 2 key/value heads; hidden 256 so K-quant rows fit."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tied,
        bos_token_id=1, eos_token_id=2,
    )
    return TinyModel("llama", config, _random_state(transformers.LlamaForCausalLM, config, seed))


def tiny_gpt2(vocab_size: int, *, seed: int = 0) -> TinyModel:
    """GPT-2 with Conv1D layers; n_embd 256 so K-quant rows fit."""
    import transformers

    config = transformers.GPT2Config(
        vocab_size=vocab_size, n_embd=256, n_layer=2, n_head=4, n_positions=64,
        bos_token_id=1, eos_token_id=2,
    )
    return TinyModel("gpt2", config, _random_state(transformers.GPT2LMHeadModel, config, seed))


def _random_state(cls: Any, config: Any, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor random (norms and biases too, so layout bugs cannot hide in 1s and 0s)."""
    model = cls(config)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # the same tensor as the embedding
        state[name] = torch.randn(tensor.shape, generator=generator) * 0.5
    return state


# =================================================================== conversion
def llama_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py's `LlamaModel.permute`, verbatim."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


_GPT2_TRANSPOSED = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")


def hf_to_gguf(model_arch: str, config: Any, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """HF names and layouts -> llama.cpp's, as convert_hf_to_gguf.py does (float32)."""
    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "gpt2": gguf.MODEL_ARCH.GPT2}[model_arch]
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    out = {}
    for hf_name, tensor in state.items():
        data = tensor.detach().float().numpy()
        if model_arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = llama_permute(data, config.num_attention_heads, config.num_attention_heads)
        if model_arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = llama_permute(data, config.num_attention_heads, config.num_key_value_heads)
        if model_arch == "gpt2" and hf_name.endswith(_GPT2_TRANSPOSED):
            data = data.T  # Conv1D stores (in, out); ggml wants (out, in)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        out[name] = np.ascontiguousarray(data, dtype=np.float32)
        if model_arch == "gpt2" and name == "token_embd.weight" and "lm_head.weight" not in state:
            out["output.weight"] = out[name].copy()  # llama.cpp writes GPT-2's tied output
    return out


# =================================================================== encoding
def random_k_blocks(n_blocks: int, qtype: Q, rng: np.random.Generator) -> np.ndarray:
    """Valid random Q4_K / Q6_K blocks: random bytes with finite, modest fp16 scales."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)

    def scale() -> np.ndarray:
        values = (rng.random(n_blocks) * 0.02 + 0.001).astype(np.float16)
        return values.view(np.uint8).reshape(n_blocks, 2)

    if qtype == Q.Q4_K:
        blocks[:, 0:2], blocks[:, 2:4] = scale(), scale()  # d, dmin
    elif qtype == Q.Q6_K:
        blocks[:, 208:210] = scale()  # d (the int8 sub-block scales stay random)
    else:
        raise ValueError(f"not a K type: {qtype!r}")
    return blocks


def encode(values: np.ndarray, qtype: Q, rng: np.random.Generator) -> tuple[np.ndarray, Q | None, np.ndarray]:
    """(payload for GGUFWriter.add_tensor, raw_dtype, the float32 values the file now holds)."""
    if qtype == Q.F32:
        return values, None, values
    if qtype == Q.F16:
        half = values.astype(np.float16)
        return half, None, half.astype(np.float32)
    if qtype in (Q.Q4_K, Q.Q6_K):
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        blocks = random_k_blocks(values.size // block_size, qtype, rng)
        payload = blocks.reshape(*values.shape[:-1], values.shape[-1] // block_size * type_size)
    else:
        payload = gguf.quants.quantize(values, qtype)
    return payload, qtype, gguf.quants.dequantize(payload, qtype).reshape(values.shape)


def write_gguf(
    path: Path, model: TinyModel, vocab: TinyVocab, qtype: Q = Q.F32, *,
    seed: int = 0, metadata: Callable[[gguf.GGUFWriter], None] | None = None,
    tensors: dict[str, np.ndarray] | None = None, architecture: str | None = None,
) -> dict[str, np.ndarray]:
    """Write `model` as llama.cpp would (2-D tensors as `qtype`, 1-D ones F32).

    Args:
        metadata: Called with the writer after the standard keys, to add more.
        tensors: GGUF-layout tensors to write instead of converting `model`'s.
        architecture: `general.architecture` to claim instead of `model.arch`.

    Returns:
        GGUF name -> the float32 values stored (what an exact reader must return).
    """
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), architecture or model.arch)
    _write_hparams(writer, model)
    vocab.write(writer)
    writer.add_file_type(int(qtype) if qtype in (Q.F32, Q.F16) else 7)
    if metadata is not None:
        metadata(writer)
    stored, encoded = {}, {}
    for name, values in (tensors or hf_to_gguf(model.arch, model.config, model.state_dict)).items():
        # llama.cpp keeps 1-D tensors (norms, biases) in F32; equal tensors (GPT-2's output
        # copy) get equal bytes, even for the K types' random blocks
        key = (values.shape, values.tobytes())
        if key not in encoded:
            encoded[key] = encode(values, qtype if values.ndim == 2 else Q.F32, rng)
        payload, raw_dtype, stored[name] = encoded[key]
        writer.add_tensor(name, payload, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


def _write_hparams(writer: gguf.GGUFWriter, model: TinyModel) -> None:
    c = model.config
    if model.arch == "llama":  # convert_hf_to_gguf.py's LlamaModel.set_gguf_parameters
        writer.add_vocab_size(c.vocab_size)
        writer.add_context_length(c.max_position_embeddings)
        writer.add_embedding_length(c.hidden_size)
        writer.add_block_count(c.num_hidden_layers)
        writer.add_feed_forward_length(c.intermediate_size)
        writer.add_head_count(c.num_attention_heads)
        writer.add_head_count_kv(c.num_key_value_heads)
        writer.add_rope_freq_base(_rope_theta(c))
        writer.add_layer_norm_rms_eps(c.rms_norm_eps)
        writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    else:  # GPT2Model.set_gguf_parameters
        writer.add_block_count(c.n_layer)
        writer.add_context_length(c.n_positions)
        writer.add_embedding_length(c.n_embd)
        writer.add_feed_forward_length(4 * c.n_embd)
        writer.add_head_count(c.n_head)
        writer.add_layer_norm_eps(c.layer_norm_epsilon)


def _rope_theta(config: Any) -> float:
    """transformers 5 keeps rope_theta in `rope_parameters`; 4.x on the config itself."""
    parameters = getattr(config, "rope_parameters", None) or {}
    return float(parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
