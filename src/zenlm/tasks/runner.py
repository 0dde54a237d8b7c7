"""Fine-tune, evaluate and predict for one task, training through the one Trainer.

Each task is a `TaskSpec`: how to turn read examples into features, collate them,
the loss (the Trainer's objective), and the metrics on labelled data. `finetune`
builds the task model (full or LoRA, optionally with frozen lower layers), hands it
to `zenlm.train.Trainer` with `TaskSampler`s, then saves a task model folder.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import zenlm
from zenlm.data import tasks as readers
from zenlm.eval import metrics
from zenlm.nn.lora import apply_lora
from zenlm.tasks import classify, ner, qa, sft
from zenlm.tasks.batching import TaskSampler
from zenlm.tasks.checkpoint import backbone_of, build_task_model, save_task_model
from zenlm.tasks.vocab import extend_vocabulary, unknown_characters

TASKS = ("classify", "ner", "qa", "sft")


@dataclass
class FinetuneOptions:
    """Everything `zenlm finetune` takes (CLI flags of the same names)."""

    task: str
    model: str
    train: str
    val: str | None = None
    output: str = "runs/finetune"
    val_fraction: float = 0.1  # held out of --train when --val is not given
    epochs: float = 1.0
    max_steps: int = 0  # overrides epochs when > 0
    max_minutes: float = 0.0
    batch_size: int = 32
    lr: float = 5e-5
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    max_length: int = 128
    stride: int = 128  # qa: overlap of context windows
    pooling: str | None = None  # classify: cls | mean | last
    class_weights: bool = False  # classify/ner: inverse-frequency loss weights
    freeze_layers: int = 0  # freeze the embeddings and this many lowest blocks
    freeze_embeddings: bool = False  # freeze the embeddings only (a third of MiniLM's weights)
    group_by_length: bool = True  # batches of similar lengths: less padding, faster steps
    extend_vocab: int = 0  # add up to this many unknown characters of --train as tokens
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q", "k", "v", "o"])
    pack: bool = True  # sft: pack conversations into max_length rows
    eval_every: int = 0  # steps between validation-metric evaluations (0: at the end only)
    patience: int = 0  # stop after this many evaluations without improvement (0: never)
    seed: int = 0
    dtype: str = "float32"


# ------------------------------------------------------------------ data
def read_task_file(task: str, path: str | Path, labels: Sequence[str] | None = None) -> list:
    """Examples of a task file, checked (labels outside `labels` are errors)."""
    if task == "classify":
        return readers.read_classification(path, labels=labels)
    if task == "ner":
        return readers.read_conll(path, labels=labels)
    if task == "qa":
        return readers.read_squad(path)
    if task == "sft":
        return readers.read_chat(path)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def split_examples(task: str, examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Seeded train/validation split; SQuAD by article, so no passage is in both."""
    keys = sorted({e.title for e in examples}) if task == "qa" else list(range(len(examples)))
    random.Random(seed).shuffle(keys)
    n_val = max(1, round(len(keys) * fraction))
    held = set(keys[:n_val])
    if task == "qa":
        return ([e for e in examples if e.title not in held],
                [e for e in examples if e.title in held])
    return ([e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])


def label_set(task: str, examples: list) -> list[str]:
    """Sorted labels (classify) or tags, "O" first (ner); empty for qa and sft."""
    if task == "classify":
        return sorted({e.label for e in examples})
    if task == "ner":
        tags = {t for e in examples for t in e.tags}
        return ["O", *sorted(tags - {"O"})]
    return []


def pad_id(tokenizer: Any, config: Any) -> int:
    """The padding id: the tokenizer's, else config.json's, else 0."""
    value = tokenizer.pad_token_id
    return value if value is not None else (config.pad_token_id or 0)


def features_for(task: str, tokenizer: Any, examples: list, info: dict[str, Any],
                 labelled: bool = True) -> list:
    """Tokenized features of `examples` for `task`."""
    length = info["max_length"]
    if task == "classify":
        index = {label: i for i, label in enumerate(info["labels"])}
        targets = [index[e.label] for e in examples] if labelled else None
        keep_last = info.get("arch") == "encoder"
        return classify.encode_texts(tokenizer, [e.text for e in examples], targets,
                                     max_length=length, keep_last=keep_last)
    if task == "ner":
        index = {tag: i for i, tag in enumerate(info["labels"])}
        tags = [[index[t] for t in e.tags] for e in examples] if labelled else None
        return ner.encode_words(tokenizer, [e.tokens for e in examples], tags, max_length=length)
    if task == "qa":
        return qa.qa_features(tokenizer, examples, max_length=length, stride=info["stride"],
                              labelled=labelled)
    return [sft.encode_conversation(tokenizer, e.messages, max_length=length) for e in examples]


def collate_for(task: str, pad: int) -> Callable[[list], Any]:
    """The collator of `task`."""
    table = {"classify": classify.collate_classify, "ner": ner.collate_tokens,
             "qa": qa.collate_qa, "sft": sft.collate_sft}
    return functools.partial(table[task], pad_id=pad)


def objective_for(task: str, weights: torch.Tensor | None = None) -> Callable:
    """(model, batch) -> loss for the Trainer."""
    if task == "classify":
        return functools.partial(classify.classify_loss, class_weights=weights)
    if task == "ner":
        return functools.partial(ner.token_loss, class_weights=weights)
    return qa.qa_loss if task == "qa" else sft.sft_loss


# --------------------------------------------------------------- metrics
def evaluate_task(model: nn.Module, tokenizer: Any, info: dict[str, Any], examples: list,
                  pad: int) -> dict[str, Any]:
    """The task's metrics of `model` on labelled `examples`."""
    task = info["task"]
    features = features_for(task, tokenizer, examples, info)
    if task == "classify":
        probs = classify.predict_classify(model, features, pad)
        predicted = [info["labels"][i] for i in probs.argmax(-1).tolist()]
        truth = [e.label for e in examples]
        prf = metrics.precision_recall_f1(truth, predicted, info["labels"])
        return {"accuracy": metrics.accuracy(truth, predicted), "f1": prf["macro"]["f1"],
                "macro": prf["macro"], "micro": prf["micro"], "per_class": prf["per_class"],
                "confusion_matrix": metrics.confusion_matrix(truth, predicted, info["labels"]),
                "n": len(examples)}
    if task == "ner":
        tags = ner.predict_tags(model, features, len(examples), pad)
        predicted = [[info["labels"][t] for t in row] for row in tags]
        scores = metrics.entity_f1([e.tags for e in examples], predicted)
        return {**scores, "n": len(examples)}
    if task == "qa":
        answers = qa.predict_qa(model, examples, features, pad)
        refs = {e.id: [a for a, _ in e.answers] for e in examples}
        return {**metrics.squad_scores(answers, refs), "n": len(examples)}
    return _sft_metrics(model, features, pad)


@torch.inference_mode()
def _sft_metrics(model: nn.Module, features: list, pad: int) -> dict[str, Any]:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(features), 8):
        batch = sft.collate_sft(features[start:start + 8], pad)
        n = int((batch.labels[:, 1:] != sft.IGNORE).sum())
        if n:
            total += float(sft.sft_loss(model, batch)) * n
            count += n
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count,
            "n": len(features)}


# -------------------------------------------------------------- training
def prepare_model(opts: FinetuneOptions, info: dict[str, Any], backbone: nn.Module) -> nn.Module:
    """The task model: fresh head, optional frozen layers and LoRA on the backbone."""
    model = build_task_model(info, backbone)
    if opts.lora:
        apply_lora(backbone_of(model), opts.lora_rank, opts.lora_alpha, opts.lora_dropout,
                   opts.lora_targets)
    if opts.freeze_layers or opts.freeze_embeddings:
        freeze_lower(backbone_of(model), opts.freeze_layers)
    return model


def freeze_lower(backbone: nn.Module, n_blocks: int) -> None:
    """Freeze the embeddings and the `n_blocks` lowest blocks (they change least in tuning)."""
    if n_blocks > len(backbone.blocks):
        raise ValueError(f"freeze_layers={n_blocks} but the model has {len(backbone.blocks)}")
    frozen = [backbone.embed, *backbone.blocks[:n_blocks]]  # n_blocks=0: embeddings only
    frozen += [getattr(backbone, n) for n in ("positions", "token_types", "embed_norm")
               if getattr(backbone, n, None) is not None]
    for module in frozen:
        for param in module.parameters():
            param.requires_grad_(False)


def finetune(opts: FinetuneOptions) -> dict[str, Any]:
    """Train, select the best model on the validation split, save; returns a summary."""
    torch.manual_seed(opts.seed)
    lm = zenlm.load(opts.model, dtype=opts.dtype if opts.dtype != "float32" else None,
                    quantize=None)  # trained: the weights as stored
    train_examples = read_task_file(opts.task, opts.train)
    if opts.val:
        val_examples = read_task_file(opts.task, opts.val)
    else:
        train_examples, val_examples = split_examples(opts.task, train_examples,
                                                      opts.val_fraction, opts.seed)
    info = {"task": opts.task, "labels": label_set(opts.task, train_examples),
            "max_length": opts.max_length, "stride": opts.stride, "pooling": opts.pooling,
            "arch": lm.config.arch, "base_model": str(opts.model)}
    _check_val_labels(opts.task, info["labels"], val_examples)
    if opts.extend_vocab:
        texts = [_example_text(e) for e in train_examples]
        added = unknown_characters(lm.tokenizer, texts, opts.extend_vocab)
        info["added_tokens"] = extend_vocabulary(lm.tokenizer, lm.model, added)
    pad = pad_id(lm.tokenizer, lm.config)
    train_features = features_for(opts.task, lm.tokenizer, train_examples, info)
    if opts.task == "sft" and opts.pack:
        train_features = sft.pack(train_features, opts.max_length)
    val_features = features_for(opts.task, lm.tokenizer, val_examples, info)
    model = prepare_model(opts, info, lm.model)
    last: dict[str, Any] = {}  # the latest evaluation's full scores
    metric = functools.partial(_headline, tokenizer=lm.tokenizer, info=info,
                               examples=val_examples, pad=pad, last=last)
    trainer = _trainer(opts, model, train_features, val_features, collate_for(opts.task, pad),
                       _class_weights(opts, info, train_features), metric)
    start = time.perf_counter()
    result = trainer.fit(resume="none")
    train_s = time.perf_counter() - start
    trainer.restore_best()
    # The run ends with an evaluation; score again only if an earlier model was better.
    scores = last["scores"] if trainer.best_step == result.steps and last else evaluate_task(
        model, lm.tokenizer, info, val_examples, pad)
    out = Path(opts.output)
    save_task_model(model, out / "model", lm.tokenizer, info)
    return {"task": opts.task, "steps": result.steps, "final_loss": result.final_loss,
            "train_minutes": train_s / 60, "train_examples": len(train_examples),
            "val_examples": len(val_examples), "best_step": trainer.best_step,
            "history": trainer.history, "validation": scores, "model_dir": str(out / "model")}


def _trainer(opts: FinetuneOptions, model: nn.Module, train_features: list,
             val_features: list, collate: Callable, weights: torch.Tensor | None,
             metric: Callable[[nn.Module], float]) -> Any:
    """The one Trainer (with metric-based model selection) set up for a task run."""
    from zenlm.tasks.selection import MetricTrainer
    from zenlm.train.config import LoopConfig, OptimConfig

    steps = opts.max_steps or math.ceil(opts.epochs * len(train_features) / opts.batch_size)
    return MetricTrainer(
        model, objective_for(opts.task, weights),
        TaskSampler(train_features, collate, block_size=opts.max_length, seed=opts.seed,
                    group_batch=opts.batch_size if opts.group_by_length else 0,
                    lengths=[len(f.ids) for f in train_features]),
        TaskSampler(val_features, collate, block_size=opts.max_length, shuffle=False),
        optim=OptimConfig(lr=opts.lr, min_lr=0.0, warmup_steps=int(opts.warmup_fraction * steps),
                          schedule="linear", weight_decay=opts.weight_decay, beta2=0.999),
        loop=LoopConfig(out_dir=str(Path(opts.output) / "run"), max_steps=steps,
                        batch_size=opts.batch_size, seed=opts.seed, eval_every=opts.eval_every,
                        eval_batches=0, save_every=0, keep_last=1, max_minutes=opts.max_minutes,
                        export_hf=False, dtype="float32"),
        run_config={"finetune": asdict(opts)},
        metric=metric, patience=opts.patience,
    )


HEADLINE = {"classify": "accuracy", "ner": "f1", "qa": "f1", "sft": "loss"}


def _headline(model: nn.Module, *, tokenizer: Any, info: dict[str, Any], examples: list,
              pad: int, last: dict[str, Any]) -> float:
    """The task's headline validation metric, higher is better (sft: minus the loss)."""
    scores = last["scores"] = evaluate_task(model, tokenizer, info, examples, pad)
    value = scores[HEADLINE[info["task"]]]
    return -value if info["task"] == "sft" else value


def _example_text(example: Any) -> str:
    if hasattr(example, "text"):
        return example.text
    if hasattr(example, "tokens"):
        return " ".join(example.tokens)
    if hasattr(example, "context"):
        return f"{example.question} {example.context}"
    return " ".join(m["content"] for m in example.messages)


def _check_val_labels(task: str, labels: list[str], examples: list) -> None:
    if task == "classify":
        for e in examples:
            if e.label not in labels:
                raise readers.TaskDataError(f"line {e.line}: validation label {e.label!r} "
                                            f"never occurs in training ({labels})")
    if task == "ner":
        for e in examples:
            unknown = set(e.tags) - set(labels)
            if unknown:
                raise readers.TaskDataError(f"line {e.line}: validation tags {sorted(unknown)} "
                                            f"never occur in training")


def _class_weights(opts: FinetuneOptions, info: dict[str, Any], features: list):
    if not opts.class_weights or opts.task not in ("classify", "ner"):
        return None
    if opts.task == "classify":
        labels = [f.label for f in features]
    else:
        labels = [t for f in features for t in f.labels if t != ner.IGNORE]
    return classify.class_weights_from_counts(labels, len(info["labels"]))
