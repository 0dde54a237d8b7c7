"""Profile zenlm's pretraining step on the Shakespeare shape (benchmarks/train_shakespeare.py).

Prints the ops that take the most CPU time over a few forward + backward + AdamW steps
of the same Llama-style model (d=384, 6 layers, SwiGLU d_ff=1024, RoPE, context 256,
batch 12, float32), so that a change to an elementwise kernel shows up as its rows.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_train_step.py --cpu avx2
    ZENLM_FUSED_SWIGLU=0 ... (the unfused SwiGLU, for a before/after)
"""

from __future__ import annotations

import argparse
import os
import time

BLOCK, BATCH, VOCAB = 256, 12, 65


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", default="", help="run as this zenlm.cpu level (narrower)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=18)
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
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=False)
    ids = torch.randint(VOCAB, (BATCH, BLOCK + 1))

    def step() -> None:
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (and the kernel build, if any)
    tick = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    seconds = (time.perf_counter() - tick) / args.steps
    print(f"{seconds * 1000:.0f} ms/step (profiled), load {os.getloadavg()[0]:.2f}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
