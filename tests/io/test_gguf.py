"""GGUF reading: dequantization, the header, layouts, tokenizers, bad input, SmolLM2.

Oracles: gguf-py (`quants.dequantize`, `GGUFReader`), ggml's K-quant block layouts
written out in float64, llama.cpp's conversion rules (gguf_fixtures.py writes tiny
files exactly as convert_hf_to_gguf.py would), and transformers' own GGUF loader
and GGUF tokenizer.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from zenlm.errors import CheckpointError, UnsupportedModelError
from zenlm.io.gguf import (
    SUPPORTED_TENSOR_TYPES,
    GGUFCheckpoint,
    dequantize,
    read_gguf,
    read_gguf_header,
)
from zenlm.io.gguf.reader import GGUFFile

from .gguf_fixtures import (
    CHATML,
    TinyModel,
    TinyVocab,
    byte_level_vocab,
    hf_to_gguf,
    random_k_blocks,
    sentencepiece_vocab,
    tiny_gpt2,
    tiny_llama,
    write_gguf,
)

ALL_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q6_K]
BLOCK_QUANTS = {Q.Q8_0, Q.Q4_0, Q.Q4_1}  # gguf-py can quantize these from real weights

SAMPLES = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "naïve café — déjà vu; Straße",
    "中文分词测试：你好，世界。今天天气很好。",
    "日本語のテキストと한국어 텍스트",
    "def f(x):\n    return x ** 2  # 🐍\n\n\n",
    "   leading and    runs   of spaces\t\ttabs  ",
    "\n\n\nnewlines\r\n\r\nand CRLF\n",
    "emoji 👩‍👩‍👧‍👦 and 🤗 and 😀😀😀",
    "Numbers 12345 and 3.14159, dates 2024-06-01",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after<|endoftext|>",
    "<unk> <s>x</s> <think>maybe</think>",
    "",
    " ",
]

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name a prime number."},
    ],
    [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Bonjour !"},
        {"role": "user", "content": "How are you? 😀\n中文也可以"},
    ],
]


def _transformers():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


# =================================================================== fixtures
@pytest.fixture(scope="module")
def spm_vocab() -> TinyVocab:
    return sentencepiece_vocab()


@pytest.fixture(scope="module")
def bpe_vocab() -> TinyVocab:
    return byte_level_vocab()


@pytest.fixture(scope="module")
def llama(spm_vocab) -> TinyModel:
    _transformers()
    return tiny_llama(len(spm_vocab.tokens))


@pytest.fixture(scope="module")
def llama_tied(bpe_vocab) -> TinyModel:
    _transformers()
    return tiny_llama(len(bpe_vocab.tokens), tied=True, seed=1)


@pytest.fixture(scope="module")
def gpt2(bpe_vocab) -> TinyModel:
    _transformers()
    return tiny_gpt2(len(bpe_vocab.tokens), seed=2)


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def written(gguf_dir, llama, llama_tied, gpt2, spm_vocab, bpe_vocab):
    """write(kind, qtype) -> (path, stored GGUF-layout values), each file written once."""
    models = {
        "llama": (llama, spm_vocab),
        "llama_tied": (llama_tied, bpe_vocab),
        "gpt2": (gpt2, bpe_vocab),
    }
    cache: dict[tuple[str, Q], tuple[Path, dict[str, np.ndarray]]] = {}

    def write(kind: str, qtype: Q) -> tuple[Path, dict[str, np.ndarray]]:
        if (kind, qtype) not in cache:
            path = gguf_dir / f"{kind}-{qtype.name}.gguf"
            model, vocab = models[kind]
            cache[kind, qtype] = path, write_gguf(path, model, vocab, qtype)
        return cache[kind, qtype]

    return write


@pytest.fixture(scope="module")
def good_file(written) -> Path:
    """A small valid file to corrupt."""
    return written("llama", Q.Q8_0)[0]


# =================================================================== dequantization
def _payload(qtype: Q, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Bytes of a `shape` tensor of `qtype`, as stored in a file (uint8 for block types)."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(np.float32)
    values[0, :32] = 0.0  # an all-zero block: scale 0
    if qtype == Q.F32:
        return values
    if qtype == Q.F16:
        return values.astype(np.float16)
    if qtype in (Q.Q4_K, Q.Q6_K):
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        blocks = random_k_blocks(values.size // block_size, qtype, rng)
        return blocks.reshape(shape[0], shape[1] // block_size * type_size)
    return gguf.quants.quantize(values, qtype)


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda q: q.name)
def test_dequantize_is_bit_exact_with_gguf(qtype):
    shape = (24, 512)
    payload = _payload(qtype, shape)
    expected = torch.from_numpy(gguf.quants.dequantize(payload, qtype).reshape(shape))
    ours = dequantize(torch.from_numpy(payload.view(np.uint8).copy()), qtype, shape)
    assert ours.dtype == torch.float32 and ours.shape == shape
    assert torch.equal(ours, expected)
    assert torch.equal(dequantize(payload, qtype, shape), expected)  # numpy input too


def _fp16(data: bytes) -> float:
    return float(np.frombuffer(data, dtype="<f2")[0])


def _q4_k_reference(block: bytes) -> list[float]:
    """ggml's dequantize_row_q4_K for one block, in float64."""
    d, dmin, scales, q = _fp16(block[0:2]), _fp16(block[2:4]), block[4:16], block[16:144]

    def scale_min(j: int) -> tuple[int, int]:  # get_scale_min_k4
        if j < 4:
            return scales[j] & 63, scales[j + 4] & 63
        return ((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4),
                (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4))

    out = []
    for chunk in range(4):  # 64 values per chunk: low nibbles of 32 bytes, then high
        (sc1, m1), (sc2, m2) = scale_min(2 * chunk), scale_min(2 * chunk + 1)
        qs = q[32 * chunk : 32 * chunk + 32]
        out += [d * sc1 * (b & 0xF) - dmin * m1 for b in qs]
        out += [d * sc2 * (b >> 4) - dmin * m2 for b in qs]
    return out


def _q6_k_reference(block: bytes) -> list[float]:
    """ggml's dequantize_row_q6_K for one block, in float64."""
    ql, qh = block[0:128], block[128:192]
    sc = np.frombuffer(block[192:208], dtype=np.int8).astype(int)
    d = _fp16(block[208:210])
    out = [0.0] * 256
    for half in range(2):
        for lane in range(32):
            is_ = half * 8 + lane // 16
            low0, low1 = ql[64 * half + lane], ql[64 * half + lane + 32]
            high = qh[32 * half + lane]
            q1 = ((low0 & 0xF) | (((high >> 0) & 3) << 4)) - 32
            q2 = ((low1 & 0xF) | (((high >> 2) & 3) << 4)) - 32
            q3 = ((low0 >> 4) | (((high >> 4) & 3) << 4)) - 32
            q4 = ((low1 >> 4) | (((high >> 6) & 3) << 4)) - 32
            base = 128 * half + lane
            out[base] = d * sc[is_] * q1
            out[base + 32] = d * sc[is_ + 2] * q2
            out[base + 64] = d * sc[is_ + 4] * q3
            out[base + 96] = d * sc[is_ + 6] * q4
    return out


@pytest.mark.parametrize(
    ("qtype", "reference"), [(Q.Q4_K, _q4_k_reference), (Q.Q6_K, _q6_k_reference)],
    ids=["Q4_K", "Q6_K"],
)
def test_k_quants_match_ggml_layout_in_float64(qtype, reference):
    blocks = random_k_blocks(12, qtype, np.random.default_rng(7))
    expected = np.array([reference(bytes(block)) for block in blocks])
    ours = dequantize(blocks, qtype, (12, 256)).double().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)


def test_dequantize_refuses_other_types_listing_the_supported_ones():
    payload = gguf.quants.quantize(np.ones((2, 32), dtype=np.float32), Q.Q5_0)
    with pytest.raises(UnsupportedModelError, match=r"Q5_0.*supported: F32, F16, BF16.*Q6_K"):
        dequantize(payload, Q.Q5_0, (2, 32))


# =================================================================== header
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_header_agrees_with_gguf_reader(written, kind):
    path, _ = written(kind, Q.Q4_K)
    _assert_header_matches_reader(path)


def _assert_header_matches_reader(path: Path) -> None:
    header = read_gguf_header(path)
    reader = gguf.GGUFReader(path)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(header.metadata) == list(fields)
    for key, field in fields.items():
        theirs, ours = field.contents(), header.metadata[key]
        if field.types[-1] == gguf.GGUFValueType.FLOAT32:  # ours: shortest float32 repr
            np.testing.assert_array_equal(np.float32(ours), np.float32(theirs), err_msg=key)
        else:
            assert ours == theirs, key
    assert [t.name for t in reader.tensors] == list(header.tensors)
    for tensor in reader.tensors:
        info = header.tensors[tensor.name]
        assert info.shape == tuple(int(d) for d in reversed(tensor.shape))
        assert (info.ggml_type, info.offset, info.nbytes) == (
            tensor.tensor_type, tensor.data_offset, tensor.n_bytes
        )


# =================================================================== round trips
def _check_hf_form(ckpt: GGUFCheckpoint, model: TinyModel) -> None:
    """Names and shapes are transformers' (from a model built from *our* config too)."""
    transformers = _transformers()
    expected = {k: tuple(v.shape) for k, v in model.state_dict.items()}
    assert {k: tuple(v.shape) for k, v in ckpt.state_dict.items()} == expected
    config = transformers.AutoConfig.for_model(**ckpt.hf_config)
    with torch.device("meta"):
        rebuilt = transformers.AutoModelForCausalLM.from_config(config)
    rebuilt_shapes = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if config.tie_word_embeddings:
        rebuilt_shapes.pop("lm_head.weight")
    assert rebuilt_shapes == expected


def _assert_near_original(stored: np.ndarray, original: np.ndarray, qtype: Q) -> None:
    """Within the rounding of `qtype`, block by block (GGUF layout; 1-D tensors are F32)."""
    ours, original = torch.from_numpy(stored), torch.from_numpy(original)
    if original.dim() == 1 or qtype == Q.F32:
        assert torch.equal(ours, original)
    elif qtype in (Q.F16, Q.BF16):
        half = torch.float16 if qtype == Q.F16 else torch.bfloat16
        assert torch.equal(ours, original.to(half).float())
    elif qtype in BLOCK_QUANTS:
        # the step between the levels of each 32-value block; rounding costs at most half
        # a step, except Q4_0, whose 16 levels reach -8 steps but only +7 (plus the fp16
        # rounding of the block scale)
        blocks = original.reshape(-1, 32)
        amax = blocks.abs().amax(dim=1, keepdim=True)
        bound = {
            Q.Q8_0: 0.5 * amax / 127,
            Q.Q4_0: amax / 8,
            Q.Q4_1: 0.5 * (blocks.amax(1, keepdim=True) - blocks.amin(1, keepdim=True)) / 15,
        }[qtype]
        error = (ours.reshape(-1, 32) - blocks).abs()
        assert bool((error <= bound + 2e-3 * amax + 1e-6).all())


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_round_trip_undoes_llama_cpp_conversion(written, llama, gpt2, kind, qtype):
    path, stored = written(kind, qtype)
    model = {"llama": llama, "gpt2": gpt2}[kind]
    ckpt = read_gguf(path)
    _check_hf_form(ckpt, model)
    # Exact: converting our tensors back the llama.cpp way gives the file's values.
    back = hf_to_gguf(model.arch, model.config, ckpt.state_dict)
    assert back.keys() == stored.keys()
    for name, values in stored.items():
        assert np.array_equal(back[name], values), name
    # ...which are the original weights, as far as the type allows (K types store random
    # blocks, not the weights).
    if qtype not in (Q.Q4_K, Q.Q6_K):
        originals = hf_to_gguf(model.arch, model.config, model.state_dict)
        for name, original in originals.items():
            _assert_near_original(stored[name], original, qtype)


def test_llama_config_is_transformers_config(written, llama):
    ckpt = read_gguf(written("llama", Q.F32)[0])
    c = llama.config
    assert ckpt.hf_config == {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": 1e-5,  # the float32 in the file, as its shortest decimal
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    assert ckpt.metadata["llama.block_count"] == 2
    assert "tokenizer.ggml.tokens" not in ckpt.metadata  # arrays are left out


def test_gpt2_config_and_tied_output(written, gpt2):
    ckpt = read_gguf(written("gpt2", Q.F32)[0])
    c = gpt2.config
    assert ckpt.hf_config == {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_positions": c.n_positions,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,  # output.weight is llama.cpp's copy of the embedding
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    assert "lm_head.weight" not in ckpt.state_dict
    assert ckpt.state_dict["transformer.h.0.attn.c_attn.weight"].shape == (256, 768)  # Conv1D


def test_gpt2_with_its_own_output_matrix_is_untied(gguf_dir, gpt2, bpe_vocab):
    tensors = hf_to_gguf("gpt2", gpt2.config, gpt2.state_dict)
    tensors["output.weight"] = tensors["output.weight"] * 2
    path = gguf_dir / "gpt2-untied.gguf"
    write_gguf(path, gpt2, bpe_vocab, tensors=tensors)
    ckpt = read_gguf(path)
    assert ckpt.hf_config["tie_word_embeddings"] is False
    expected = gpt2.state_dict["transformer.wte.weight"] * 2
    assert torch.equal(ckpt.state_dict["lm_head.weight"], expected)


def test_tied_llama_has_no_lm_head(written, llama_tied):
    ckpt = read_gguf(written("llama_tied", Q.Q4_0)[0])
    assert ckpt.hf_config["tie_word_embeddings"] is True
    assert "lm_head.weight" not in ckpt.state_dict
    _check_hf_form(ckpt, llama_tied)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.Q4_1], ids=lambda q: q.name)
def test_dtype_casts_the_float32_result(written, dtype, qtype):
    path, _ = written("llama", qtype)
    full, cast = read_gguf(path).state_dict, read_gguf(path, dtype=dtype).state_dict
    for name, tensor in cast.items():
        assert tensor.dtype == dtype
        assert torch.equal(tensor, full[name].to(dtype)), name


def test_dtype_must_be_floating(good_file):
    with pytest.raises(ValueError, match="floating"):
        read_gguf(good_file, dtype=torch.int8)


# =================================================================== vs transformers
def _transformers_tensors(path: Path) -> tuple[dict[str, torch.Tensor], object]:
    """transformers' GGUF loader (the path `from_pretrained(gguf_file=...)` takes)."""
    transformers = _transformers()
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = transformers.AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    with torch.device("meta"):  # only for its parameter names
        model = transformers.AutoModelForCausalLM.from_config(config)
    loaded = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
    return loaded["tensors"], config


def _assert_same_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    # transformers keeps GPT-2's copied output matrix as lm_head; we tie it instead
    if "lm_head.weight" in theirs and "lm_head.weight" not in ours:
        embedding = "transformer.wte.weight" if "transformer.wte.weight" in ours else (
            "model.embed_tokens.weight")
        assert torch.equal(theirs["lm_head.weight"], ours[embedding])
        theirs = {k: v for k, v in theirs.items() if k != "lm_head.weight"}
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert tensor.shape == theirs[name].shape, name
        assert (tensor - theirs[name]).abs().max().item() <= 1e-6, name


@pytest.mark.parametrize(
    ("kind", "qtype"),
    [("llama", Q.Q4_K), ("llama", Q.F16), ("llama_tied", Q.Q8_0), ("gpt2", Q.Q6_K),
     ("gpt2", Q.Q4_1)],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_state_dict_matches_transformers(written, kind, qtype):
    path, _ = written(kind, qtype)
    theirs, _ = _transformers_tensors(path)
    _assert_same_tensors(read_gguf(path).state_dict, theirs)


@pytest.mark.parametrize("vocab_kind", ["spm", "bpe-gpt2", "bpe-llama3"])
def test_tokenizer_matches_transformers(gguf_dir, llama, gpt2, spm_vocab, bpe_vocab, vocab_kind):
    transformers = _transformers()
    model, vocab = {
        "spm": (llama, spm_vocab),
        "bpe-gpt2": (gpt2, bpe_vocab),
        # tokenizer.ggml.pre names a split regex transformers honours
        "bpe-llama3": (gpt2, dataclasses.replace(bpe_vocab, pre="llama-bpe")),
    }[vocab_kind]
    path = gguf_dir / f"tok-{vocab_kind}.gguf"
    write_gguf(path, model, vocab)
    ours = read_gguf(path).tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    _assert_same_tokenizer(ours, theirs)


def _assert_same_tokenizer(ours, theirs) -> None:
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(ours, name) == getattr(theirs, name), name
    for text in SAMPLES:
        for specials in (True, False):
            ids = ours.encode(text, add_special_tokens=specials)
            assert ids == theirs(text, add_special_tokens=specials)["input_ids"], text
        for skip in (True, False):
            expected = theirs.decode(ids, skip_special_tokens=skip)
            assert ours.decode(ids, skip_special_tokens=skip) == expected, text
    for messages in CONVERSATIONS:
        expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert ours.apply_chat_template(messages, add_generation_prompt=True) == expected


def test_byte_level_tokenizer_round_trips_any_text(written):
    tokenizer = read_gguf(written("gpt2", Q.F32)[0]).tokenizer
    for text in SAMPLES:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.chat_template == CHATML
    assert tokenizer.encode("<|im_start|>") == [1]  # CONTROL: one special token
    assert len(tokenizer.encode("<think>")) == 1  # USER_DEFINED: an added token
    assert tokenizer.decode([1, 2], skip_special_tokens=True) == ""


def test_sentencepiece_tokenizer_adds_bos_and_falls_back_to_bytes(written):
    tokenizer = read_gguf(written("llama", Q.F32)[0]).tokenizer
    ids = tokenizer.encode("Hello 🤗")
    assert ids[0] == tokenizer.bos_token_id == 1  # add_bos_token defaults on for "llama"
    assert "<0xF0>" in [tokenizer.backend.id_to_token(i) for i in ids]  # 🤗 is not a piece
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hello 🤗"


# =================================================================== rope scaling
def _with_metadata(gguf_dir: Path, model: TinyModel, vocab: TinyVocab, name: str, add,
                   tensors: dict[str, np.ndarray] | None = None) -> Path:
    path = gguf_dir / name
    write_gguf(path, model, vocab, metadata=add, tensors=tensors)
    return path


def test_linear_and_yarn_rope_scaling(gguf_dir, llama, spm_vocab):
    def linear(w):
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(4.0)

    def yarn(w):
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(2.0)
        w.add_rope_scaling_orig_ctx_len(64)

    path = _with_metadata(gguf_dir, llama, spm_vocab, "linear.gguf", linear)
    assert read_gguf(path).hf_config["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    path = _with_metadata(gguf_dir, llama, spm_vocab, "yarn.gguf", yarn)
    assert read_gguf(path).hf_config["rope_scaling"] == {
        "rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64,
    }


def _llama3_rope_freqs(theta: float, head_dim: int, factor: float) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors, for Llama 3.1."""
    low_freq_factor, high_freq_factor, old_context_len = 1.0, 4.0, 8192
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    rope_factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            rope_factors.append(1)
        elif wavelen > low_freq_wavelen:
            rope_factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (
                high_freq_factor - low_freq_factor)
            rope_factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(rope_factors, dtype=np.float32)


def _reconfigured(model: TinyModel, **changes) -> TinyModel:
    """The same tensors under a config with `changes` (to write lying metadata)."""
    config = model.config.__class__(**{**model.config.to_dict(), **changes})
    return dataclasses.replace(model, config=config)


def test_llama3_rope_freqs_become_rope_scaling(gguf_dir, llama, spm_vocab):
    # theta 500000 (Llama 3's) puts frequencies in each of the three bands at head_dim 64
    theta = 500000.0
    llama3 = _reconfigured(llama, rope_parameters={"rope_type": "default", "rope_theta": theta})
    tensors = hf_to_gguf("llama", llama.config, llama.state_dict)
    tensors["rope_freqs.weight"] = _llama3_rope_freqs(theta, 64, 8.0)
    path = _with_metadata(gguf_dir, llama3, spm_vocab, "llama3.gguf", None, tensors)
    ckpt = read_gguf(path)
    assert ckpt.hf_config["rope_theta"] == theta
    assert ckpt.hf_config["rope_scaling"] == {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
    }
    assert "rope_freqs.weight" not in ckpt.state_dict

    tensors["rope_freqs.weight"] = tensors["rope_freqs.weight"][::-1].copy()
    path = _with_metadata(gguf_dir, llama3, spm_vocab, "llama3-odd.gguf", None, tensors)
    _fails(path, UnsupportedModelError, "rope_freqs", "Llama 3")


def test_unknown_rope_scaling_is_refused(gguf_dir, llama, spm_vocab):
    def longrope(w):
        w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
        w.add_rope_scaling_factor(4.0)

    path = _with_metadata(gguf_dir, llama, spm_vocab, "longrope.gguf", longrope)
    with pytest.raises(UnsupportedModelError, match=r"'longrope'.*linear, yarn"):
        read_gguf(path)


# =================================================================== bad input
def _fails(path: Path, error: type[Exception], *patterns: str) -> str:
    with pytest.raises(error) as info:
        read_gguf(path)
    message = str(info.value)
    assert str(path) in message
    for pattern in patterns:
        assert pattern in message, (pattern, message)
    return message


def test_missing_file(tmp_path):
    _fails(tmp_path / "nope.gguf", CheckpointError, "no such file")


def test_directory_and_empty_file(tmp_path):
    _fails(tmp_path, CheckpointError, "directory")
    (tmp_path / "empty.gguf").write_bytes(b"")
    _fails(tmp_path / "empty.gguf", CheckpointError, "empty")


def test_not_a_gguf_file(tmp_path, good_file):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + good_file.read_bytes()[4:])
    _fails(path, CheckpointError, "not a GGUF file", "b'PK\\x03\\x04'")
    path.write_bytes(b"GG")
    _fails(path, CheckpointError, "not a GGUF file")


def test_truncated_tensor_data(tmp_path, good_file):
    data = good_file.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: len(data) * 2 // 3])
    _fails(path, CheckpointError, "truncated", "tensor 'blk.", "ends at byte")


@pytest.mark.parametrize("cut", [6, 20, 30, 60, 5000, -1])
def test_truncated_header(tmp_path, good_file, cut):
    header = read_gguf_header(good_file)
    end_of_table = min(info.offset for info in header.tensors.values()) - 1
    path = tmp_path / "cut.gguf"
    path.write_bytes(good_file.read_bytes()[: end_of_table if cut == -1 else cut])
    _fails(path, CheckpointError, "truncated")


def _patched(tmp_path: Path, good_file: Path, offset: int, fmt: str, value) -> Path:
    data = bytearray(good_file.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path = tmp_path / "patched.gguf"
    path.write_bytes(bytes(data))
    return path


# Byte offsets in a GGUFWriter file: magic 0, version 4, tensor count 8, key/value
# count 16; then the first key/value, general.architecture: key length 24, key 32-52,
# value type 52, value length 56, value 64.
@pytest.mark.parametrize(
    ("offset", "fmt", "value", "expected"),
    [
        (4, "<I", 7, "unsupported GGUF version 7"),
        (4, ">I", 3, "big-endian"),
        (8, "<Q", 2**40, "more than a"),
        (16, "<Q", 2**50, "more than a"),
        (24, "<Q", 2**60, "truncated or corrupt"),
        (52, "<I", 99, "unknown value type 99"),
        (56, "<Q", 2**33, "truncated or corrupt"),
        (32, "<B", 0xFF, "not UTF-8"),
    ],
    ids=["version", "big-endian", "tensor-count", "kv-count", "key-length", "value-type",
         "value-length", "utf8"],
)
def test_corrupt_header(tmp_path, good_file, offset, fmt, value, expected):
    path = _patched(tmp_path, good_file, offset, fmt, value)
    _fails(path, CheckpointError, expected)


def test_corrupt_tensor_table(tmp_path, good_file):
    data = good_file.read_bytes()
    name = b"token_embd.weight"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)  # its n_dims
    _fails(_patched(tmp_path, good_file, at, "<I", 9), CheckpointError, "9 dimensions")
    # the row length (first dim) no longer a multiple of Q8_0's 32
    _fails(_patched(tmp_path, good_file, at + 4, "<Q", 250), CheckpointError, "block size 32")
    _fails(_patched(tmp_path, good_file, at + 20, "<I", 999), UnsupportedModelError,
           "type 999", "supported: F32")
    _fails(_patched(tmp_path, good_file, at + 24, "<Q", 7), CheckpointError, "unaligned")


def _tensor_table(data: bytes, header: object) -> tuple[int, int]:
    """Where a GGUFWriter file's tensor table starts and where the data section starts."""
    first = next(iter(header.tensors))
    start = data.index(struct.pack("<Q", len(first)) + first.encode())
    return start, min(info.offset for info in header.tensors.values())


def _flipped(data: bytes, rng: np.random.Generator, low: int, high: int) -> bytes:
    mutated = bytearray(data)
    for at in rng.integers(low, high, rng.integers(1, 4)):
        mutated[at] = int(rng.integers(0, 256))
    return bytes(mutated)


def _retyped_or_moved(data: bytes, header: object, rng: np.random.Generator) -> bytes:
    """One tensor given another readable type, or another aligned offset in the data."""
    names = list(header.tensors)
    at = _entry(data, names[int(rng.integers(len(names)))])
    type_at = at + 4 + 8 * struct.unpack_from("<I", data, at)[0]
    mutated = bytearray(data)
    if rng.random() < 0.5:
        struct.pack_into("<I", mutated, type_at, int(rng.choice(ALL_TYPES)))
    else:
        data_size = len(data) - min(info.offset for info in header.tensors.values())
        struct.pack_into("<Q", mutated, type_at + 4, 32 * int(rng.integers(data_size // 32)))
    return bytes(mutated)


def test_fuzzed_files_are_refused_or_load_the_same_tensors(tmp_path, good_file):
    """Random truncations and header changes: refused with a zenlm error naming the
    file, or loaded with exactly the original tensors, never with other (garbage) ones.

    Besides random byte flips anywhere in the header, the fuzzing targets the tensor
    table, whose types and offsets decide which bytes become which tensor.
    """
    data = good_file.read_bytes()
    header = read_gguf_header(good_file)
    table, data_start = _tensor_table(data, header)
    original = read_gguf(good_file).state_dict
    rng = np.random.default_rng(0)
    path = tmp_path / "fuzz.gguf"
    variants = [data[: int(cut)] for cut in rng.integers(0, len(data), 40)]
    variants += [_flipped(data, rng, 0, data_start) for _ in range(150)]
    variants += [_flipped(data, rng, table, data_start) for _ in range(100)]
    variants += [_retyped_or_moved(data, header, rng) for _ in range(100)]
    outcomes = {"loaded": 0, "refused": 0}
    for variant in variants:
        path.write_bytes(variant)
        try:
            loaded = read_gguf(path).state_dict
        except (CheckpointError, UnsupportedModelError) as exc:
            assert str(path) in str(exc)
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        assert loaded.keys() == original.keys()
        for name, tensor in original.items():
            assert torch.equal(loaded[name], tensor), name
    print(f"\nfuzzed GGUF files: {outcomes}")
    assert outcomes["refused"] >= 40


def _entry(data: bytes, name: str) -> int:
    """Byte offset of tensor `name`'s n_dims field in the tensor table."""
    return data.index(struct.pack("<Q", len(name)) + name.encode()) + 8 + len(name)


@pytest.mark.parametrize("tensor", ["blk.0.attn_q.weight", "output.weight"])
@pytest.mark.parametrize(
    ("field", "value"),
    [("type", Q.Q4_0), ("type", Q.Q4_1), ("offset", 0), ("offset", -32), ("offset", 32)],
    ids=["type-Q4_0", "type-Q4_1", "offset-0", "offset-back", "offset-forward"],
)
def test_a_tensor_moved_or_retyped_in_the_header_is_refused(tmp_path, good_file, tensor, field,
                                                            value):
    """Q8_0 -> Q4_x shrinks a tensor (the next one no longer follows it); a new offset makes
    it overlap its neighbours. Read as they claim, they would be garbage."""
    data = good_file.read_bytes()
    at = _entry(data, tensor)
    n_dims = struct.unpack_from("<I", data, at)[0]
    type_at = at + 4 + 8 * n_dims
    if field == "type":
        path = _patched(tmp_path, good_file, type_at, "<I", int(value))
    else:
        offset = struct.unpack_from("<Q", data, type_at + 4)[0]
        path = _patched(tmp_path, good_file, type_at + 4, "<Q", value if value == 0 else
                        offset + value)
    _fails(path, CheckpointError, f"'{tensor}'")


def test_shape_that_contradicts_hyperparameters(gguf_dir, llama, spm_vocab):
    tensors = hf_to_gguf("llama", llama.config, llama.state_dict)
    path = gguf_dir / "wrong-ffn.gguf"
    write_gguf(path, _reconfigured(llama, intermediate_size=384), spm_vocab, tensors=tensors)
    _fails(path, CheckpointError, "'blk.0.ffn_", "(512, 256)", "(384, 256)", "hyperparameters")

    path = gguf_dir / "wrong-kv-heads.gguf"
    write_gguf(path, _reconfigured(llama, num_key_value_heads=4), spm_vocab, tensors=tensors)
    _fails(path, CheckpointError, "'blk.0.attn_k.weight'", "(128, 256)", "(256, 256)")


def test_missing_tensor(gguf_dir, llama, spm_vocab):
    tensors = hf_to_gguf("llama", llama.config, llama.state_dict)
    del tensors["blk.1.ffn_down.weight"]
    path = gguf_dir / "missing.gguf"
    write_gguf(path, llama, spm_vocab, tensors=tensors)
    _fails(path, CheckpointError, "missing", "model.layers.1.mlp.down_proj.weight")


def test_unexpected_tensor(gguf_dir, llama, spm_vocab):
    tensors = hf_to_gguf("llama", llama.config, llama.state_dict)
    tensors["blk.0.attn_sinks.weight"] = np.zeros(4, dtype=np.float32)
    path = gguf_dir / "extra.gguf"
    write_gguf(path, llama, spm_vocab, tensors=tensors)
    _fails(path, UnsupportedModelError, "'blk.0.attn_sinks.weight'")


def test_unsupported_tensor_type_names_tensor_type_and_alternatives(gguf_dir, llama, spm_vocab):
    path = gguf_dir / "q5_0.gguf"
    write_gguf(path, llama, spm_vocab, Q.Q5_0)
    message = _fails(path, UnsupportedModelError, "'token_embd.weight'", "Q5_0")
    assert all(name in message for name in SUPPORTED_TENSOR_TYPES)


def test_unknown_architecture_names_it_and_the_supported_ones(gguf_dir, llama, spm_vocab):
    path = gguf_dir / "mamba.gguf"
    write_gguf(path, llama, spm_vocab, architecture="mamba")
    _fails(path, UnsupportedModelError, "'mamba'", "gpt2, llama")


def test_unknown_tokenizer_model(gguf_dir, llama, spm_vocab):
    path = gguf_dir / "bert-vocab.gguf"
    write_gguf(path, llama, dataclasses.replace(spm_vocab, model="bert"))
    _fails(path, UnsupportedModelError, "tokenizer model 'bert'", "gpt2, llama")


def test_missing_or_mistyped_metadata(tmp_path, good_file):
    data = good_file.read_bytes()
    path = tmp_path / "renamed.gguf"
    path.write_bytes(data.replace(b"llama.block_count", b"llama.block_cXunt", 1))
    _fails(path, CheckpointError, "'llama.block_count'", "required")
    # the value's type: UINT32 -> FLOAT32 (the 4 bytes then read as a tiny float)
    at = data.index(b"llama.block_count") + len(b"llama.block_count")
    path = _patched(tmp_path, good_file, at, "<I", gguf.GGUFValueType.FLOAT32)
    _fails(path, CheckpointError, "'llama.block_count' should be int")


# =================================================================== SmolLM2
@pytest.fixture(scope="module")
def smol(smollm2_gguf) -> tuple[GGUFCheckpoint, None]:
    return read_gguf(smollm2_gguf), None


@pytest.fixture(scope="module")
def smol_transformers(smollm2_gguf):
    """transformers' dequantized SmolLM2 tensors and config (~15 s, once)."""
    return _transformers_tensors(smollm2_gguf)


def test_smollm2_has_the_published_parameter_count(smol):
    """134.5M parameters, counted from SmolLM2-135M's config (load speed: benchmarks/decode.py)."""
    ckpt, _ = smol
    d, layers, vocab, ff, q_rows, kv_rows = 576, 30, 49152, 1536, 9 * 64, 3 * 64
    block = 2 * d + d * q_rows + 2 * d * kv_rows + q_rows * d + 3 * d * ff
    assert sum(t.numel() for t in ckpt.state_dict.values()) == vocab * d + d + layers * block


def test_smollm2_state_dict_matches_transformers(smol, smol_transformers):
    ckpt, _ = smol
    theirs, _ = smol_transformers
    assert len(ckpt.state_dict) == 272  # 30 layers x 9 + embedding + norm; tied: no lm_head
    _assert_same_tensors(ckpt.state_dict, theirs)


def test_smollm2_config_matches_transformers(smol, smol_transformers):
    ckpt, _ = smol
    _, config = smol_transformers
    ours = ckpt.hf_config
    for key in ("model_type", "vocab_size", "hidden_size", "intermediate_size",
                "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                "max_position_embeddings", "tie_word_embeddings", "bos_token_id",
                "eos_token_id", "pad_token_id", "attention_bias", "mlp_bias", "hidden_act"):
        assert ours[key] == getattr(config, key), key
    assert ours["rms_norm_eps"] == pytest.approx(config.rms_norm_eps, rel=1e-6)
    assert ours["rope_theta"] == config.rope_parameters["rope_theta"] == 100000.0
    assert ours["rms_norm_eps"] == 1e-5  # SmolLM2's config.json value
    assert ours["architectures"] == ["LlamaForCausalLM"]


@pytest.fixture(scope="module")
def smol_hf_tokenizer(smollm2_gguf):
    transformers = _transformers()
    return transformers.AutoTokenizer.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name
    )


def test_smollm2_tokenizer_and_chat_template_match_transformers(smol, smol_hf_tokenizer):
    _assert_same_tokenizer(smol[0].tokenizer, smol_hf_tokenizer)


def test_smollm2_tokenizer_round_trips(smol):
    tokenizer = smol[0].tokenizer
    for text in SAMPLES:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode("<|im_start|>user") == [1, 4093]
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert not tokenizer.add_bos  # tokenizer.ggml.add_bos_token = false


def test_smollm2_header_agrees_with_gguf_reader(smollm2_gguf):
    _assert_header_matches_reader(smollm2_gguf)


def _mapped_rss_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path`, as the OS counts them."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc")
def test_released_tensors_leave_the_resident_set_and_stay_readable(tmp_path):
    """A read tensor's file pages stop counting in RSS (a load's peak held the whole file)."""
    path = tmp_path / "big.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    rng = np.random.default_rng(0)
    expected = {"a": rng.standard_normal((512, 1024)).astype(np.float32),
                "b": rng.standard_normal((256, 1024)).astype(np.float16)}
    for name, values in expected.items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    file = GGUFFile.open(path)
    infos = list(file.header.tensors.values())
    first = [file.values(info, torch.float32)[0].copy() for info in infos]
    assert _mapped_rss_kb(path) > 2 * 1024  # both tensors' 2.5 MB were touched
    for info in infos:
        file.release(info)
    assert _mapped_rss_kb(path) <= 8  # the header's page or two
    for info, values, name in zip(infos, first, expected, strict=True):
        again = file.values(info, torch.float32)[0]
        assert np.array_equal(again, values) and np.array_equal(values, expected[name])


# =================================================================== loading part by part
@pytest.fixture(scope="module")
def grouped_by_kind(gguf_dir, llama, spm_vocab) -> Path:
    """The llama file with its tensors grouped by kind across blocks (every attn_norm,
    then every attn_q, ...), as some writers order them."""
    tensors = hf_to_gguf(llama.arch, llama.config, llama.state_dict)
    kind_first = sorted(tensors, key=lambda name: name.split(".")[2:] if name.startswith("blk.")
                        else ["~"])  # blocks by kind first, the others last
    path = gguf_dir / "llama-grouped-by-kind.gguf"
    write_gguf(path, llama, spm_vocab, Q.Q8_0, tensors={n: tensors[n] for n in kind_first})
    return path


@pytest.mark.parametrize("kind", ["llama", "llama_tied", "gpt2", "llama grouped by kind"])
def test_a_quantized_load_converts_each_block_before_reading_the_next(written, kind,
                                                                     grouped_by_kind,
                                                                     monkeypatch):
    """`zenlm.load` quantizes each block, and the head, as soon as its tensors are read
    (so a 1.1B model never holds all its float32 weights), whatever the file's tensor
    order, and the result is the model a load of every tensor first, then `quantize`,
    gives: the same logits, exactly."""
    import zenlm
    import zenlm.api
    from zenlm.config import from_hf_config
    from zenlm.io.gguf import GGUFModelFile
    from zenlm.io.hf import model_from_hf_tensors
    from zenlm.nn.cpu_attention import use_cpu_attention
    from zenlm.quant import quantize

    path = grouped_by_kind if kind.endswith("by kind") else written(kind, Q.Q8_0)[0]
    if kind.endswith("by kind"):  # the file is what the test says it is
        names = list(GGUFFile.open(path).header.tensors)
        assert names.index("blk.1.attn_norm.weight") < names.index("blk.0.attn_q.weight")
    events: list[tuple[str, str]] = []
    read, convert = GGUFModelFile.tensors, zenlm.api.quantize_part

    def reading(self):  # noqa: ANN001, ANN202
        for name, tensor in read(self):
            events.append(("read", name))
            yield name, tensor

    def converting(model, part, mode):  # noqa: ANN001, ANN202
        events.append(("convert", part))
        convert(model, part, mode)

    monkeypatch.setattr(GGUFModelFile, "tensors", reading)
    monkeypatch.setattr(zenlm.api, "quantize_part", converting)
    streamed = zenlm.load(path, quantize="int8").model
    reads = [(n, name) for n, (what, name) in enumerate(events) if what == "read"]
    heads = ("lm_head.weight", "model.embed_tokens.weight", "transformer.wte.weight")
    completing = {f"blocks.{i}": max(n for n, name in reads if _block_of(name) == i)
                  for i in range(streamed.config.n_layers)}
    completing["lm_head"] = max(n for n, name in reads if name in heads)  # tied: the embedding
    for part, last_read in completing.items():
        converted = events.index(("convert", part))
        assert last_read < converted  # its tensors first, then straight to conversion:
        assert all(what == "convert" for what, _ in events[last_read + 1:converted]), part
    for i in range(streamed.config.n_layers):  # and no other block's floats held meanwhile
        first_read = min(n for n, name in reads if _block_of(name) == i)
        held = {_block_of(name) for n, name in reads if first_read <= n < completing[f"blocks.{i}"]}
        assert held == {i}, f"block {i} read alongside {held - {i}}"
    checkpoint = read_gguf(path)
    whole = model_from_hf_tensors(from_hf_config(checkpoint.hf_config),
                                  checkpoint.state_dict, path)
    whole = quantize(use_cpu_attention(whole), "int8")
    ids = torch.randint(0, streamed.config.vocab_size, (2, 9))
    with torch.no_grad():
        assert torch.equal(streamed(ids), whole(ids))


def _block_of(hf_name: str) -> int | None:
    """N of a transformers tensor name in block N (`model.layers.N.`, `transformer.h.N.`)."""
    parts = hf_name.split(".")
    for before, number in zip(parts, parts[1:], strict=False):
        if before in ("layers", "h") and number.isdigit():
            return int(number)
    return None
