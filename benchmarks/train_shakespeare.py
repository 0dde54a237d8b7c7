"""zenlm pretraining vs a nanoGPT-equivalent loop on Shakespeare characters.

Two measurements, both in one invocation so that they share the machine's conditions:

1. speed: tokens/s of nanoGPT's model and loop (copied below: GPT of 6 layers, 6 heads,
   d=384, context 256, batch 12, fp32, eager, AdamW, dropout 0) against zenlm's Trainer
   on the same shape, run alternately, a few rounds each: zenlm's Llama-style model
   (RoPE, RMSNorm, SwiGLU; ~3% more work per token than GPT-2's GELU MLP) and zenlm
   with nanoGPT's own architecture (`GPT2_MODEL`: equal work, op for op).
2. budget: zenlm's `pretrain` for a fixed wall-clock (15 minutes by default), with
   evaluation included in the clock; prints the validation loss reached.

Usage:
    .venv/bin/python benchmarks/train_shakespeare.py --phase speed
    .venv/bin/python benchmarks/train_shakespeare.py --phase budget --minutes 15
    .venv/bin/python benchmarks/train_shakespeare.py --phase speed --cpu avx2
    .venv/bin/python benchmarks/train_shakespeare.py --phase speed \
        --ab ZENLM_FUSED_SWIGLU=0,ZENLM_FUSED_ROPE=0

zenlm trains with its default dtype, `auto` (bfloat16 autocast where the CPU has native
bfloat16, float32 elsewhere). `--cpu LEVEL` runs both loops as that narrower CPU level
(zenlm.cpu narrows PyTorch's kernels before the first matmul). `--ab VAR=VALUE[,...]` adds a
zenlm row run with those environment variables set, in the same rounds (a same-process A/B).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
# beside the repository (../shared/data), or set ZENLM_SHAKESPEARE (a git worktree lives elsewhere)
DATA = Path(os.environ.get("ZENLM_SHAKESPEARE",
                           REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"))
BLOCK, BATCH, LAYERS, HEADS, WIDTH = 256, 12, 6, 6, 384


# ---------------------------------------------------------------- nanoGPT (model.py, abridged)
class CausalSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.c_proj = nn.Linear(WIDTH, WIDTH, bias=False)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(WIDTH, dim=2)
        k = k.view(B, T, HEADS, C // HEADS).transpose(1, 2)
        q = q.view(B, T, HEADS, C // HEADS).transpose(1, 2)
        v = v.view(B, T, HEADS, C // HEADS).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class NanoBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(WIDTH, bias=False), nn.LayerNorm(WIDTH, bias=False)
        self.attn = CausalSelfAttention()
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH, bias=False), nn.GELU(),
                                 nn.Linear(4 * WIDTH, WIDTH, bias=False))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, WIDTH), nn.Embedding(BLOCK, WIDTH)
        self.h = nn.ModuleList([NanoBlock() for _ in range(LAYERS)])
        self.ln_f = nn.LayerNorm(WIDTH, bias=False)
        self.lm_head = nn.Linear(WIDTH, vocab, bias=False)
        self.wte.weight = self.lm_head.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def nanogpt_tokens_per_s(data: torch.Tensor, vocab: int, iters: int) -> float:
    torch.manual_seed(0)
    model = NanoGPT(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    times = []
    for it in range(iters + 2):  # two warm-up iterations
        ix = torch.randint(len(data) - BLOCK, (BATCH,))
        x = torch.stack([data[i:i + BLOCK] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + BLOCK] for i in ix])
        tick = time.perf_counter()
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if it >= 2:
            times.append(time.perf_counter() - tick)
    return BATCH * BLOCK * len(times) / sum(times)


# ---------------------------------------------------------------------------------- zenlm
#: nanoGPT's own architecture in zenlm's config: learned positions, LayerNorm without
#: bias, GELU MLP of 4d: the same work per token as the nanoGPT loop, op for op.
GPT2_MODEL = {"d_model": WIDTH, "n_layers": LAYERS, "n_heads": HEADS, "d_ff": 4 * WIDTH,
              "tie_embeddings": True, "hf_model_type": "gpt2", "positions": "learned",
              "norm": "layernorm", "gated_mlp": False, "activation": "gelu"}


def zenlm_config(out_dir: Path, model: dict | None = None, **train) -> dict:
    return {
        # Llama-style: RMSNorm, SwiGLU with d_ff=1024 (same parameter count as GELU 4d), RoPE.
        "model": model or {"d_model": WIDTH, "n_layers": LAYERS, "n_heads": HEADS,
                           "d_ff": 1024, "tie_embeddings": True, "hf_model_type": "llama"},
        "data": {"paths": [str(DATA)], "txt_unit": "file", "block_size": BLOCK,
                 "val_fraction": 0.1, "cache_dir": str(out_dir / "cache")},
        "tokenizer": {"kind": "char"},
        "optim": {"lr": 2e-3, "min_lr": 1e-4, "warmup_steps": 100, "beta2": 0.99,
                  "weight_decay": 0.1, "grad_clip": 1.0},
        "train": {"out_dir": str(out_dir / "run"), "batch_size": BATCH, "dtype": "auto",
                  "eval_every": 100, "eval_batches": 20, "save_every": 0, "keep_last": 1,
                  "progress": False, "export_hf": False, **train},
    }


def zenlm_tokens_per_s(out_dir: Path, iters: int, model: dict | None = None, **train) -> float:
    from zenlm.train.config import PretrainConfig
    from zenlm.train.pretrain import pretrain

    config = PretrainConfig.from_dict(zenlm_config(out_dir, model, max_steps=iters + 2,
                                                   eval_every=0, eval_batches=0, **train))
    import shutil

    shutil.rmtree(out_dir / "run", ignore_errors=True)
    pretrain(config, resume="none")
    records = [json.loads(line) for line in (out_dir / "run" / "log.jsonl").open()]
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][2:]
    return len(rates) / sum(1 / r for r in rates)  # tokens/s over the timed steps


def zenlm_with_env(out_dir: Path, iters: int, assignments: str) -> float:
    """zenlm_tokens_per_s with the environment variables `assignments` (VAR=VALUE,...) set."""
    pairs = [item.partition("=")[::2] for item in assignments.split(",")]
    before = {name: os.environ.get(name) for name, _ in pairs}
    os.environ.update(dict(pairs))
    try:
        return zenlm_tokens_per_s(out_dir, iters)
    finally:
        for name, value in before.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def speed(out_dir: Path, iters: int, rounds: int, compile_: bool, ab: str = "") -> dict:
    text = DATA.read_text(encoding="utf-8")
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    results: dict[str, list[float]] = {"nanogpt_fp32_eager": [], "zenlm_auto": [],
                                       "zenlm_auto_gpt2": []}
    if compile_:
        results["zenlm_auto_compile"] = []
    if ab:
        results[f"zenlm_auto[{ab}]"] = []
    for _ in range(rounds):  # alternate, so that both see the same background load
        results["nanogpt_fp32_eager"].append(nanogpt_tokens_per_s(data, len(chars), iters))
        results["zenlm_auto"].append(zenlm_tokens_per_s(out_dir, iters))
        results["zenlm_auto_gpt2"].append(zenlm_tokens_per_s(out_dir, iters, GPT2_MODEL))
        if compile_:
            results["zenlm_auto_compile"].append(zenlm_tokens_per_s(out_dir, iters,
                                                                    compile=True))
        if ab:
            results[f"zenlm_auto[{ab}]"].append(zenlm_with_env(out_dir, iters, ab))
    summary = {k: round(sum(v) / len(v)) for k, v in results.items()}
    summary["ratio_auto"] = round(summary["zenlm_auto"] / summary["nanogpt_fp32_eager"], 2)
    summary["ratio_auto_gpt2"] = round(
        summary["zenlm_auto_gpt2"] / summary["nanogpt_fp32_eager"], 2)
    if compile_:
        summary["ratio_auto_compile"] = round(
            summary["zenlm_auto_compile"] / summary["nanogpt_fp32_eager"], 2)
    if ab:
        summary[f"ratio_auto[{ab}]"] = round(
            summary[f"zenlm_auto[{ab}]"] / summary["nanogpt_fp32_eager"], 2)
    return {"per_round": results, "mean_tokens_per_s": summary, "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()}


def budget(out_dir: Path, minutes: float, steps: int, compile_: bool) -> dict:
    import shutil

    from zenlm.train.config import PretrainConfig
    from zenlm.train.pretrain import pretrain

    shutil.rmtree(out_dir / "run", ignore_errors=True)
    config = PretrainConfig.from_dict(zenlm_config(out_dir, max_steps=steps, max_minutes=minutes,
                                                   compile=compile_, save_every=steps))
    result = pretrain(config, resume="none")
    records = [json.loads(line) for line in (out_dir / "run" / "log.jsonl").open()]
    evals = [(r["step"], round(r["elapsed_s"] / 60, 2), round(r["val_loss"], 4))
             for r in records if "val_loss" in r]
    return {"steps": result.steps, "elapsed_min": round(result.elapsed_s / 60, 2),
            "final_val_loss": result.val_loss, "tokens_per_s": round(result.tokens_per_s),
            "evals (step, minutes, val loss)": evals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["speed", "budget", "both"], default="both")
    parser.add_argument("--out", default="/tmp/zenlm-bench-shakespeare")
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=0,
                        help="schedule length (budget); 0 = fitted to the speed just measured")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cpu", default="", help="run as this zenlm.cpu level (narrower)")
    parser.add_argument("--ab", default="", metavar="VAR=VALUE[,...]",
                        help="also time zenlm with these environment variables set, each round")
    args = parser.parse_args()
    if args.cpu:  # before the first matmul: PyTorch reads these lazily
        os.environ["ZENLM_CPU"] = args.cpu
    from zenlm.cpu import apply_level, cpu_info

    apply_level()
    info = cpu_info()
    print(f"CPU: {info.model}, features {' '.join(info.features)}; level {info.level}; "
          f"torch kernels {torch.backends.cpu.get_cpu_capability()}", flush=True)
    out = Path(args.out)
    torch.set_num_threads(torch.get_num_threads())
    steps = args.steps or 1000
    if args.phase in ("speed", "both"):
        bad = [item for item in args.ab.split(",") if args.ab and "=" not in item]
        if bad:
            parser.error(f"--ab takes VAR=VALUE[,VAR=VALUE...], got {bad[0]!r}")
        measured = speed(out, args.iters, args.rounds, args.compile, args.ab)
        print(json.dumps({"speed": measured}, indent=1), flush=True)
        rate = measured["mean_tokens_per_s"]["zenlm_auto_compile" if args.compile else "zenlm_auto"]
        # Fit the schedule to the budget as nanoGPT's was: ~90% of the steps that fit.
        steps = args.steps or int(0.9 * rate * 60 * args.minutes / (BATCH * BLOCK))
        print(f"schedule fitted to the budget: {steps} steps", flush=True)
    if args.phase in ("budget", "both"):
        print(json.dumps({"budget": budget(out, args.minutes, steps, args.compile)},
                         indent=1, default=lambda x: None if isinstance(x, float) and
                         math.isnan(x) else str(x)))


if __name__ == "__main__":
    main()
