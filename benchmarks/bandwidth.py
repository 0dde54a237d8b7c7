"""Memory-read bandwidth of this machine, the ceiling of batch-1 decoding.

Every weight is read once per decoded token, so tokens/s <= bandwidth / bytes of weights.
This sums a 1 GiB float32 tensor (far larger than any cache) with the given threads and
reports the median and best of several passes.

    .venv/bin/python benchmarks/bandwidth.py [--threads 2] [--passes 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zenlm.cpu import cpu_info


def main() -> None:
    """Print the read bandwidth in GB/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=15)
    args = parser.parse_args()
    print(cpu_info().describe(), flush=True)  # what these figures ran on
    torch.set_num_threads(args.threads)
    data = torch.ones(2**28, dtype=torch.float32)  # 1 GiB
    data.sum()  # fault the pages in
    rates = []
    for _ in range(args.passes):
        start = time.perf_counter()
        data.sum()
        rates.append(data.numel() * 4 / (time.perf_counter() - start) / 1e9)
    print(f"read bandwidth, {args.threads} threads: median {statistics.median(rates):.1f} GB/s, "
          f"best {max(rates):.1f} GB/s over {args.passes} passes")


if __name__ == "__main__":
    main()
