"""Fine-tune a model for one task, training through the one Trainer.

Each task is a `zenlm.tasks.spec.TaskSpec` found by name in `zenlm.tasks.registry`:
how to read its files, turn examples into features, collate them, its loss (the
Trainer's objective), its model and its metrics. `finetune` builds the task model
(full or LoRA, optionally with frozen lower layers), hands it to `zenlm.train.Trainer`
with `TaskSampler`s, then saves a task model folder with its `TaskInfo`.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zenlm.api import load
from zenlm.nn import Block
from zenlm.nn.lora import apply_lora
from zenlm.nn.norm import RMSNorm
from zenlm.tasks import defaults, private
from zenlm.tasks.batching import TaskSampler
from zenlm.tasks.checkpoint import backbone_of, build_task_model, save_task_model
from zenlm.tasks.classify import class_weights_from_counts
from zenlm.tasks.registry import get_task
from zenlm.tasks.spec import TaskInfo, TaskSpec, pad_id
from zenlm.tasks.vocab import extend_vocabulary, unknown_characters


@dataclass
class FinetuneOptions:
    """Everything `zenlm finetune` takes (CLI flags of the same names)."""

    task: str
    model: str
    train: str
    val: str | None = None
    train_target: str | None = None  # translate/summarize: --train is then the source file
    val_target: str | None = None  # likewise for --val
    output: str = "runs/finetune"
    val_fraction: float = 0.1  # held out of --train when --val is not given
    # None: the task's own default (`TaskSpec.defaults`, else `zenlm.tasks.defaults.GENERIC`)
    epochs: float | None = None
    max_steps: int = 0  # overrides epochs when > 0
    # Stop after this wall-clock; when the planned steps would not fit, warm-up and decay
    # follow the clock so that they end with it (Trainer's schedule_fits_max_minutes).
    max_minutes: float = 0.0
    minutes: float = 0.0  # a budget: the schedule (warm-up, decay) fits it; only it ends the run
    batch_size: int | None = None
    lr: float | None = None
    head_lr: float | None = None  # the new task head's peak learning rate (None: lr's)
    warmup_fraction: float | None = None
    weight_decay: float = 0.01
    max_length: int | None = None
    stride: int | None = None  # qa: overlap of context windows
    n_best: int | None = None  # qa: span candidates per window when choosing the answer
    max_answer_length: int | None = None  # qa: longest answer in tokens
    pooling: str | None = None  # classify: cls | mean | last
    # classify: a JSON object {label: text} (or a .json file): the head starts as cosine
    # similarity to each label's text, a zero-shot classifier, instead of at random
    label_prompts: str | None = None
    class_weights: bool = False  # classify/ner: inverse-frequency loss weights
    freeze_layers: int | None = None  # freeze the embeddings and this many lowest blocks
    freeze_embeddings: bool | None = None  # the embeddings only (a third of MiniLM's weights)
    # on the backbone's sub-layer outputs while training (None: the loaded config's rate)
    dropout: float | None = None
    group_by_length: bool = True  # batches of similar lengths: less padding, faster steps
    extend_vocab: int = 0  # add up to this many unknown characters of --train as tokens
    bitfit: bool = False  # train only the biases, the norms' gains and the head (BitFit)
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q", "k", "v", "o"])
    pack: bool = True  # sft: pack conversations into max_length rows
    eval_every: int | None = None  # steps between validation evaluations (0: at the end only)
    patience: int | None = None  # stop after this many evaluations without gain (0: never)
    label_smoothing: float = 0.1  # translate/summarize: of the target-token loss
    num_beams: int = 1  # translate/summarize: beams when validating (and in task.json)
    long_inputs: str = "truncate"  # translate/summarize: or "error" past --max-length
    seed: int = 0
    dtype: str = "float32"  # the loaded weights' dtype
    # Training arithmetic: auto (bfloat16 autocast only where the CPU has native bfloat16,
    # see zenlm.quant.auto) | float32 | bfloat16
    autocast: str = "auto"
    # Differential privacy (DP-SGD, zenlm.train.privacy): on when dp_epsilon is given
    dp_epsilon: float | None = None  # target epsilon after the planned steps
    dp_delta: float = 1e-5  # target delta, below 1/N
    dp_max_grad_norm: float = 1.0  # per-example clipping bound C (not the global clip)
    dp_accountant: str = "rdp"  # rdp | prv
    dp_physical_batch: int = 32  # rows per forward pass of a Poisson batch (0: all at once)
    dp_clipping: str = "ghost"  # ghost (per-example gradient norms) | exact (materialised)


# -------------------------------------------------------------- training
def prepare_model(opts: FinetuneOptions, info: TaskInfo, backbone: nn.Module) -> nn.Module:
    """The task model: fresh head, optional frozen layers and LoRA on the backbone."""
    model = build_task_model(info, backbone)
    if opts.dropout is not None:
        set_dropout(backbone_of(model), opts.dropout)
    if opts.bitfit:
        freeze_all_but_biases_and_norms(backbone_of(model))
    if opts.lora:
        apply_lora(backbone_of(model), opts.lora_rank, opts.lora_alpha, opts.lora_dropout,
                   opts.lora_targets)
    if opts.freeze_layers or opts.freeze_embeddings:
        freeze_lower(backbone_of(model), opts.freeze_layers)
    return model


def set_dropout(backbone: nn.Module, rate: float) -> None:
    """Dropout at `rate` on every block's sub-layer outputs while training (0: none).

    What transformers' BERT calls hidden dropout (0.1 in its configs). The embeddings' and
    the attention probabilities' dropouts are not applied.

    Raises:
        ValueError: `rate` outside [0, 1).
    """
    check_dropout(rate)
    for block in backbone.modules():
        if isinstance(block, Block):  # an encoder-decoder's blocks are in two stacks
            block.dropout = nn.Dropout(rate) if rate else None
    backbone.config.dropout = rate


def check_dropout(rate: float) -> None:
    """Raise ValueError, naming `rate`, unless it is a dropout rate in [0, 1)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"--dropout {rate} is not a dropout rate; give one in [0, 1)")


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


def freeze_all_but_biases_and_norms(backbone: nn.Module) -> None:
    """BitFit (Ben Zaken et al., 2022): only biases and normalisation gains stay trainable.

    A few tenths of a percent of the weights: under DP the noise, whose norm grows with the
    square root of the trainable count, stays small against the clipped gradients.

    Raises:
        ValueError: the backbone has no bias or norm weight to train.
    """
    kept = 0
    for module in backbone.modules():
        norm = isinstance(module, (nn.LayerNorm, RMSNorm))
        for name, param in module.named_parameters(recurse=False):
            keep = norm or name == "bias"
            param.requires_grad_(keep)
            kept += param.numel() if keep else 0
    if not kept:
        raise ValueError("--bitfit: the model has no biases or norm weights to train")


def check_max_length(max_length: int, config: Any, model: str) -> None:
    """Refuse, before training, rows longer than a model's learned position table.

    Raises:
        ValueError: `max_length` exceeds the positions (a small encoder pretrained with
            128-token blocks has 128), which would otherwise fail mid-run on the first long row.
    """
    if config.positions == "learned" and max_length > config.context_length:
        raise ValueError(f"--max-length {max_length} is beyond the {config.context_length} "
                         f"learned positions of {model}; pass --max-length "
                         f"{config.context_length} or less")


def resolve_options(opts: FinetuneOptions) -> tuple[FinetuneOptions, list[str]]:
    """`opts` with every unset (None) tuned setting taken from the task's defaults.

    Returns:
        (the options the run uses, the names that came from the task's own defaults).
    """
    values, from_task = defaults.resolve(asdict(opts), get_task(opts.task))
    return replace(opts, **values), from_task


def finetune(opts: FinetuneOptions) -> dict[str, Any]:
    """Train, select the best model on the validation split, save; returns a summary."""
    spec = get_task(opts.task)
    opts, from_task = resolve_options(opts)
    used = {name: getattr(opts, name) for name in defaults.GENERIC}
    if opts.class_weights and not spec.weighted:
        raise ValueError(f"--class-weights does not apply to task {opts.task!r}")
    private.check_options(opts, spec)
    head_lr_scale(opts)  # a bad --head-lr fails before the model loads
    if opts.dropout is not None:
        check_dropout(opts.dropout)  # and so does a bad --dropout
    if opts.bitfit and opts.lora:
        raise ValueError("--bitfit and --lora each choose which weights train: give one")
    torch.manual_seed(opts.seed)
    lm = load(opts.model, dtype=opts.dtype if opts.dtype != "float32" else None,
                    quantize=None)  # trained: the weights as stored
    check_max_length(opts.max_length, lm.config, opts.model)
    train_examples = spec.read(_data_path(spec, opts.train, opts.train_target))
    if opts.val:
        val_examples = spec.read(_data_path(spec, opts.val, opts.val_target))
    else:
        train_examples, val_examples = spec.split(train_examples, opts.val_fraction, opts.seed)
    info = TaskInfo(task=opts.task, labels=spec.label_set(train_examples),
                    max_length=opts.max_length, stride=opts.stride, pooling=opts.pooling,
                    arch=lm.config.arch, base_model=str(opts.model),
                    options=spec.options(asdict(opts)),
                    training={"settings": used, "from_task_defaults": from_task})
    spec.check_labels(info.labels, val_examples)
    if opts.extend_vocab:
        texts = [spec.text_of(e) for e in train_examples]
        added = unknown_characters(lm.tokenizer, texts, opts.extend_vocab)
        info.added_tokens = extend_vocabulary(lm.tokenizer, lm.model, added)
    pad = pad_id(lm.tokenizer, lm.config)
    model = prepare_model(opts, info, lm.model)
    if opts.label_prompts is not None:
        info.training["label_prompts"] = spec.init_head(model, lm.tokenizer, info,
                                                        opts.label_prompts, pad)
    train_features = spec.for_training(spec.encode(lm.tokenizer, train_examples, info), info,
                                       pack=opts.pack, private=opts.dp_epsilon is not None)
    val_features = spec.encode(lm.tokenizer, val_examples, info)
    info.training["settings"]["dropout"] = backbone_of(model).config.dropout  # given or loaded
    last: dict[str, Any] = {}  # the latest evaluation's full scores
    metric = functools.partial(_headline, spec=spec, tokenizer=lm.tokenizer, info=info,
                               examples=val_examples, pad=pad, last=last)
    weights = (class_weights_from_counts(spec.class_labels(train_features), len(info.labels))
               if opts.class_weights else None)
    objective, privacy = spec.objective(weights, info=info), None
    if opts.dp_epsilon is not None:
        private.check_units(train_features)
        privacy = private.private_training(opts, len(train_features),
                                           private.planned_steps(opts, len(train_features)))
        objective = spec.private_objective(info)
    trainer = _trainer(opts, model, train_features, val_features,
                       functools.partial(spec.collate, pad_id=pad), objective, metric,
                       privacy)
    start = time.perf_counter()
    result = trainer.fit(resume="none")
    train_s = time.perf_counter() - start
    trainer.restore_best()
    # The run ends with an evaluation; score again only if an earlier model was better.
    scores = last["scores"] if trainer.best_step == result.steps and last else spec.evaluate(
        model, lm.tokenizer, info, val_examples, pad)
    out = Path(opts.output)
    save_task_model(model, out / "model", lm.tokenizer, info)
    summary = {"task": opts.task, "steps": result.steps, "final_loss": result.final_loss,
               "train_minutes": train_s / 60, "train_examples": len(train_examples),
               "val_examples": len(val_examples), "best_step": trainer.best_step,
               "history": trainer.history, "validation": scores,
               "settings": used, "from_task_defaults": from_task,
               "model_dir": str(out / "model")}
    summary["line"] = summary_line(opts.task, spec.headline, scores[spec.headline],
                                   trainer.best_step, result.steps, train_s / 60)
    if privacy is not None:
        summary["dp"] = private.write_public_record(privacy, out / "model")
    return summary


def _data_path(spec: TaskSpec, path: str, target: str | None) -> str | tuple[str, str]:
    """A task file, or (source, target) files for a task of parallel text."""
    if target is None:
        return path
    if not spec.parallel:
        raise ValueError(f"task {spec.name!r} reads one file; --train-target/--val-target "
                         "apply to translate and summarize")
    return (path, target)


def _trainer(opts: FinetuneOptions, model: nn.Module, train_features: list,
             val_features: list, collate: Callable, objective: Callable,
             metric: Callable[[nn.Module], float], privacy: Any = None) -> Any:
    """The one Trainer (with metric-based model selection) set up for a task run.

    With `privacy` (a `zenlm.train.privacy.PrivateTraining`), its transforms replace the
    sampler, wrap the model, the optimizer and the objective, and keep the accountant in
    the checkpoints; the loop is the same.
    """
    from zenlm.tasks.selection import MetricTrainer
    from zenlm.train.config import LoopConfig, OptimConfig
    from zenlm.train.trainer import adamw

    steps = private.planned_steps(opts, len(train_features))
    train_data: Any = TaskSampler(train_features, collate, block_size=opts.max_length,
                                  seed=opts.seed,
                                  group_batch=opts.batch_size if opts.group_by_length else 0,
                                  lengths=[len(f.ids) for f in train_features])
    extra: dict[str, Any] = {}
    if privacy is not None:
        train_data = privacy.sampler(train_features, collate, block_size=opts.max_length,
                                     physical_batch=opts.dp_physical_batch)
        objective = privacy.objective(objective)
        extra = {"model_transform": privacy.transform_model,
                 "optimizer_factory": privacy.make_optimizer(adamw),
                 "save_extra": privacy.save_state, "load_extra": privacy.load_state,
                 "eval_extras": privacy.eval_record}
    loop = LoopConfig(out_dir=str(Path(opts.output) / "run"), max_steps=steps,
                      batch_size=opts.batch_size, seed=opts.seed, eval_every=opts.eval_every,
                      eval_batches=0, save_every=0, keep_last=1,
                      max_minutes=opts.minutes or opts.max_minutes,
                      schedule_by_time=opts.minutes > 0,
                      schedule_fits_max_minutes=opts.max_minutes > 0 and not opts.minutes,
                      export_hf=False, dtype=opts.autocast)
    if privacy is not None:
        privacy.check_loop(loop)
    return MetricTrainer(
        model, objective, train_data,
        TaskSampler(val_features, collate, block_size=opts.max_length, shuffle=False),
        # Under DP the optimizer clips each example's gradient; no global clip on top.
        optim=OptimConfig(lr=opts.lr, min_lr=0.0, warmup_steps=int(opts.warmup_fraction * steps),
                          schedule="linear", weight_decay=opts.weight_decay, beta2=0.999,
                          grad_clip=0.0 if privacy is not None else 1.0,
                          lr_scales=head_lr_scale(opts)),
        loop=loop, run_config={"finetune": asdict(opts)},
        metric=metric, patience=opts.patience,
        on_eval=functools.partial(_progress, spec=get_task(opts.task)), **extra,
    )


def head_lr_scale(opts: FinetuneOptions) -> dict[str, float]:
    """`OptimConfig.lr_scales` giving the task head (`model.head`) `--head-lr`.

    Raises:
        ValueError: --head-lr is not positive.
    """
    if opts.head_lr is None:
        return {}
    if not opts.head_lr > 0:
        raise ValueError(f"--head-lr must be > 0, got {opts.head_lr}")
    return {"head.": opts.head_lr / opts.lr}


def _progress(step: int, score: float, minutes: float, *, spec: TaskSpec) -> None:
    """One line on stderr after each validation (stdout carries the summary's JSON)."""
    from tqdm import tqdm  # the Trainer's progress bar: write above it, not into it

    value = score if spec.higher_is_better else -score
    tqdm.write(f"{spec.name}: step {step}, validation {spec.headline} {value:.4f} "
               f"({minutes:.1f} min)", file=sys.stderr)


def summary_line(task: str, metric: str, value: float, best_step: int, steps: int,
                 minutes: float) -> str:
    """The run in one line: `classify: accuracy 0.912 at step 700 of 758 (17.2 min)`."""
    return f"{task}: {metric} {value:.3f} at step {best_step} of {steps} ({minutes:.1f} min)"


def _headline(model: nn.Module, *, spec: TaskSpec, tokenizer: Any, info: TaskInfo,
              examples: list, pad: int, last: dict[str, Any]) -> float:
    """The task's headline validation metric, higher is better (a loss counts negated)."""
    scores = last["scores"] = spec.evaluate(model, tokenizer, info, examples, pad)
    return spec.score(scores)
