"""How fast zenlm's int4 kernel streams a 1.1B model's weights at batch 1.

A decode step multiplies one activation row by every weight once, so its matmuls can go
no faster than the weights' bytes (codes, scales, mins) come from memory. This times the
matmuls of TinyLlama-1.1B's blocks (q/k/v fused, o, gate/up fused, down: the layers
`zenlm.load(..., quantize="int4")` builds) at one row, with random weights, and reports
milliseconds a token and the bytes read per second. Compare with `benchmarks/bandwidth.py`
(what the machine can read) and llama.cpp's figure from `benchmarks/scale.py`.

    .venv/bin/python benchmarks/int4_decode_stream.py [--layers 22] [--passes 12]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zenlm.cpu import cpu_info
from zenlm.quant.weights import Int4Linear

#: (in, out) of one TinyLlama-1.1B block's matmuls: q/k/v fused (32 + 2 x 4 heads of 64),
#: the output projection, gate/up fused (2 x 5,632), down.
BLOCK_SHAPES = ((2048, 2560), (2048, 2048), (2048, 11264), (5632, 2048))


def main() -> None:
    """Print ms a token and GB/s for the int4 matmuls of the 1.1B shape."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--passes", type=int, default=12)
    args = parser.parse_args()
    info = cpu_info()
    print(f"CPU: {info.model}, features {' '.join(info.features)}; level {info.level}; "
          f"{torch.get_num_threads()} threads")
    torch.manual_seed(0)
    layers = [Int4Linear(torch.randn(n, k) * 0.02, None)
              for _ in range(args.layers) for k, n in BLOCK_SHAPES]
    nbytes = sum(layer.codes.nbytes + layer.scales.nbytes + layer.mins.nbytes for layer in layers)
    rows = {k: torch.randn(1, k) for k, _ in BLOCK_SHAPES}
    seconds = []
    with torch.inference_mode():
        for _ in range(args.passes + 2):  # two warm-up passes
            start = time.perf_counter()
            for layer in layers:
                layer(rows[layer.in_features])
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds[2:])
    print(f"{nbytes / 1e6:.0f} MB of int4 weights: {median * 1e3:.1f} ms a token (median of "
          f"{args.passes}), {nbytes / median / 1e9:.2f} GB/s; best "
          f"{nbytes / min(seconds[2:]) / 1e9:.2f} GB/s")


if __name__ == "__main__":
    main()
