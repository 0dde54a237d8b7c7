"""Weight-only quantization: layers against their dequantized weights, and model quality."""

from __future__ import annotations

import math

import pytest
import torch

import zenlm
from zenlm.cpu import cpu_info
from zenlm.generate import GenerationConfig, generate, generate_batch
from zenlm.kernels.layout import pack_codes
from zenlm.quant import Int4Linear, Int8Linear, QuantizedEmbedding, quantize
from zenlm.quant.weights import PROMPT_ROWS, SLICE_VALUES, quantize_groups

from ..models.tiny_hf import VOCAB, tiny_hf_model


def test_int8_linear_equals_its_dequantized_weight():
    w, x = torch.randn(96, 64), torch.randn(5, 64)
    layer = Int8Linear(w, torch.randn(96))
    expected = x @ layer.dequantized().T + layer.bias.float()
    got = layer(x.bfloat16()).float()
    assert torch.allclose(got, expected, rtol=2e-2, atol=5e-2)
    assert (layer.dequantized() - w).abs().max() <= w.abs().max() / 127


def test_int4_groups_are_min_max_asymmetric():
    w = torch.randn(64, 128)
    q, scales, zeros = quantize_groups(w, 32, refits=0)
    dequant = ((q.view(64, 4, 32).float() - 8) * scales[..., None] + zeros[..., None]).view(64, 128)
    assert (dequant - w).abs().max() <= scales.max() / 2 + 1e-6
    assert q.min() == 0 and q.max() == 15


def test_int4_linear_stores_its_groups_codes_scales_and_mins():
    w = torch.randn(96, 128)
    layer = Int4Linear(w, None)
    q, scales, zeros = quantize_groups(w, 32)
    back = ((q.view(96, 4, 32).float() - 8) * scales[..., None] + zeros[..., None]).view(96, 128)
    # float16 scales and mins: within a few float16 roundings of the float32 grid
    assert (layer.dequantized() - back).abs().max() <= 16 * 2**-11 * back.abs().max()
    assert (layer.dequantized() - w).abs().max() <= scales.max() * 0.6


def test_int4_linear_quantized_in_row_slices_equals_the_whole_weight_at_once():
    w = torch.randn(SLICE_VALUES // 64 + 100, 64)
    q, scales, zeros = quantize_groups(w, 32)
    layer = Int4Linear(w, None)
    assert torch.equal(layer.codes, pack_codes(q))
    assert torch.equal(layer.scales, scales.half())
    assert torch.equal(layer.mins, (zeros - 8 * scales).half())


def test_int8_linear_quantized_in_row_slices_is_symmetric_per_row():
    w = torch.randn(SLICE_VALUES // 64 + 100, 64, dtype=torch.float64)
    layer = Int8Linear(w.float(), None, dtype=torch.float32)
    scales = w.abs().amax(dim=1) / 127.0  # the formula, in float64
    assert torch.allclose(layer.scales.double(), scales, rtol=1e-6)
    assert (layer.weight.double() - w / scales[:, None]).abs().max() <= 0.5 + 1e-4


@pytest.mark.parametrize("kind", [Int4Linear, Int8Linear])
def test_quantized_layers_stack_exactly_like_their_stacked_float_weights(kind):
    """q, k and v are fused after quantizing: the result must be the fused float
    weight's quantization, buffer for buffer."""
    weights = [torch.randn(n, 128) for n in (64, 16, 16)]
    biases = [torch.randn(n) for n in (64, 16, 16)]
    fused = kind.stacked([kind(w, b) for w, b in zip(weights, biases, strict=True)])
    whole = kind(torch.cat(weights), torch.cat(biases))
    assert fused.state_dict().keys() == whole.state_dict().keys()
    for name, value in whole.state_dict().items():
        assert torch.equal(fused.state_dict()[name], value), name
    assert (fused.in_features, fused.out_features) == (128, 96)
    x = torch.randn(3, 128)
    assert torch.equal(fused(x), whole(x))


@pytest.mark.parametrize("rows", [PROMPT_ROWS - 1, PROMPT_ROWS, 300])
def test_int4_linear_on_prompts_and_on_decode_steps_multiplies_by_its_weight(rows):
    """Below PROMPT_ROWS the kernel (int8 activation blocks); from it on, bfloat16 where
    the CPU has it natively (elsewhere the kernel at every length)."""
    layer = Int4Linear(torch.randn(96, 576), torch.randn(96))
    x = torch.randn(rows, 576)
    expected = x.double() @ layer.dequantized().double().T + layer.bias.double()
    got = layer(x[None])[0].double()
    assert got.shape == (rows, 96)
    assert (got - expected).norm() <= 0.02 * expected.norm()


def test_int4_refit_lowers_the_error_of_min_max_groups():
    w = torch.randn(64, 256)

    def error(refits: int) -> float:
        q, scales, zeros = quantize_groups(w, 32, refits=refits)
        back = (q.view(64, 8, 32).float() - 8) * scales[..., None] + zeros[..., None]
        return ((back.view(64, 256) - w) ** 2).sum().item()

    assert error(2) < 0.95 * error(0)


@pytest.mark.parametrize("make", [Int8Linear, Int4Linear])
def test_embedding_rows_are_the_heads_dequantized_rows(make):
    head = make(torch.randn(192, 640), None)
    ids = torch.tensor([[0, 31, 32, 63], [64, 100, 191, 5]])
    rows = QuantizedEmbedding(head)(ids)
    assert rows.shape == (2, 4, 640)
    assert torch.equal(rows, head.dequantized()[ids])


def test_int4_needs_inputs_in_multiples_of_64():
    with pytest.raises(ValueError, match="divisible by 64, got 96"):
        Int4Linear(torch.randn(8, 96), None)


def test_q4_1_blocks_round_trip_exactly():
    """Weights that are Q4_1 blocks (w = d*q + m) re-quantize to the same values."""
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (32, 64), generator=g)
    q[:, ::32] = 0  # every block uses the full range, as llama.cpp's quantizer makes it
    q[:, 1::32] = 15
    d = torch.rand(32, 2, generator=g).half().float() / 10
    m = -torch.rand(32, 2, generator=g).half().float()
    w = (q.view(32, 2, 32) * d[..., None] + m[..., None]).view(32, 64)
    q2, scales, zeros = quantize_groups(w, 32)
    assert torch.equal(q2, q.to(torch.int32))
    back = ((q2.view(32, 2, 32).float() - 8) * scales[..., None] + zeros[..., None]).view(32, 64)
    assert (back - w).abs().max() < 1e-6


@pytest.mark.parametrize("mode", ["none", "bf16", "int8", "int4"])
def test_quantized_model_computes_with_its_dequantized_weights(mode, tmp_path):
    """A quantized model equals a float32 model holding its dequantized weights, up to
    the rounding of the matmuls' inputs: bfloat16 for int8, int8 blocks of 32 for int4
    (the kernel's own arithmetic is tested in tests/kernels; a wrong layout or scale
    errs by ~100%)."""
    hf = tiny_hf_model("llama")
    hf.save_pretrained(tmp_path)
    ids = torch.randint(3, VOCAB, (2, 20))
    fast = zenlm.load(tmp_path, quantize=mode)
    reference = quantize(zenlm.load(tmp_path, quantize=None).model, "none")  # fused, float32
    layers = dict(reference.named_modules())
    with torch.no_grad():
        for name, module in fast.model.named_modules():
            if isinstance(module, (Int8Linear, Int4Linear)):  # an untied embedding too
                target = layers.get(name) or layers[name.removesuffix(".table")]
                target.weight.copy_(module.dequantized())
    expected = reference(ids)
    rel = ((fast.logits(ids) - expected).norm() / expected.norm()).item()
    bound = {"none": 1e-6, "bf16": 0.03, "int8": 0.03, "int4": 0.08}[mode]
    assert rel < bound, f"{mode}: relative logit error {rel}"
    prompt = ids[0, :5].tolist()
    assert len(generate(fast.model, prompt, GenerationConfig(max_new_tokens=8)).token_ids) == 8


def test_an_int4_model_holds_each_weight_once_in_4_bits_plus_fp16_groups(tmp_path):
    """What "weights" are for docs/benchmarks.md's memory target, counted from the config.

    Each weight matrix is 4-bit codes (0.5 byte a weight) plus a float16 scale and min per
    group of 32 (4 bytes / 32 weights); the tied embedding is the head's codes, not a
    copy; only the norms (and RoPE's frequencies) stay float32. No float matrix is kept.
    """
    hf = tiny_hf_model("llama-tied-mqa", intermediate_size=128)  # every K a multiple of 64
    hf.save_pretrained(tmp_path)
    c = hf.config
    d, kv = c.hidden_size, c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    per_block = d * (d + 2 * kv) + d * d + 2 * c.intermediate_size * d + d * c.intermediate_size
    matrices = c.vocab_size * d + c.num_hidden_layers * per_block  # the embedding counted once
    floats = (2 * c.num_hidden_layers + 1) * d + (d // c.num_attention_heads) // 2
    model = zenlm.load(tmp_path, quantize="int4").model
    storages = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        storages[tensor.untyped_storage().data_ptr()] = tensor
        assert tensor.ndim < 2 or not tensor.is_floating_point() or tensor.dtype == torch.float16
    assert sum(t.untyped_storage().nbytes() for t in storages.values()) == (
        matrices // 2 + matrices // 32 * 2 * 2 + 4 * floats)
    assert model.embed.weight.data_ptr() == model.lm_head.codes.data_ptr()


def test_an_untied_embedding_is_quantized_like_the_head(tmp_path):
    """An untied model keeps no float matrix either: its embedding (262 MB in float32
    for a 1.1B Llama) becomes int4 rows of its own, looked up exactly as dequantized."""
    hf = tiny_hf_model("llama", intermediate_size=128)
    hf.save_pretrained(tmp_path)
    model = zenlm.load(tmp_path, quantize="int4").model
    assert isinstance(model.embed, QuantizedEmbedding) and model.embed.table is not model.lm_head
    assert not [name for name, t in [*model.named_parameters(), *model.named_buffers()]
                if t.ndim >= 2 and t.dtype == torch.float32]
    ids = torch.tensor([[0, 5, VOCAB - 1]])
    table = model.embed.table.dequantized()  # (V, D)
    assert torch.equal(model.embed(ids), table[ids])
    original = hf.get_input_embeddings().weight.detach()
    assert ((table - original).norm() / original.norm()).item() < 0.1


def test_unknown_quantize_mode_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="int4"):
        zenlm.load(tmp_path, quantize="int3")


# --------------------------------------------------------------- real model quality
def _perplexity(lm, ids: torch.Tensor, chunk: int | None = None) -> float:
    """Perplexity of rows `ids`, fed as prompts, or `chunk` tokens at a time through the
    KV cache (as decoding feeds them: int4's kernel path rather than its prompt path)."""
    inputs = ids[:, :-1]
    if chunk is None:
        logits = lm.logits(inputs).float()
    else:
        cache = lm.model.new_cache(*inputs.shape)
        with torch.no_grad():
            logits = torch.cat([lm.model(inputs[:, s:s + chunk], cache=cache).float()
                                for s in range(0, inputs.shape[1], chunk)], dim=1)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                            ids[:, 1:].reshape(-1))
    return math.exp(nll.item())


@pytest.fixture(scope="module")
def shakespeare_ids(shared_data, smollm2_gguf):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    lm = zenlm.load(smollm2_gguf, quantize=None)
    ids = lm.tokenizer.encode(text[:20000], add_special_tokens=False)
    return torch.tensor(ids[: 4 * 256]).view(4, 256)


@pytest.fixture(scope="module")
def fp32_reference(smollm2_gguf, shakespeare_ids):
    lm = zenlm.load(smollm2_gguf, quantize=None)
    return lm, _perplexity(lm, shakespeare_ids)


# The bound of `auto` (zenlm.quant.auto): no mode it may pick is worse than +3%.
@pytest.mark.parametrize("mode,tolerance", [("int8", 0.01), ("int4", 0.03), ("bf16", 0.01),
                                            ("auto", 0.03)])
def test_perplexity_on_tinyshakespeare(smollm2_gguf, shakespeare_ids, fp32_reference, mode,
                                       tolerance):
    """As prompts and as decoding (8 tokens x 4 rows (2 for emulated bf16) per step: below
    PROMPT_ROWS)."""
    lm, reference = fp32_reference
    ids = shakespeare_ids
    if mode == "bf16" and not cpu_info().native_bf16:
        # Emulated bfloat16 (no AVX512-BF16 or AMX) runs ~7x slower than float32: half
        # the rows, against float32 on the same rows, keeps the check and halves its cost.
        ids = shakespeare_ids[:2]
        reference = _perplexity(lm, ids)
    fast = zenlm.load(smollm2_gguf, quantize=mode)
    for chunk in (None, 8):
        ppl = _perplexity(fast, ids, chunk)
        print(f"perplexity fp32 {reference:.3f}, {mode} fed {chunk or 'whole'}: {ppl:.3f} "
              f"({ppl / reference - 1:+.2%})")
        assert abs(ppl / reference - 1) <= tolerance


def test_int8_greedy_agrees_with_fp32(smollm2_gguf, shakespeare_ids, fp32_reference):
    """At each of 5 x 64 positions of fp32's greedy continuations, int8's greedy choice
    (given the same text so far) is the same token on >= 90% of them."""
    lm, _ = fp32_reference
    fast = zenlm.load(smollm2_gguf, quantize="int8")
    config = GenerationConfig(max_new_tokens=64, stop_token_ids=())
    prompts = [shakespeare_ids[i // 2, (i % 2) * 100:(i % 2) * 100 + 40].tolist() for i in range(5)]
    same = total = 0
    continuations = [r.token_ids for r in generate_batch(lm.model, prompts, config)]
    for prompt, continuation in zip(prompts, continuations, strict=True):
        text = torch.tensor([prompt + continuation[:-1]])
        choices = fast.logits(text)[0, len(prompt) - 1:].argmax(-1).tolist()
        same += sum(a == b for a, b in zip(choices, continuation, strict=True))
        total += len(continuation)
    print(f"int8 greedy agreement with fp32: {same}/{total}")
    assert same / total >= 0.9
