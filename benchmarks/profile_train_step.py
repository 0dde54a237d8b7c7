"""Profile zenlm's pretraining step on the Shakespeare shape (benchmarks/train_shakespeare.py).

Times the ops of a few forward + backward + AdamW steps of the same Llama-style model
(d=384, 6 layers, SwiGLU d_ff=1024, RoPE, context 256, batch 12, float32) with zenlm's
fused elementwise ops off and on, alternately in one process (the machine may be shared:
only figures from the same rounds compare), and prints each op's self CPU time per step.

`--time N` instead times N steps each way, alternating off and on step by step (the
finest-grained A/B for a loaded machine), and prints the median and fastest step of each.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_train_step.py --cpu avx2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_train_step.py --cpu avx2 --time 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

BLOCK, BATCH, VOCAB = 256, 12, 65
#: The environment switches of the fused ops (zenlm.nn.swiglu, zenlm.nn.rope).
SWITCHES = ("ZENLM_FUSED_SWIGLU", "ZENLM_FUSED_ROPE", "ZENLM_FUSED_RMSNORM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", default="", help="run as this zenlm.cpu level (narrower)")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--time", type=int, default=0, metavar="N",
                        help="time N steps each way, alternating, instead of profiling")
    args = parser.parse_args()
    if args.cpu:  # before torch loads: it reads the level's variables lazily
        os.environ["ZENLM_CPU"] = args.cpu
    from zenlm.cpu import apply_level

    apply_level()
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from zenlm.config import ModelConfig
    from zenlm.models.build import build_model

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, max_seq_len=BLOCK, d_model=384, n_layers=6,
                         n_heads=6, d_ff=1024, tie_embeddings=True, hf_model_type="llama")
    model = build_model(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(VOCAB, (BATCH, BLOCK + 1))

    def step() -> None:
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def switch(setting: str) -> None:
        for name in SWITCHES:
            os.environ[name] = "1" if setting == "on" else "0"

    if args.time:
        time_steps(step, switch, args.time)
        return
    op_ms: dict[str, dict[str, float]] = {"off": defaultdict(float), "on": defaultdict(float)}
    step_ms: dict[str, list[float]] = {"off": [], "on": []}
    for setting in ("off", "on"):  # warm-up (and the kernel build, if any)
        switch(setting)
        step()
    for _ in range(args.rounds):
        for setting in ("off", "on"):
            switch(setting)
            tick = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    step()
            step_ms[setting].append((time.perf_counter() - tick) * 1000 / args.steps)
            for event in prof.key_averages():
                op_ms[setting][event.key] += event.self_cpu_time_total / 1000 / args.steps
    n = args.rounds
    print(f"load average {os.getloadavg()[0]:.2f}; ms per step (profiled) by round: "
          f"off {[round(t) for t in step_ms['off']]}, on {[round(t) for t in step_ms['on']]}")
    total = {s: sum(op_ms[s].values()) / n for s in op_ms}
    keys = sorted(set(op_ms["off"]) | set(op_ms["on"]),
                  key=lambda k: -max(op_ms["off"][k], op_ms["on"][k]))
    head = "op (self CPU, ms per step; share of all ops)"
    print(f"{head:<58} {'fused off':>16} {'fused on':>16}")
    for key in keys[: args.rows]:
        cells = [f"{op_ms[s][key] / n:8.1f} {100 * op_ms[s][key] / n / total[s]:5.1f}%"
                 for s in ("off", "on")]
        print(f"{key[:58]:<58} {cells[0]:>16} {cells[1]:>16}")


def time_steps(step, switch, pairs: int) -> None:  # noqa: ANN001
    """Alternate fused off and on step by step; print median and fastest of each."""
    ms: dict[str, list[float]] = {"off": [], "on": []}
    for setting in ("off", "on"):  # warm-up (and the kernel build, if any)
        switch(setting)
        step()
    for index in range(2 * pairs):
        setting = ("off", "on")[index % 2]
        switch(setting)
        tick = time.perf_counter()
        step()
        ms[setting].append((time.perf_counter() - tick) * 1000)
    ratios = [off / on for off, on in zip(ms["off"], ms["on"], strict=True)]
    for setting in ("off", "on"):
        print(f"fused {setting:>3}: median {statistics.median(ms[setting]):7.1f} ms/step, "
              f"fastest {min(ms[setting]):7.1f}")
    print(f"speed-up (off / on): median of pairs {statistics.median(ratios):.3f}, "
          f"fastest steps {min(ms['off']) / min(ms['on']):.3f}; "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
