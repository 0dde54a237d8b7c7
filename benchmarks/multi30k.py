"""Multi30k English->German from scratch on this machine: tokenizer, training, evaluation.

One command, end to end, in at most an hour of wall-clock on 2 cores:

    .venv/bin/python benchmarks/multi30k.py --out runs/multi30k

1. a joint byte-level BPE for English and German (zenlm's tokenizer trainer) on the
   training sentences of both sides;
2. a small Transformer in the 2017 paper's shape (post-norm, sinusoidal positions,
   embeddings scaled by sqrt(d), one shared vocabulary and embedding, tied output),
   written as a Marian folder (`DIR/init`) so that every later step goes through the
   real CLI;
3. `zenlm finetune --task translate --minutes M` from that folder: the learning-rate
   schedule (warm-up, then linear decay to zero) runs over the wall-clock budget, so the
   run ends when the budget does, whatever the machine's speed;
4. `zenlm evaluate --task translate` on the validation split, greedy and beam 5,
   sacreBLEU (detokenized, cased, 13a) and chrF.

The trained model is left in `DIR/model`; `DIR/results.json` has every figure and
command. Training arithmetic is float32: on a model this small bfloat16 autocast was
2.7x slower per step on an AVX-512 BF16 CPU (its casts cost more than the matmuls save).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ZENLM_DATA", REPO.parent / "shared" / "data")) / "multi30k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--data", default=str(DATA), help="folder with {train,val}.{en,de}")
    parser.add_argument("--minutes", type=float, default=44.0, help="training budget")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3, help="encoder and decoder blocks")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--lr", type=float, default=7e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from zenlm.cpu import cpu_info

    start = time.perf_counter()
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    print(cpu_info().describe(), flush=True)
    results: dict = {"cpu": cpu_info().describe(), "args": vars(args)}
    tokenizer = build_tokenizer(data, args.vocab)
    write_initial_model(out / "init", tokenizer, args)
    train = finetune_command(out, data, args)
    results["finetune_command"] = " ".join(train)
    results["finetune"] = run_json(train, "finetune")
    summary = results["finetune"]
    print(f"trained {summary['steps']} steps in {summary['train_minutes']:.1f} min; "
          f"validation (greedy) {summary['validation']}", flush=True)
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    shutil.move(str(out / "run" / "model"), str(out / "model"))
    for beams in (1, 5):
        command = [sys.executable, "-m", "zenlm", "evaluate", "--task", "translate",
                   "--model", str(out / "model"), "--source", str(data / "val.en"),
                   "--target", str(data / "val.de"), "--num-beams", str(beams), "--json"]
        began = time.perf_counter()
        scores = run_json(command, f"evaluate beam {beams}")
        scores["seconds"] = time.perf_counter() - began
        results[f"val_beam{beams}"] = {**scores, "command": " ".join(command)}
        print(f"beam {beams}: BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}  "
              f"({scores['seconds']:.0f} s)", flush=True)
    results["wall_minutes"] = (time.perf_counter() - start) / 60
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wall-clock {results['wall_minutes']:.1f} min; results in {out / 'results.json'}")


def build_tokenizer(data: Path, vocab: int):  # noqa: ANN201 - zenlm.Tokenizer
    """A joint byte-level BPE over both sides of the training text."""
    from zenlm.tokenizer_train import train_tokenizer

    texts = [line for name in ("train.en", "train.de")
             for line in (data / name).read_text(encoding="utf-8").splitlines()]
    return train_tokenizer(texts, kind="bpe", vocab_size=vocab)


def model_config(tokenizer, args: argparse.Namespace):  # noqa: ANN001, ANN201
    """The 2017 Transformer's shape at Multi30k's scale, as a Marian config."""
    from zenlm.config import ModelConfig

    return ModelConfig(
        vocab_size=tokenizer.vocab_size, d_model=args.d_model, n_layers=args.layers,
        n_heads=args.heads, d_ff=4 * args.d_model, max_seq_len=256, arch="encoder-decoder",
        norm="layernorm", norm_bias=True, norm_eps=1e-5, pre_norm=False, final_norm=False,
        activation="relu", gated_mlp=False, qkv_bias=True, attn_out_bias=True, mlp_bias=True,
        positions="sinusoidal", scale_embeddings=True, lm_head_bias=True, tie_embeddings=True,
        share_embeddings=True, dropout=args.dropout, hf_model_type="marian",
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    )


def write_initial_model(folder: Path, tokenizer, args: argparse.Namespace) -> None:  # noqa: ANN001
    """A freshly initialised model folder (config.json, weights, tokenizer)."""
    from zenlm.io.hf import save_hf_model
    from zenlm.models import build_model

    torch.manual_seed(args.seed)
    model = build_model(model_config(tokenizer, args))
    save_hf_model(model, folder, tokenizer)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.1f}M parameters, vocabulary {tokenizer.vocab_size}", flush=True)


def finetune_command(out: Path, data: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "zenlm", "finetune", "--task", "translate",
            "--model", str(out / "init"), "--output", str(out / "run"),
            "--train", str(data / "train.en"), "--train-target", str(data / "train.de"),
            "--val", str(data / "val.en"), "--val-target", str(data / "val.de"),
            "--minutes", str(args.minutes), "--epochs", "10", "--eval-every", "0",
            "--batch-size", str(args.batch_size), "--lr", str(args.lr),
            "--warmup-fraction", "0.05", "--weight-decay", "0.0", "--max-length", "128",
            "--label-smoothing", "0.1", "--autocast", "float32", "--seed", str(args.seed)]


def run_json(command: list[str], what: str) -> dict:
    """Run a zenlm command that prints JSON; its progress (stderr) streams to the console."""
    print(f"$ {' '.join(command)}", flush=True)
    process = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO, check=False)
    if process.returncode:
        raise SystemExit(f"{what} failed with exit code {process.returncode}")
    text = process.stdout
    return json.loads(text[text.index("{"):])


if __name__ == "__main__":
    main()
