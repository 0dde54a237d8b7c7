"""Zero-shot SST-2 with all-MiniLM-L6-v2: each sentence goes to the nearest label text.

    OMP_NUM_THREADS=1 python benchmarks/sst2_zero_shot.py --val sst2-val.tsv --out DIR

What `zenlm finetune --label-prompts` starts a classification head from, measured without
zenlm: transformers computes the mean-pooled sentence embedding of each validation sentence
and of two label texts (negative, positive); a sentence is labelled by the larger cosine.
One row per pair of label texts tried; no training row is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from sst2_linear_probe import D, features  # the same pooling, computed alike
from sst2_transformers_peer import DEFAULT_MODEL, read_tsv
from transformers import AutoModel, AutoTokenizer

PAIRS = [("negative", "positive"), ("bad", "good"), ("terrible", "great"),
         ("negative review", "positive review"), ("a terrible movie", "a great movie"),
         ("this movie is bad", "this movie is good"),
         ("I hated this film, it was awful", "I loved this film, it was wonderful")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).eval()
    texts, labels = read_tsv(args.val)
    unit = slice(D, 2 * D)  # the L2-normalised mean: dot products are cosines
    sentences = torch.from_numpy(features(model, tokenizer, texts, args.max_length)[:, unit])
    rows = []
    for pair in PAIRS:
        prompts = torch.from_numpy(features(model, tokenizer, list(pair), args.max_length)[:, unit])
        predicted = (sentences @ prompts.T).argmax(-1)
        accuracy = float((predicted == torch.tensor(labels)).float().mean())
        rows.append({"negative": pair[0], "positive": pair[1], "accuracy": accuracy})
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"val": str(args.val), "val_rows": len(texts),
              "majority": max(sum(labels), len(labels) - sum(labels)) / len(labels),
              "pairs": rows}
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
