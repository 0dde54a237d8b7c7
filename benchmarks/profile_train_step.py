"""Profile zenlm's pretraining step on the Shakespeare shape (benchmarks/train_shakespeare.py).

Times the ops of a few forward + backward + AdamW steps of the same Llama-style model
(d=384, 6 layers, SwiGLU d_ff=1024, RoPE, context 256, batch 12, float32) with zenlm's
fused elementwise ops off and on, alternately in one process (the machine may be shared:
only figures from the same rounds compare), and prints each op's self CPU time per step.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_train_step.py --cpu avx2
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

BLOCK, BATCH, VOCAB = 256, 12, 65
#: The environment switches of the fused ops (zenlm.nn.swiglu, zenlm.nn.rope).
SWITCHES = ("ZENLM_FUSED_SWIGLU", "ZENLM_FUSED_ROPE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", default="", help="run as this zenlm.cpu level (narrower)")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20)
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

    op_ms: dict[str, dict[str, float]] = {"off": defaultdict(float), "on": defaultdict(float)}
    step_ms: dict[str, list[float]] = {"off": [], "on": []}
    for setting in ("off", "on"):  # warm-up (and the kernel build, if any)
        for name in SWITCHES:
            os.environ[name] = "1" if setting == "on" else "0"
        step()
    for _ in range(args.rounds):
        for setting in ("off", "on"):
            for name in SWITCHES:
                os.environ[name] = "1" if setting == "on" else "0"
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


if __name__ == "__main__":
    main()
