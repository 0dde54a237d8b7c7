"""CPU attention kernels for inference, installed on a built model as a transform.

`use_cpu_attention(model)` sets every `Attention.kernel` of a finished model to
`cpu_attention`, which picks, by shape and dtype, the fastest of three ways to
compute the same softmax(q k^T x scale + mask) v on a CPU. Like `quantize`, this is
applied where a model is prepared for inference (`zenlm.load`); training keeps the
default kernel, plain SDPA, whose backward PyTorch owns.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zenlm.nn.attention import Attention, AttentionKernel, sdpa

#: Up to this many new tokens, attention is two small matmuls instead of SDPA: on
#: CPU, SDPA's flash kernel costs ~4x more than the arithmetic for a decode step.
SMALL_QUERY = 16

#: Queries per block in `blocked_causal_attention`. 128 was fastest for 512-token
#: prompts on SmolLM2's shapes (64: 2.7-3.0 ms per layer, 128: 2.1-2.6, 256: 5.6).
QUERY_BLOCK = 128


def use_cpu_attention(model: nn.Module, kernel: AttentionKernel | None = None) -> nn.Module:
    """Install `kernel` (default `cpu_attention`) in every Attention of `model`; returns it.

    Call it before `compile_decoding`, which traces the kernel in place. Pass
    `kernel=sdpa` to go back to the training default.
    """
    for module in model.modules():
        if isinstance(module, Attention):
            module.kernel = cpu_attention if kernel is None else kernel
    return model


def cpu_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
    is_causal: bool, scale: float,
) -> torch.Tensor:
    """The attention of `zenlm.nn.attention.sdpa` (same arguments), by the fastest CPU path.

    The one dispatch rule: a few queries (decode steps, short speculative drafts, cross-
    attention of a decoder step) take two small matmuls; a long bfloat16 causal prompt
    takes `blocked_causal_attention`; everything else (and any other device) SDPA.
    """
    if q.device.type != "cpu":
        return sdpa(q, k, v, mask, is_causal, scale)
    if q.shape[2] <= SMALL_QUERY and not (is_causal and q.shape[2] > 1):
        return small_query_attention(q, k, v, mask, scale)
    if is_causal and use_blocked_attention(q, k):
        return blocked_causal_attention(q, k, v, scale=scale)
    return sdpa(q, k, v, mask, is_causal, scale)


def small_query_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """softmax(q k^T x scale + mask) v for a few queries, query heads grouped per KV head.

    Grouping the query heads that share a KV head makes one (group*T, D) x (D, S)
    matmul per KV head, so grouped-query keys are never copied per head.

    Args:
        q: Queries (B, H, T, D).
        k: Keys (B, Hkv, S, D), Hkv dividing H.
        v: Values (B, Hkv, S, D).
        mask: None; boolean (B|1, 1, T, S), True where a query may attend; or a float
            bias (B|1, H|1, T, S) added to the scores.
        scale: Factor on the scores.

    Returns:
        (B, H, T, D).
    """
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    group = H // Hkv
    q = q.reshape(B, Hkv, group * T, D)  # heads h = g*group + i share KV head g
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, Hkv, group*T, S)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.view(B, Hkv, group, T, S).masked_fill(
            ~mask[:, :, None], float("-inf")  # (B|1, 1, 1, T, S) over every group
        ).view(B, Hkv, group * T, S)
    elif mask is not None:  # an additive bias, per head or shared
        bias = mask.expand(mask.shape[0], H, T, S).reshape(-1, Hkv, group * T, S)
        scores = scores + bias  # (B, Hkv, group*T, S)
    probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)  # (B, Hkv, group*T, S)
    return (probs @ v).view(B, H, T, D)  # (B, Hkv, group*T, D) -> (B, H, T, D)


def use_blocked_attention(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether `blocked_causal_attention` beats SDPA for these causal queries and keys.

    It does for bfloat16 on CPU past one block of queries: there SDPA's flash kernel
    reaches ~35 GMAC/s on a 512-token prompt while oneDNN's bfloat16 batched matmuls
    reach ~350. In float32 the batched matmuls are the slower ones (6-7 ms per layer
    against SDPA's 4.5), and for one block SDPA's single call is cheaper.
    """
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and not q.requires_grad
            and q.shape[2] > QUERY_BLOCK and k.shape[2] == q.shape[2])


def blocked_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int = QUERY_BLOCK,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal softmax(q k^T x scale) v, one block of queries at a time.

    Each block of queries multiplies only the keys up to its own last position,
    which skips about half of the work, and only the block's own keys need the
    causal mask. The query heads that share a KV head are stacked into one matmul,
    so grouped-query keys are never copied per head.

    Args:
        q: Queries (B, H, T, D).
        k: Keys (B, Hkv, T, D), Hkv dividing H (the same T: nothing cached before).
        v: Values (B, Hkv, T, D).
        block: Queries per block.
        scale: Factor on the scores (default 1/sqrt(D)).

    Returns:
        (B, H, T, D), a transposed view of a (B, T, H, D) tensor.
    """
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    group = H // Hkv
    q = (q * (1.0 / math.sqrt(D) if scale is None else scale)).view(B, Hkv, group, T, D)
    keys, values = k.reshape(B * Hkv, T, D), v.reshape(B * Hkv, T, D)
    out = q.new_empty(B, T, Hkv, group, D)
    causal = torch.full((block, block), float("-inf"), dtype=q.dtype).triu(1)  # (block, block)
    for start in range(0, T, block):
        end = min(start + block, T)
        n = end - start
        rows = q[:, :, :, start:end].reshape(B * Hkv, group * n, D)
        bias = torch.cat([causal.new_zeros(n, start), causal[:n, :n]], dim=1).repeat(group, 1)
        scores = torch.baddbmm(bias, rows, keys[:, :end].transpose(1, 2))  # (B*Hkv, g*n, end)
        block_out = torch.softmax(scores, dim=-1) @ values[:, :end]  # (B*Hkv, g*n, D)
        out[:, start:end] = block_out.view(B, Hkv, group, n, D).permute(0, 3, 1, 2, 4)
    return out.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
