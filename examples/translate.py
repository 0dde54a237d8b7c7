"""Translation with an encoder-decoder built from scratch: Multi30k, English -> German.

A joint byte-level BPE is learnt from both sides of the training text; a small
Transformer in the 2017 paper's shape (post-norm, sinusoidal positions, one shared
embedding) is built from zenlm's blocks with random weights; `finetune --task
translate` trains it with teacher forcing and label smoothing; translations are
generated with beam search and scored with sacreBLEU.

    python examples/translate.py                   # a 20-minute training budget
    python examples/translate.py --minutes 1 --limit 500 --val-limit 20

Prints validation BLEU and chrF, then a few translations.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from zenlm.config import ModelConfig
from zenlm.io.hf import save_hf_model
from zenlm.models.build import build_model
from zenlm.tasks import load_task
from zenlm.tasks.evaluate import evaluate_finetuned
from zenlm.tasks.runner import FinetuneOptions, finetune
from zenlm.tokenizer_train import train_tokenizer

DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[1].parent / "shared"
                           / "data"))
NEW = ["A man is riding a bike down the street.", "Two children are playing in the snow."]


def lines(path: Path, limit: int) -> list[str]:
    """The first `limit` lines of a text file (all when 0)."""
    text = path.read_text(encoding="utf-8").splitlines()
    return text[:limit] if limit else text


def new_model(folder: Path, texts: list[str], d_model: int) -> Path:
    """A random-weight Transformer (Marian layout) and its joint tokenizer, as a folder."""
    tokenizer = train_tokenizer(texts, kind="bpe", vocab_size=8000)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, d_model=d_model, n_layers=3, n_heads=4,
        d_ff=4 * d_model, max_seq_len=256, arch="encoder-decoder", norm="layernorm",
        norm_bias=True, pre_norm=False, final_norm=False, activation="relu", gated_mlp=False,
        qkv_bias=True, attn_out_bias=True, mlp_bias=True, positions="sinusoidal",
        scale_embeddings=True, lm_head_bias=True, tie_embeddings=True, share_embeddings=True,
        dropout=0.1, hf_model_type="marian", pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    return save_hf_model(build_model(config), folder, tokenizer)


def main(argv: list[str] | None = None) -> None:
    """Tokenizer, model, training, scores, translations."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA / "multi30k"))
    parser.add_argument("--out", default="runs/example-translate")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget")
    parser.add_argument("--limit", type=int, default=0, help="training pairs (0: all)")
    parser.add_argument("--val-limit", type=int, default=200, help="validation pairs scored")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--num-beams", type=int, default=5)
    args = parser.parse_args(argv)

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, limit in (("train", args.limit), ("val", args.val_limit)):
        for side in ("en", "de"):
            (out / f"{split}.{side}").write_text(
                "\n".join(lines(data / f"{split}.{side}", limit)) + "\n", encoding="utf-8")
    texts = lines(out / "train.en", 0) + lines(out / "train.de", 0)
    folder = new_model(out / "init", texts, args.d_model)
    summary = finetune(FinetuneOptions(
        task="translate", model=str(folder), train=str(out / "train.en"),
        train_target=str(out / "train.de"), val=str(out / "val.en"),
        val_target=str(out / "val.de"), output=str(out), minutes=args.minutes, epochs=10,
        batch_size=96, lr=7e-4, warmup_fraction=0.05, weight_decay=0.0, autocast="float32"))
    report = evaluate_finetuned("translate", summary["model_dir"], None,
                                source=str(out / "val.en"), target=str(out / "val.de"),
                                num_beams=args.num_beams)
    scores = report.metrics
    print(f"validation ({scores['n']} pairs, beam {args.num_beams}): "
          f"BLEU {scores['bleu']:.2f}, "
          f"chrF {scores['chrf']:.2f} after {summary['steps']} steps")
    translator = load_task(summary["model_dir"])
    for record in translator.predict(NEW):
        print(f"{record['source']}\n  -> {record['translation']}")


if __name__ == "__main__":
    main()
