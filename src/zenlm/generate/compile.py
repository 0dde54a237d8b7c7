"""torch.compile for the decode step, with a clean fallback to eager execution.

A decode step runs ~2,000 tiny eager ops (norms, RoPE, casts, views) around the
matmuls; on CPU each costs microseconds. Inductor fuses them into a few C++ kernels.
Compiling takes a minute or so once (cached on disk by inductor afterwards), so it
is opt-in: `zenlm.load(..., compile=True)`, `zenlm bench --compile`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from zenlm.models import DecoderLM
from zenlm.nn import KVCache

log = logging.getLogger(__name__)

#: Measured on SmolLM2-135M int4, 2 threads (ms per decode step): default 10.1;
#: without the pattern matcher 9.3 (it rewrites the few-query attention into CPU SDPA,
#: ~50 us a call); with a C++ wrapper too 7.1 (no Python between kernels).
INDUCTOR_OPTIONS = {"pattern_matcher": False, "cpp_wrapper": True}


def compile_decoding(model: DecoderLM) -> DecoderLM:
    """Route the model's one-token decode steps through torch.compile (in place).

    Shapes that change every step (the cache length) are compiled as symbolic sizes,
    so the step compiles once, not once per length. If compilation fails (no C++
    compiler, an unsupported op), the step falls back to eager and logs why.
    """
    compiled = torch.compile(model.forward, dynamic=True, options=INDUCTOR_OPTIONS)
    model.step_fn = _with_fallback(model, compiled)
    return model


def _with_fallback(model: DecoderLM, compiled: Callable) -> Callable:
    state = {"compiled": True}

    def step(ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if state["compiled"]:
            try:
                return compiled(ids, cache=cache)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means "use eager"
                log.warning("torch.compile failed (%s: %s); decoding eagerly",
                            type(exc).__name__, exc)
                state["compiled"] = False
        return model.forward(ids, cache=cache)

    return step
