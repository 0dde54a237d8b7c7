"""A Transformer encoder classifier built and trained from scratch: Chinese hotel reviews.

No pretrained weights: a WordPiece tokenizer is learnt from the training reviews, a
small BERT-shaped encoder is built with random weights from zenlm's blocks, and the
one Trainer fits it with a classification head on ChnSentiCorp (1 = positive,
0 = negative). The validation reviews are held out before the tokenizer is trained,
so nothing about them leaks into the model.

    python examples/encoder_from_scratch.py                       # a few minutes
    python examples/encoder_from_scratch.py --max-steps 20 --limit 400   # a quick look

Prints the model's size, the validation accuracy, and a label for two new reviews.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from pathlib import Path

from zenlm.config import from_hf_config
from zenlm.io.hf import save_hf_model
from zenlm.models.build import build_model
from zenlm.tasks import load_task
from zenlm.tasks.runner import FinetuneOptions, finetune
from zenlm.tokenizer_train import train_tokenizer

DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[1].parent / "shared"
                           / "data"))
NEW = ["房间干净，服务热情，下次还会再来。", "设施陈旧，隔音很差，前台态度也不好。"]


def read_reviews(path: Path, limit: int, seed: int) -> list[tuple[str, str]]:
    """`limit` (0: all) shuffled (review, label) rows of ChnSentiCorp's CSV.

    The file is sorted by label: shuffle before taking a sample.
    """
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [(r["review"].replace("\t", " ").replace("\n", " ").strip(), r["label"])
                for r in csv.DictReader(handle)]
    rows = [row for row in rows if row[0]]
    random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


def build_encoder(folder: Path, texts: list[str], vocab_size: int) -> Path:
    """A random-weight BERT-shaped encoder and its tokenizer, saved as a model folder."""
    tokenizer = train_tokenizer(texts, kind="wordpiece", vocab_size=vocab_size)
    config = from_hf_config({
        "model_type": "bert", "vocab_size": tokenizer.vocab_size, "hidden_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512,
        "max_position_embeddings": 256, "type_vocab_size": 2, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12, "pad_token_id": tokenizer.pad_token_id or 0})
    model = build_model(config)
    print(f"encoder from scratch: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
          f"parameters, {tokenizer.vocab_size} WordPiece tokens")
    return save_hf_model(model, folder, tokenizer)


def main(argv: list[str] | None = None) -> None:
    """Split, learn a tokenizer, build the encoder, train, predict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA / "chnsenticorp" / "train.csv"))
    parser.add_argument("--out", default="runs/example-encoder-from-scratch")
    parser.add_argument("--limit", type=int, default=0, help="first N reviews only (0: all)")
    parser.add_argument("--max-steps", type=int, default=0, help="0: --epochs")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rows = read_reviews(Path(args.data), args.limit, args.seed)
    cut = len(rows) // 10
    val, train = rows[:cut], rows[cut:]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("val", val)):
        (out / f"{name}.tsv").write_text(
            "review\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part), encoding="utf-8")
    folder = build_encoder(out / "scratch", [text for text, _ in train], vocab_size=8000)
    summary = finetune(FinetuneOptions(
        task="classify", model=str(folder), train=str(out / "train.tsv"),
        val=str(out / "val.tsv"), output=str(out), epochs=args.epochs,
        max_steps=args.max_steps, lr=1e-3, max_length=160, seed=args.seed,
        # classify's defaults freeze the embeddings of a pretrained model; this one's were
        # trained for a few minutes only, so they keep learning here
        freeze_embeddings=False))
    scores = summary["validation"]
    print(f"validation: accuracy {scores['accuracy']:.4f}, macro F1 {scores['f1']:.4f} on "
          f"{scores['n']} reviews after {summary['steps']} steps "
          f"({summary['train_minutes']:.1f} min)")
    classifier = load_task(summary["model_dir"])
    for record in classifier.predict(NEW):
        print(f"{record['label']} ({record['probs'][record['label']]:.2f})  {record['text']}")


if __name__ == "__main__":
    main()
