"""torch.compile for the decode step, with a clean fallback to eager execution.

A decode step runs ~2,000 tiny eager ops (norms, RoPE, casts, views) around the
matmuls; on CPU each costs microseconds. Inductor fuses them into a few C++ kernels.
Compiling takes a minute or so once (cached on disk by inductor afterwards), so it
is opt-in: `zenlm.load(..., compile=True)`, `zenlm bench --compile`.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable

import torch

from zenlm.models import DecoderLM
from zenlm.nn import KVCache

log = logging.getLogger(__name__)

#: Measured on SmolLM2-135M int4, 2 threads (ms per decode step): default 10.1;
#: without the pattern matcher 9.3 (it rewrites the few-query attention into CPU SDPA,
#: ~50 us a call); with a C++ wrapper too 7.1 (no Python between kernels); without
#: guards on the model's modules 6.3 (dynamo re-checked ~300 weights' module
#: attributes before every step: 1.46 ms -> 0.28 ms).
INDUCTOR_OPTIONS = {
    "pattern_matcher": False,
    "cpp_wrapper": True,
    # Safe because the model is final when compiled (`zenlm.load` quantizes, merges
    # and fuses first; nothing swaps modules afterwards). Tensor shapes and dtypes,
    # parameters' included, and the cache's state are still guarded, so another model
    # or a new batch size still recompiles (tests/generate/test_compile.py).
    "guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe,
}


def compile_decoding(model: DecoderLM) -> DecoderLM:
    """Route the model's one-token decode steps through torch.compile (in place).

    Call it last: the compiled step does not re-check the model's modules, so
    swapping one afterwards (quantizing, adding LoRA) needs a new `compile_decoding`.
    Shapes that change every step (the cache length) are compiled as symbolic sizes,
    so the step compiles once, not once per length. If compilation fails (no C++
    compiler, an unsupported op), the step falls back to eager and logs why. A model with
    the fused int4 step keeps it for the steps it covers (one C++ call, faster than the
    compiled graph); the compiled step serves the others (ragged rows, larger batches).
    """
    compiled = torch.compile(_own_step(model), dynamic=True, options=INDUCTOR_OPTIONS)
    step = _with_fallback(model, compiled)
    if hasattr(model.step_fn, "fallback"):  # a fused int4 step (zenlm.quant.fused_step):
        model.step_fn.fallback = step  # it keeps the steps it covers, compiled code the rest
    else:
        model.step_fn = step
    return model


def _own_step(model: DecoderLM) -> Callable:
    """`model`'s forward as a function with a code object of its own.

    Dynamo keeps compiled code per code object: compiling `model.forward` would put
    every DecoderLM's graphs in one list, each call searching it by guards (fewer of
    them now) and all models sharing one recompile limit. A code object per model
    keeps each model's graphs to itself.
    """

    def step(ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        return model(ids, cache=cache)

    return types.FunctionType(step.__code__.replace(), step.__globals__, closure=step.__closure__)


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
