"""`quantize(model, mode)`: swap a built model's Linear modules for quantized ones.

The model file never knows about quantization (gpt-fast's habit): this transform
walks the finished model and replaces modules, after fusing projections so that
each layer makes as few weight reads as possible.
"""

from __future__ import annotations

import torch
from torch import nn

from zenlm.kernels.layout import K_MULTIPLE
from zenlm.models import DecoderLM
from zenlm.quant.auto import resolve_mode
from zenlm.quant.fused_step import use_fused_step
from zenlm.quant.weights import Int4Linear, Int8Linear, QuantizedEmbedding

QUANTIZE_MODES = ("auto", "none", "bf16", "int8", "int4")


def quantize(model: DecoderLM, mode: str) -> DecoderLM:
    """Prepare `model` for fast inference in `mode`, in place; returns it.

    Modes:
        auto: the fastest of the others on this CPU (see zenlm.quant.auto).
        none: float32 weights, fused projections.
        bf16: bfloat16 weights and activations (norms and softmax stay float32).
        int8: int8 weights per output channel. The matmuls take bfloat16 inputs (the
            kernels' fast path); the residual stream, norms and attention stay float32,
            which keeps the model within 1% of float32 perplexity.
        int4: 4-bit weights in groups of 32 (GGUF Q4_1 blocks convert exactly), the
            output head and the embedding (tied or not) included (the head is a third of
            the bytes a decode step reads); layers whose inputs are not a multiple of
            64 stay int8. The matmuls quantize their float32 inputs to int8 blocks.
            Llama-family decoders decode with one fused C++ step per token
            (zenlm.quant.fused_step).

    Raises:
        ValueError: an unknown mode, naming the valid ones.
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")
    return apply_quantization(model, resolve_mode(mode))


def apply_quantization(model: DecoderLM, mode: str) -> DecoderLM:
    """`quantize` with `mode` already resolved (not `auto`): no log, no check.

    Parts `quantize_part` already converted (a load that quantized each part as it
    was read) are left as they are.
    """
    for part in [f"blocks.{i}" for i in range(len(model.blocks))] + ["lm_head", "embed"]:
        quantize_part(model, part, mode)
    if mode == "bf16":
        model.to(torch.bfloat16)  # embeddings, norms and head
    if mode == "int4":  # one C++ call per decode step where the model qualifies
        use_fused_step(model)
    return model


def quantize_part(model: DecoderLM, part: str, mode: str) -> None:
    """Convert one part of `model` to `mode` (resolved), in place; again: no change.

    Args:
        model: A decoder, being loaded or loaded.
        part: "blocks.N" (its projections fused, then converted), "lm_head" (with the
            embedding when tied: its rows are the head's), "embed" (an untied one:
            llama.cpp files store it in 4 bits too, and at 1.1B parameters it is 262 MB
            in float32), or any other top-level name (nothing to do).
        mode: A resolved mode: "none", "bf16", "int8" or "int4".
    """
    if part.startswith("blocks."):
        _quantize_block(model.get_submodule(part), mode)
    elif mode not in LINEAR_KINDS:
        return
    elif part == "lm_head" and isinstance(model.lm_head, nn.Linear):
        model.lm_head = LINEAR_KINDS[mode](model.lm_head.weight, model.lm_head.bias)
        if model.config.tie_embeddings:
            model.embed = QuantizedEmbedding(model.lm_head)
    elif (part == "embed" and isinstance(model.embed, nn.Embedding)
          and not model.config.tie_embeddings):
        model.embed = QuantizedEmbedding(LINEAR_KINDS[mode](model.embed.weight, None))


def _quantize_block(block: nn.Module, mode: str) -> None:
    # Quantized layers are fused after quantizing (their rows stack exactly): fusing
    # float32 weights first copied 113 MB per block of a 1.1B model at the load's peak.
    if mode in LINEAR_KINDS:
        _swap_linears(block, LINEAR_KINDS[mode])
    block.attn.fuse_qkv()
    block.mlp.fuse_gate_up()
    if mode == "bf16":
        block.to(torch.bfloat16)


def _int4_or_int8(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    if weight.shape[1] % K_MULTIPLE:  # int4 rows hold whole pairs of groups; int8 fits any shape
        return Int8Linear(weight, bias)
    return Int4Linear(weight, bias)


#: The modes that swap Linear modules, and what each Linear becomes.
LINEAR_KINDS = {"int8": Int8Linear, "int4": _int4_or_int8}


def _swap_linears(root: nn.Module, make) -> None:  # noqa: ANN001
    for name, child in list(root.named_children()):
        if isinstance(child, nn.Linear):
            setattr(root, name, make(child.weight, child.bias))
        else:
            _swap_linears(child, make)
