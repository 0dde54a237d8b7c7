"""How far a head alone can go: a linear probe on frozen all-MiniLM-L6-v2 features, SST-2.

    OMP_NUM_THREADS=1 python benchmarks/sst2_linear_probe.py \
        --train sst2-train.tsv --val sst2-val.tsv --out DIR

Issue 16 asks for 85% at epsilon 8. Differentially private training of the classification head
alone (every encoder weight frozen: 770 weights, the least noise) is the cheapest private
setting, and its ceiling is what a non-private, fully converged head reaches on the same
features. This measures that ceiling without zenlm: transformers computes each sentence's
features (64-token cut; mean of the last hidden states over real tokens, the model's own
sentence embedding; that mean L2-normalised; and the [CLS] state), scikit-learn standardises
them and fits an L2-regularised logistic regression to convergence (lbfgs) for each feature set
and C. Accuracy on the validation file; the JSON has every row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sst2_transformers_peer import DEFAULT_MODEL, read_tsv  # the same files, read alike
from transformers import AutoModel, AutoTokenizer

D = 384  # all-MiniLM-L6-v2's width
FEATURES = {"mean": slice(0, D), "mean, L2-normalised": slice(D, 2 * D),
            "[CLS]": slice(2 * D, 3 * D), "all three": slice(0, 3 * D)}


@torch.no_grad()
def features(model, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """(N, 3 * 384): mean-pooled, mean-pooled L2-normalised and [CLS] states per text."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding
    out = np.zeros((len(texts), 3 * D), dtype=np.float32)
    for start in range(0, len(order), 256):
        index = order[start:start + 256]
        batch = tokenizer([texts[i] for i in index], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (hidden * mask).sum(1) / mask.sum(1)
        out[index] = torch.cat([mean, torch.nn.functional.normalize(mean, dim=-1),
                                hidden[:, 0]], -1).numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--train", "--val", "--out"):
        parser.add_argument(flag, type=Path, required=True)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--c", default="0.1,1.0", help="inverse L2 strengths to fit")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).eval()
    (train_texts, train_labels), (val_texts, val_labels) = read_tsv(args.train), read_tsv(args.val)
    start = time.time()
    train_x = features(model, tokenizer, train_texts, args.max_length)
    val_x = features(model, tokenizer, val_texts, args.max_length)
    feature_minutes = (time.time() - start) / 60
    rows = []
    for name, columns in FEATURES.items():
        scaler = StandardScaler().fit(train_x[:, columns])
        for c in map(float, args.c.split(",")):
            probe = LogisticRegression(C=c, max_iter=2000)
            probe.fit(scaler.transform(train_x[:, columns]), train_labels)
            predicted = probe.predict(scaler.transform(val_x[:, columns]))
            accuracy = float((predicted == np.array(val_labels)).mean())
            rows.append({"features": name, "C": c, "accuracy": accuracy,
                         "iterations": int(probe.n_iter_[0])})
            print(f"{name:22s} C={c:<5g} validation accuracy {accuracy:.2%}", flush=True)
    result = {"train": len(train_texts), "val": len(val_texts), "max_length": args.max_length,
              "feature_minutes": round(feature_minutes, 2), "rows": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
