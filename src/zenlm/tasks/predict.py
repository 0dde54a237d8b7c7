"""Predictions of a fine-tuned task model for every record of a file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zenlm.data import tasks as readers
from zenlm.tasks import classify, ner, qa


def predict_records(model: nn.Module, tokenizer: Any, info: dict[str, Any], path: str | Path,
                    *, max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
    """One JSON-able record per input example."""
    from zenlm.tasks.runner import features_for, pad_id

    task = info["task"]
    config = getattr(model, "backbone", model).config
    pad = pad_id(tokenizer, config)
    if task == "classify":
        examples = readers.read_classification(path, require_labels=False)
        probs = classify.predict_classify(model, features_for(task, tokenizer, examples, info,
                                                              labelled=False), pad)
        for example, row in zip(examples, probs, strict=True):
            yield {"text": example.text, "label": info["labels"][int(row.argmax())],
                   "probs": dict(zip(info["labels"], [round(float(p), 6) for p in row],
                                     strict=True))}
    elif task == "ner":
        examples = readers.read_conll(path, require_tags=False)
        features = features_for(task, tokenizer, examples, info, labelled=False)
        for example, tags in zip(examples, ner.predict_tags(model, features, len(examples), pad),
                                 strict=True):
            yield {"tokens": example.tokens, "tags": [info["labels"][t] for t in tags]}
    elif task == "qa":
        examples = readers.read_squad(path, require_answers=False)
        features = features_for(task, tokenizer, examples, info, labelled=False)
        for qid, answer in qa.predict_qa(model, examples, features, pad).items():
            yield {"id": qid, "answer": answer}
    else:
        yield from _chat_replies(model, tokenizer, path, max_new_tokens)


def _chat_replies(model: nn.Module, tokenizer: Any, path: str | Path,
                  max_new_tokens: int) -> Iterator[dict[str, Any]]:
    from zenlm.api import LM

    lm = LM(model, tokenizer)
    for example in readers.read_chat(path):
        prompt = example.messages[: max(i for i, m in enumerate(example.messages)
                                        if m["role"] == "assistant")]
        with torch.inference_mode():
            reply = lm.chat(prompt, max_new_tokens=max_new_tokens)
        yield {"messages": prompt, "reply": reply}
