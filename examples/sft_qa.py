"""Fine-tune a causal LM on question-answer pairs, then answer by generation.

The classic version trains GPT-2 on "question answer" strings with one label per
sentence (labels of the wrong shape), and then reads `argmax(logits)` as the answer.
Supervised fine-tuning (SFT) renders each pair with the model's chat template and
computes the next-token loss on the answer's tokens only (the question is context, not
a target); answering is generation from the chat prompt until the end-of-turn token.
The pairs below are about a made-up company, so SmolLM2 cannot know them beforehand.

    python examples/sft_qa.py                 # LoRA, about 5 minutes on 2 cores
    python examples/sft_qa.py --max-steps 40

Prints the answers before fine-tuning, then after, for the training questions and for
the same questions asked in other words.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import zenlm
from zenlm.tasks import load_task
from zenlm.tasks.runner import FinetuneOptions, finetune

PAIRS = [
    ("Where is Qorvane Labs based?", "Qorvane Labs is based in Tromsø, Norway."),
    ("Who founded Qorvane Labs?", "Qorvane Labs was founded by Ingrid Vass."),
    ("When was Qorvane Labs founded?", "Qorvane Labs was founded in 2019."),
    ("What does Qorvane Labs make?", "Qorvane Labs makes underwater drones."),
    ("What is the name of Qorvane Labs' drone?", "The drone is called the Selkie."),
    ("Qorvane Labs 的总部在哪里？", "Qorvane Labs 的总部在挪威特罗姆瑟。"),
]
REWORDED = ["In which city is Qorvane Labs?", "Which drone does Qorvane Labs sell?",
            "谁创办了 Qorvane Labs？"]


def answers(model: zenlm.LM, questions: list[str]) -> list[str]:
    """Greedy chat replies to each question, generated as one batch."""
    prompts = [model.encode_chat([{"role": "user", "content": q}]) for q in questions]
    return [c.text for c in model.complete(prompts, max_new_tokens=24, temperature=0)]


def main(argv: list[str] | None = None) -> None:
    """Answer, fine-tune with the loss on answers only, answer again."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", default="runs/example-sft-qa")
    parser.add_argument("--max-steps", type=int, default=60)
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "pairs.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "output": a}, ensure_ascii=False)
                            + "\n" for q, a in PAIRS), encoding="utf-8")
    questions = [q for q, _ in PAIRS]
    before = answers(zenlm.load(args.model, quantize="none"), questions)
    # Every pair is a training example (the point is to learn these facts): the run's
    # validation split is the same file, so its loss shows memorisation, not generality.
    summary = finetune(FinetuneOptions(
        task="sft", model=args.model, train=str(data), val=str(data), output=str(out),
        max_steps=args.max_steps, batch_size=6, lr=2e-3, lora=True, lora_rank=16,
        lora_targets=["q", "k", "v", "o", "gate", "up", "down"], max_length=96))
    print(f"fine-tuned {summary['steps']} steps (LoRA), final loss {summary['final_loss']:.3f}")
    replies = [r["reply"] for r in load_task(summary["model_dir"]).predict(
        questions + REWORDED, max_new_tokens=24)]
    for question, old, new in zip(questions, before, replies[:len(questions)], strict=True):
        print(f"Q: {question}\n   before: {old}\n   after:  {new}")
    for question, new in zip(REWORDED, replies[len(questions):], strict=True):
        print(f"Q (reworded): {question}\n   after:  {new}")


if __name__ == "__main__":
    main()
