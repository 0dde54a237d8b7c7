"""Integrated gradients on an SST-2 classifier: completeness error and time against n_steps.

Run: .venv/bin/python benchmarks/explain_completeness.py MODEL [--sentences 10]
MODEL is a `zenlm finetune --task classify` folder (e.g. MiniLM fine-tuned on SST-2, see
docs/responsible-use.md). Sentences: a seeded (0) sample of ../shared/data/sst2/train.tsv.
For each n_steps: the median and largest |sum(attributions) - (f(x) - f(baseline))| /
|f(x) - f(baseline)| over the sentences (captum's convergence delta, relative), and the
seconds per sentence; gradient x input's time for scale.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import torch

from zenlm.cpu import cpu_info
from zenlm.explain.attribution import attribute
from zenlm.explain.subject import load_subject
from zenlm.explain.tokens import input_embedding, special_ids
from zenlm.tasks.spec import pad_id

DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--sentences", type=int, default=10)
    parser.add_argument("--steps", default="8,16,32,64,128")
    args = parser.parse_args()
    print(cpu_info().describe(), flush=True)
    rows = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    random.Random(0).shuffle(rows)
    texts = [r.rsplit("\t", 1)[0] for r in rows if len(r.split()) >= 8][: args.sentences]
    subject = load_subject(args.model)
    embed = input_embedding(subject.model)
    pad, special = pad_id(subject.tokenizer, subject.config), special_ids(subject.tokenizer)
    encoded = [torch.tensor([subject.encode(t)]) for t in texts]
    print(f"{len(texts)} sentences, {statistics.mean(e.shape[1] for e in encoded):.1f} "
          "tokens on average")
    print("| method | n_steps | median relative error | max relative error | s / sentence |")
    print("| --- | --- | --- | --- | --- |")
    for steps in [int(s) for s in args.steps.split(",")]:
        errors, start = [], time.perf_counter()
        for ids in encoded:
            with torch.no_grad():
                label = int(subject.model(ids)[0].argmax())
            found = attribute(subject.model, embed, ids, [label], pad=pad, special=special,
                              n_steps=steps)
            errors.append(found.completeness_error())
        seconds = (time.perf_counter() - start) / len(encoded)
        print(f"| integrated gradients | {steps} | {statistics.median(errors):.2e} | "
              f"{max(errors):.2e} | {seconds:.2f} |", flush=True)
    start = time.perf_counter()
    for ids in encoded:
        attribute(subject.model, embed, ids, [0], pad=pad, special=special, method="gxi")
    seconds = (time.perf_counter() - start) / len(encoded)
    print(f"| gradient x input | - | - | - | {seconds:.2f} |")


if __name__ == "__main__":
    main()
