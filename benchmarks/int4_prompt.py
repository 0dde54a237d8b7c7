"""Where int4 prompts should switch from zenlm's kernel to a dequantized float matmul.

For each number of activation rows M, one SmolLM2-135M layer's int4 matmuls (fused qkv
960x576, o 576x576, gate/up 3072x576, down 576x1536) are timed both ways, alternating:
zenlm's `int4_linear` (int8 activation blocks x 4-bit codes) and `int4_dequantize` to
the prompt dtype (bfloat16 where the CPU has it natively, float32 elsewhere) followed by
PyTorch's matmul. `Int4Linear.PROMPT_ROWS` is the M from which the second wins.

    .venv/bin/python benchmarks/int4_prompt.py [--rows 8,16,32,64,128,512] [--rounds 5]
    ZENLM_CPU=avx2 .venv/bin/python benchmarks/int4_prompt.py     # the AVX2 path
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zenlm import kernels
from zenlm.cpu import cpu_info
from zenlm.kernels.layout import pack_codes

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]


def layer(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(pack_codes(torch.randint(0, 16, (N, K), generator=g)),
             (torch.rand(N, K // 32, generator=g) / 10).half(),
             (-torch.rand(N, K // 32, generator=g)).half()) for N, K in SHAPES]


def seconds(fn, repeats: int) -> float:  # noqa: ANN001
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="8,16,32,64,128,512")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    info = cpu_info()
    print(info.describe(), flush=True)
    assert kernels.load(), "zenlm's kernel is unavailable"
    dtype = torch.bfloat16 if info.native_bf16 else torch.float32
    weights = layer(0)
    print(f"\n| rows | kernel ms | dequantize + {dtype} matmul ms | kernel / dequantized |")
    print("| --- | --- | --- | --- |")
    for rows in (int(r) for r in args.rows.split(",")):
        xs = [torch.randn(rows, K) for _, K in SHAPES]

        def kernel(xs: list[torch.Tensor] = xs) -> None:
            for x, (codes, scales, mins) in zip(xs, weights, strict=True):
                torch.ops.zenlm.int4_linear(x, codes, scales, mins)

        def dequantized(xs: list[torch.Tensor] = xs) -> None:
            for x, (codes, scales, mins) in zip(xs, weights, strict=True):
                w = torch.ops.zenlm.int4_dequantize(codes, scales, mins, dtype)
                (x.to(dtype) @ w.T).float()

        repeats = max(2, 2048 // rows)
        a, b = [], []
        for _ in range(args.rounds):
            a.append(seconds(kernel, repeats))
            b.append(seconds(dequantized, repeats))
        ka, kb = statistics.median(a) * 1e3, statistics.median(b) * 1e3
        print(f"| {rows} | {ka:.3f} | {kb:.3f} | {ka / kb:.2f} |", flush=True)


if __name__ == "__main__":
    main()
