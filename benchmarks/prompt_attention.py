"""bfloat16 prompt attention: zenlm's blocked attention against SDPA, alone and in the model.

1. One layer's attention on SmolLM2's shapes (9 query heads, 3 KV heads, 64 dims) for a
   512-token prompt: SDPA's CPU flash kernel and `blocked_causal_attention` with blocks
   of 64, 128 and 256 queries, in bfloat16 and float32.
2. SmolLM2 in bf16 mode, a 512-token prefill timed as `zenlm bench` does, with the blocked path on
   and off, alternating; and the perplexity of 4 x 512 tinyshakespeare tokens both ways.

    .venv/bin/python benchmarks/prompt_attention.py [--rounds 6] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from int4_quality import perplexity, zenlm_logits

import zenlm
from zenlm.bench import prefill_seconds
from zenlm.cpu import cpu_info
from zenlm.nn import cpu_attention


def milliseconds(run: Callable[[], object], repeats: int = 20) -> float:
    """Mean wall time of `run` in ms, after 3 warm-up calls."""
    for _ in range(3):
        run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats * 1e3


def one_layer() -> None:
    """Print one layer's attention time per method and dtype."""
    print("| dtype | SDPA ms | blocks of 64 | blocks of 128 | blocks of 256 |")
    print("| --- | --- | --- | --- | --- |")
    for dtype in (torch.bfloat16, torch.float32):
        print(f"| {dtype} | " + " | ".join(f"{t:.2f}" for t in layer_times(dtype)) + " |")


def layer_times(dtype: torch.dtype) -> list[float]:
    """ms of SDPA, then of blocks of 64, 128 and 256 queries, on one layer's tensors."""
    q = torch.randn(1, 9, 512, 64, dtype=dtype)
    k, v = (torch.randn(1, 3, 512, 64, dtype=dtype) for _ in range(2))
    times = [milliseconds(lambda: F.scaled_dot_product_attention(
        q, k, v, is_causal=True, enable_gqa=True))]
    return times + [milliseconds(lambda b=b: cpu_attention.blocked_causal_attention(q, k, v, b))
                    for b in (64, 128, 256)]


def whole_model(rounds: int, data: Path) -> None:
    """Print prefill tok/s per round and perplexity, blocked path on and off."""
    lm = zenlm.load("smollm2-135m-instruct", quantize="bf16")
    blocked = cpu_attention.use_blocked_attention

    def use(on: bool) -> None:
        cpu_attention.use_blocked_attention = blocked if on else (lambda q, k: False)

    speeds: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds):
        for on in (True, False) if r % 2 else (False, True):
            use(on)
            speeds[on].append(512 / prefill_seconds(lm, 512))  # as `zenlm bench` times it
    for on, values in speeds.items():
        print(f"blocked={on}: prefill tok/s {[round(v) for v in values]}, "
              f"median {statistics.median(values):.0f}")
    ratios = [a / b for a, b in zip(speeds[True], speeds[False], strict=True)]
    print(f"same-round ratio blocked / SDPA: {[round(r, 2) for r in ratios]}")
    text = (data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    tokens = lm.tokenizer.encode(text[:20000], add_special_tokens=False)
    rows = torch.tensor(tokens[: 4 * 512]).view(4, 512)
    for on in (False, True):
        use(on)
        value = perplexity(rows, zenlm_logits(lm))
        print(f"blocked={on}: perplexity of 4 x 512 tokens {value:.3f}")
    use(True)


def main() -> None:
    """Run both measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--data", default=os.environ.get("ZENLM_DATA", "../shared/data"))
    args = parser.parse_args()
    print(cpu_info().describe(), flush=True)  # what these figures ran on
    torch.set_num_threads(2)
    one_layer()
    whole_model(args.rounds, Path(args.data))


if __name__ == "__main__":
    main()
