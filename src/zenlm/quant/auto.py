"""The `auto` mode: the fastest inference mode and training dtype for this CPU.

A user should never need to know which mode is fast on their CPU. `auto` chooses among
the modes whose perplexity stays within 3% of float32's on SmolLM2 (tests/quant checks
every one: bf16 +0.0%, int8 +0.4%, int4 +2.0-2.4%), by what this CPU runs natively
(figures in docs/benchmarks.md):

    zenlm's int4 kernel (AVX2, AVX-512)  int4   decoding reads 4-bit weights directly;
                                                long prompts multiply in bfloat16 where it
                                                is native, else through the kernel too
    native bfloat16 only (no kernel)     bf16   bfloat16 matmuls at ~4x float32's rate
    neither (ARM, old x86, no compiler)  none   float32, fused projections

Decoding, most of generation's time, reads every weight once per token: 4-bit weights
are a quarter of bfloat16's bytes (a 1.1B model: ~0.6 GB against 2.2 GB per token).

An explicit mode is always honoured; one known to be slow on this CPU logs one warning
saying what would be faster.
"""

from __future__ import annotations

import logging

from zenlm import kernels
from zenlm.cpu import cpu_info

log = logging.getLogger(__name__)

AUTO = "auto"
#: Training dtypes `zenlm pretrain` and `zenlm finetune` accept ("auto" included).
TRAIN_DTYPES = ("auto", "float32", "bfloat16")


def auto_mode() -> str:
    """The inference mode `auto` means on this CPU (see the module's table)."""
    if kernels.load() is not None:
        return "int4"
    return "bf16" if cpu_info().native_bf16 else "none"


def chosen_mode(mode: str | None) -> str | None:
    """The mode that will run for `mode`: `auto` -> this CPU's, others as given (no log).

    For reporting what runs; `quantize()` itself resolves (and warns) through
    `resolve_mode`, so callers that then load the model must not call that too.
    """
    return auto_mode() if mode == AUTO else mode


def resolve_mode(mode: str | None) -> str | None:
    """`auto` -> this CPU's mode; other modes come back as given.

    A mode known to be slow on this CPU logs one warning saying what is faster. None
    (leave the model as loaded) stays None.
    """
    if mode == AUTO:
        chosen = auto_mode()
        log.info("quantize=auto: %s on this CPU (%s)", chosen, cpu_info().level)
        return chosen
    if mode == "bf16" and not cpu_info().native_bf16:
        log.warning("bf16 is emulated on this CPU (no AVX512-BF16 or AMX), several times "
                    "slower than float32: quantize=auto (%s) is faster here", auto_mode())
    elif mode == "int4" and kernels.load() is None:
        log.warning("int4 without zenlm's kernel runs on PyTorch's int4 kernel, slower than "
                    "int8 here: quantize=auto (%s) or int8 is faster", auto_mode())
    return mode


def resolve_train_dtype(dtype: str) -> str:
    """`auto` -> bfloat16 autocast where the CPU has native bfloat16, else float32.

    An explicit bfloat16 on a CPU without it logs one warning (autocast there is ~20x
    slower than float32).

    Raises:
        ValueError: not one of TRAIN_DTYPES.
    """
    if dtype not in TRAIN_DTYPES:
        raise ValueError(f"train dtype must be one of {', '.join(TRAIN_DTYPES)}, got {dtype!r}")
    native = cpu_info().native_bf16
    if dtype == AUTO:
        return "bfloat16" if native else "float32"
    if dtype == "bfloat16" and not native:
        log.warning("bfloat16 autocast is emulated on this CPU (no AVX512-BF16 or AMX) and "
                    "many times slower: dtype auto (float32) is faster here")
    return dtype
