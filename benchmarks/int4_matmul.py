"""The int4 matmuls of one SmolLM2-135M decode step: zenlm's kernel vs PyTorch's.

One "step" is the 121 matrix-vector products of a decode token (30 layers x fused qkv
960x576, o 576x576, fused gate/up 3072x576, down 576x1536, then the 49152x576 head),
each with its own random weights so that, as in a real step, every matrix comes from
memory rather than cache. zenlm's `torch.ops.zenlm.int4_linear` (float32 input) and
torch's `aten._weight_int4pack_mm_for_cpu` (bfloat16 input, groups of 32) alternate,
`--rounds` times; the table gives each one's median and best step time and the bytes
read per second (codes, scales and offsets).

    .venv/bin/python benchmarks/int4_matmul.py [--rounds 5] [--steps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from zenlm import kernels
from zenlm.cpu import cpu_info
from zenlm.kernels.layout import pack_codes

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30 + [(49152, 576)]


def zenlm_step(seed: int) -> Callable[[], None]:
    """The step through zenlm's kernel: codes (N, K/2), float16 scales and mins (N, K/32)."""
    g = torch.Generator().manual_seed(seed)
    layers = [(torch.randn(1, K, generator=g),
               pack_codes(torch.randint(0, 16, (N, K), generator=g)),
               (torch.rand(N, K // 32, generator=g) / 10).half(),
               (-torch.rand(N, K // 32, generator=g)).half()) for N, K in SHAPES]

    def step() -> None:
        for x, codes, scales, mins in layers:
            torch.ops.zenlm.int4_linear(x, codes, scales, mins)

    return step


def torch_step(seed: int) -> Callable[[], None]:
    """The step through torch's kernel, packed by torch's own converter."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for N, K in SHAPES:
        q = torch.randint(0, 16, (N, K), generator=g, dtype=torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        scales_and_zeros = torch.rand(K // 32, N, 2, generator=g).bfloat16()
        layers.append((torch.randn(1, K, generator=g).bfloat16(), packed, scales_and_zeros))

    def step() -> None:
        for x, packed, scales_and_zeros in layers:
            torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, scales_and_zeros)

    return step


def timed(step: Callable[[], None], steps: int) -> list[float]:
    """Seconds per step, `steps` times, after 3 untimed steps."""
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    """Print a table of ms per step and GB/s for both kernels."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(cpu_info().describe(), flush=True)  # what these figures ran on
    torch.set_num_threads(args.threads)
    if not kernels.load():
        raise SystemExit("zenlm's kernel did not build; see the warning above")
    peers = {"zenlm int4_linear": zenlm_step(0), "torch _weight_int4pack_mm": torch_step(0)}
    times: dict[str, list[float]] = {name: [] for name in peers}
    for round_index in range(args.rounds):
        for name, step in peers.items():
            times[name] += timed(step, args.steps)
            print(f"round {round_index + 1} {name:26s} median "
                  f"{statistics.median(times[name][-args.steps:]) * 1e3:.2f} ms", flush=True)
    megabytes = sum(N * K // 2 + N * K // 32 * 4 for N, K in SHAPES) / 1e6
    print(f"\n{len(SHAPES)} matmuls, {megabytes:.1f} MB of weights per step\n")
    print("| kernel | median ms / step | best ms / step | GB/s (median) |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1e3:.2f} | {min(values) * 1e3:.2f} "
              f"| {megabytes / 1e3 / median:.1f} |")


if __name__ == "__main__":
    main()
