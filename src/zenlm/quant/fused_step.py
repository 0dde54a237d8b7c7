"""A fused decode step for int4 Llama-family decoders: one C++ call per generated token.

At batch 1 an int4 decode step of a small model is mostly not arithmetic: SmolLM2-135M's
eager step ran ~20 small PyTorch ops per layer around its int4 matmuls, ~4.7 ms of a
token's ~12 ms in Python and dispatch. `zenlm::int4_decode_step`
(zenlm/kernels/fused_step.h) runs the whole step (embedding, every layer's norms,
projections, RoPE, cache write, attention, SwiGLU and residuals, final norm and head)
with the int4 kernel's own matmuls, in one call.

`use_fused_step(model)` installs it as `model.step_fn` (as `compile_decoding` installs
the compiled step) when the model is one it computes exactly: RMSNorm pre-norm blocks
with fused q/k/v and gate/up projections, SiLU gating, RoPE, no biases, no sliding
window, every matmul (the head included) int4 on zenlm's kernel, and the embedding an
int4 table on it too (the head's own when they are tied).
Each call then checks the step itself: one new token per row (at most `MAX_ROWS` rows),
all rows at the same cache length, a float32 cache, no encoder context, the modules
still the ones it read. Anything else (a prompt, a speculative draft, ragged rows, a
swapped module) runs the model's eager forward, as before, or the compiled step when
`compile_decoding` made one (`FusedStep.fallback`).

Its logits are the eager int4 step's to the bit (tests/quant/test_fused_step.py): the int4
kernel rounds activations to int8 codes, where one ulp of difference upstream can move a
code and grow over the layers and steps into a ~1-5% difference of the logits, so the
step computes every float operation as the eager forward's PyTorch kernels do (see
fused_step.h). It is on by default; ZENLM_FUSED_STEP=0 turns it off.
(ZENLM_FUSED_ATTENTION=torch makes its attention call torch.bmm even where its own
matmuls were found equal to it; for tests.)
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from zenlm import kernels
from zenlm.models import DecoderLM
from zenlm.nn import KVCache
from zenlm.nn.attention import sdpa
from zenlm.nn.cpu_attention import cpu_attention
from zenlm.nn.norm import RMSNorm
from zenlm.quant.weights import Int4Linear, QuantizedEmbedding

log = logging.getLogger(__name__)

#: Set to 0 to decode int4 models through the eager forward instead of the fused step
#: (on by default: both give the same logits, the fused step in about half the time).
ENV_SWITCH = "ZENLM_FUSED_STEP"

#: Most rows one fused step takes: the int4 kernel's decode tiles serve up to 3 rows;
#: its prompt tiles serve more, but larger batches are the serving engine's, whose steps
#: are matmul-bound (the eager ops around them are shared by the rows).
MAX_ROWS = 8

#: Attention kernels that compute plain softmax(q k^T x scale) v, as the fused step does
#: (to the bit as `cpu_attention`'s small-query path, the one `zenlm.load` installs).
STANDARD_KERNELS = (sdpa, cpu_attention)


def use_fused_step(model: nn.Module) -> bool:
    """Make `model`'s one-token steps one `zenlm::int4_decode_step` call, if it qualifies.

    Returns:
        Whether the fused step was installed (else `model.step_fn` is left as it was;
        the reason is logged at debug level).
    """
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    reason = unsupported(model)
    if reason is not None:
        log.debug("fused int4 decode step not used: %s", reason)
        return False
    model.step_fn = FusedStep(model)
    return True


def unsupported(model: nn.Module) -> str | None:
    """Why the fused step cannot compute `model`'s decode step, or None if it can."""
    if not isinstance(model, DecoderLM):
        return f"{type(model).__name__} is not a DecoderLM"
    config = model.config
    if (model.positions is not None or model.embed_norm is not None or model.rope is None
            or model.relative_bias is not None):
        return "not a RoPE-only decoder"
    if config.scale_embeddings or config.scale_output or config.sliding_window is not None:
        return "scaled embeddings or output, or a sliding window"
    if not (_int4(model.lm_head) and isinstance(model.embed, QuantizedEmbedding)
            and _int4(model.embed.table)):
        return "the output head and the embedding table are not int4 on zenlm's kernel"
    if not isinstance(model.final_norm, RMSNorm):
        return "the final norm is not an RMSNorm"
    if not hasattr(torch.ops.zenlm, "int4_decode_step"):
        return "the kernel library has no int4_decode_step"
    eps = model.final_norm.eps
    for index, block in enumerate(model.blocks):
        reason = _block_unsupported(block, eps, model.rope.inv_freq.numel() * 2)
        if reason is not None:
            return f"block {index}: {reason}"
    return None


def _int4(module: nn.Module | None) -> bool:
    return isinstance(module, Int4Linear) and module.use_kernel and module.bias is None


def _block_unsupported(block: nn.Module, eps: float, head_dim: int) -> str | None:
    attn, mlp = block.attn, block.mlp
    norms = (block.attn_norm, block.mlp_norm)
    if not block.pre_norm or block.cross_attn is not None or block.dropout is not None:
        return "not a pre-norm self-attention block without dropout"
    if not all(isinstance(n, RMSNorm) and n.eps == eps and n.weight.dtype == torch.float32
               for n in norms):
        return "norms are not float32 RMSNorms of one eps"
    if not (_int4(attn.qkv) and _int4(attn.o) and attn.head_dim == head_dim
            and attn.kernel in STANDARD_KERNELS):
        return "attention is not fused int4 q/k/v and o without biases, standard kernel"
    if not (_int4(getattr(mlp, "gate_up", None)) and _int4(mlp.down) and mlp.act is F.silu):
        return "the MLP is not fused int4 gate/up and down with SiLU"
    return None


class FusedStep:
    """`model.step_fn`: one-token steps in one C++ call, everything else eager.

    Args:
        model: A model `unsupported` accepts.
    """

    def __init__(self, model: DecoderLM) -> None:
        self.model = model
        self.slots = self._slots()
        self.attentions = [block.attn for block in model.blocks]
        first = model.blocks[0].attn
        self.heads, self.kv_heads, self.scale = first.n_heads, first.n_kv_heads, first.scale
        self.eps = model.final_norm.eps
        self.inv_freq = model.rope.inv_freq.float().contiguous()
        self.rope_factor = float(model.rope.attention_factor)
        table, head = model.embed.table, model.lm_head  # one module when tied
        weights = [table.codes, table.scales, table.mins, model.final_norm.weight,
                   head.codes, head.scales, head.mins]
        for block in model.blocks:
            attn, mlp = block.attn, block.mlp
            weights += [block.attn_norm.weight, *_packed(attn.qkv), *_packed(attn.o),
                        block.mlp_norm.weight, *_packed(mlp.gate_up), *_packed(mlp.down)]
        # Detached: the op has no backward, and the step never trains.
        self.weights = [w.detach() for w in weights]
        #: What runs the steps this one does not cover: the eager forward, or the
        #: compiled step once `compile_decoding` has made one.
        self.fallback = None
        kernels.load()  # the op is registered by the library the int4 layers loaded

    def _slots(self) -> list[tuple[dict, str, nn.Module]]:
        """(parent's module dict, name, module) along the path to every module read.

        Checked before each step by dictionary lookups (~10 us for 30 layers; reading the
        modules by attribute, through nn.Module.__getattr__, took ~75 us).
        """
        paths = ["embed.table", "lm_head", "final_norm"]
        for index in range(len(self.model.blocks)):
            paths += [f"blocks.{index}.{part}" for part in (
                "attn_norm", "attn.qkv", "attn.o", "mlp_norm", "mlp.gate_up", "mlp.down")]
        slots, seen = [], set()
        for path in paths:
            parent = self.model
            for name in path.split("."):
                child = parent._modules[name]
                if (id(parent), name) not in seen:
                    seen.add((id(parent), name))
                    slots.append((parent._modules, name, child))
                parent = child
        return slots

    def _unchanged(self) -> bool:
        """Whether the modules are the ones read, and every attention kernel a standard one.

        `use_cpu_attention` may switch between standard kernels; a recording one may not.
        """
        return (all(modules.get(name) is child for modules, name, child in self.slots)
                and all(attn.kernel in STANDARD_KERNELS for attn in self.attentions))

    def covers(self, ids: torch.Tensor, cache: KVCache) -> bool:
        """Whether this step is one the fused op computes (else the eager forward runs)."""
        keys = cache.keys[0] if cache.keys else None
        return (ids.ndim == 2 and ids.shape[1] == 1 and ids.dtype == torch.long
                and 0 < ids.shape[0] <= MAX_ROWS
                and ids.device.type == "cpu" and cache.uniform is not None
                and cache.cross is None and cache.batch == ids.shape[0]
                and len(cache.keys) == len(self.model.blocks) and keys is not None
                and keys.dtype == torch.float32 and cache.uniform < cache.max_len
                and self._unchanged())

    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, T, V) of ids (B, T) appended to `cache`, as `DecoderLM.step`."""
        if not self.covers(ids, cache):
            if self.fallback is not None:
                return self.fallback(ids, cache)
            return self.model(ids, cache=cache)
        logits = torch.ops.zenlm.int4_decode_step(
            ids[:, 0].contiguous(), cache.keys, cache.values, cache.uniform, self.weights,
            self.inv_freq, self.rope_factor, self.heads, self.kv_heads, self.eps, self.scale)
        cache.advance(1)
        return logits[:, None]  # (B, 1, V)


def _packed(layer: Int4Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return layer.codes, layer.scales, layer.mins
