"""One Trainer for every objective and method.

The loop is: for each step, set the learning rate; for each micro-batch, compute the
objective's loss under autocast and backpropagate; clip; step; log; evaluate; save.
Full fine-tuning, LoRA and DP-SGD are meant to be transforms handed to the Trainer
(`model_transform` wraps or swaps modules before the optimizer sees the parameters;
`optimizer_factory` builds another optimizer), never copies of this loop.

Exact resume: everything random is a function of (seed, step, rank): the data order
(`BlockSampler`), and the torch RNG, reseeded at every step (dropout). A checkpoint
therefore needs only weights, optimizer state, the step and the data position, and a
resumed run produces the very same per-step losses as an uninterrupted one.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from zenlm.data.shards import BlockSampler
from zenlm.errors import ZenlmError
from zenlm.quant.auto import resolve_train_dtype
from zenlm.train import fsdp
from zenlm.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from zenlm.train.config import LoopConfig, OptimConfig
from zenlm.train.distributed import DistContext
from zenlm.train.schedule import lr_at

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[nn.Module, OptimConfig], torch.optim.Optimizer]


class TrainingDiverged(ZenlmError):
    """The loss or the gradient norm became NaN/inf; no checkpoint was written for it."""


@dataclass
class TrainResult:
    """What a `fit` did."""

    steps: int
    final_loss: float
    val_loss: float | None
    tokens_per_s: float
    elapsed_s: float
    checkpoint: Path | None


def adamw(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not norms, biases, 1-D gains).

    Parameters named under a prefix of `optim.lr_scales` get their own groups, whose
    `lr_scale` multiplies the scheduled learning rate (`Trainer._train_step`).

    Raises:
        ValueError: a prefix of `optim.lr_scales` names no trainable parameter.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for prefix in optim.lr_scales:
        if not any(name.startswith(prefix) for name, _ in trainable):
            tops = sorted({name.split(".")[0] + "." for name, _ in trainable})
            raise ValueError(f"learning-rate scale for {prefix!r}: no trainable parameter "
                             f"is named so; the trainable ones start with {tops}")
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, param in trainable:
        key = (param.ndim >= 2, lr_scale(name, optim.lr_scales))
        groups.setdefault(key, []).append(param)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": optim.weight_decay if decay else 0.0,
          "lr_scale": scale}
         for (decay, scale), params in sorted(groups.items(), key=_decay_first)],
        lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps, fused=True,
    )  # fused: one kernel for the whole update (CPU and CUDA)


def _decay_first(item: tuple[tuple[bool, float], list]) -> tuple[bool, float]:
    """Group order: decayed before not, then by scale (stable across runs, for resuming)."""
    (decay, scale), _ = item
    return (not decay, scale)


def lr_scale(name: str, scales: dict[str, float]) -> float:
    """The multiple of the learning rate for parameter `name`: its longest matching prefix's."""
    matches = [prefix for prefix in scales if name.startswith(prefix)]
    return scales[max(matches, key=len)] if matches else 1.0


def enable_grad_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations during backward instead of storing them.

    The block's own `forward` is wrapped on the instance, so parameter names (and
    therefore checkpoints) are the same with and without it.
    """
    from torch.utils.checkpoint import checkpoint

    for block in getattr(model, "blocks", []):
        inner = block.forward
        block.forward = functools.partial(checkpoint, inner, use_reentrant=False)


class Trainer:
    """Trains `model` on blocks from `train_data` with `objective`.

    Args:
        model: The network (bare; the Trainer wraps it for DDP / compile itself).
        objective: (model, batch (B, T+1)) -> scalar loss.
        train_data: Training blocks.
        val_data: Validation blocks (read in order), or None.
        optim: Optimizer and schedule settings.
        loop: Steps, batch, precision, evaluation, checkpoints.
        dist: This process's place in a distributed job.
        run_config: JSON-able description of the run, stored in every checkpoint.
        save_extra: Writes more files (tokenizer...) into each checkpoint folder.
        model_transform: Applied to the model before the optimizer is built (LoRA).
        optimizer_factory: Builds the optimizer (default: `adamw`).
        load_extra: Reads the files `save_extra` wrote, from the checkpoint resumed from.
        eval_extras: Returns more fields for each evaluation's log line (DP: epsilon).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        train_data: BlockSampler,
        val_data: BlockSampler | None,
        *,
        optim: OptimConfig,
        loop: LoopConfig,
        dist: DistContext | None = None,
        run_config: dict[str, Any] | None = None,
        save_extra: Callable[[Path], None] | None = None,
        model_transform: Callable[[nn.Module], nn.Module] | None = None,
        optimizer_factory: OptimizerFactory = adamw,
        load_extra: Callable[[Path], None] | None = None,
        eval_extras: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.dist, self.optim, self.loop = dist or DistContext(), optim, loop
        # Resolved once (its warning, if any, said once): bfloat16 only where native.
        self._dtype = (resolve_train_dtype(loop.dtype) if self.dist.device.type == "cpu"
                       else "float32" if loop.dtype == "float32" else "bfloat16")
        self.model = (model_transform or (lambda m: m))(model).to(self.dist.device)
        if self.sharded:  # before the optimizer: it must see the sharded parameters
            self.model = fsdp.shard_model(self.model)
        self.objective, self.train_data, self.val_data = objective, train_data, val_data
        # Checkpoints carry the model's config, so that they load without the run's YAML.
        own = {"model": model.config.to_dict()} if hasattr(model, "config") else {}
        self.run_config = {**own, **(run_config or {})}
        self.save_extra, self.load_extra = save_extra, load_extra
        self.eval_extras = eval_extras or dict
        self.out_dir = Path(loop.out_dir)
        self.optimizer = optimizer_factory(self.model, optim)
        if loop.grad_checkpointing:
            enable_grad_checkpointing(self.model)
        self.step_model = self._wrap(self.model)
        self.step = 0
        self.sequences_seen = 0
        self.elapsed_s = 0.0

    # ------------------------------------------------------------------ setup
    @property
    def sharded(self) -> bool:
        """FSDP: a distributed run with `train.distributed: fsdp`.

        Raises:
            ValueError: `train.distributed` is neither ddp nor fsdp.
        """
        if self.loop.distributed not in ("ddp", "fsdp"):
            raise ValueError(f"train.distributed must be ddp or fsdp, "
                             f"got {self.loop.distributed!r}")
        return self.dist.enabled and self.loop.distributed == "fsdp"

    def _wrap(self, model: nn.Module) -> nn.Module:
        wrapped = model
        if self.loop.compile:
            wrapped = torch.compile(wrapped)
        if self.dist.enabled and not self.sharded:
            wrapped = nn.parallel.DistributedDataParallel(wrapped)
        return wrapped

    @property
    def checkpoint_root(self) -> Path:
        """Folder of this run's checkpoints."""
        return self.out_dir / "checkpoints"

    @property
    def sequences_per_step(self) -> int:
        """Sequences in one optimizer step over all processes."""
        return self.loop.batch_size * self.loop.grad_accum * self.dist.world_size

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)

    # ----------------------------------------------------------------- resume
    def resume(self, spec: str) -> Path | None:
        """Restore from `spec`: "auto" (newest complete checkpoint, if any), "none", or a folder.

        Raises:
            CheckpointError: an explicit folder that is not a complete checkpoint.
        """
        if spec == "none":
            return None
        folder = latest_checkpoint(self.checkpoint_root) if spec == "auto" else Path(spec)
        if folder is None:
            return None
        if self.sharded:
            weights, optim_state, state = read_checkpoint(folder)  # every rank reads it
            fsdp.load_state(self.model, self.optimizer, weights, optim_state)
        else:
            state = load_checkpoint(folder, model=self.model, optimizer=self.optimizer)
        self.step, self.sequences_seen = state["step"], state["sequences_seen"]
        self.elapsed_s = state.get("elapsed_s", 0.0)
        if self.load_extra is not None:
            self.load_extra(folder)
        torch.set_rng_state(_decode_rng(state["rng"]["torch"]))
        if self.dist.is_main:
            _truncate_log(self.out_dir / "log.jsonl", self.step)
        return folder

    # ------------------------------------------------------------------- loop
    def fit(self, resume: str = "auto") -> TrainResult:
        """Train until `loop.max_steps` (or `loop.max_minutes`); returns a summary.

        With `loop.schedule_by_time`, only the clock ends the run.
        """
        resumed = self.resume(resume)
        if resumed is not None and self.dist.is_main:
            print(f"resumed from {resumed} at step {self.step}")
        log = _Log(self.out_dir, self.dist.is_main, self.loop.tensorboard)
        bar = tqdm(total=self.loop.max_steps, initial=self.step, unit="step",
                   disable=not (self.loop.progress and self.dist.is_main), dynamic_ncols=True)
        start, last_ckpt, loss, val = time.perf_counter() - self.elapsed_s, resumed, math.nan, None
        tokens_per_step = self.sequences_per_step * self.train_data.block_size
        try:
            while self.step < self.loop.max_steps or self.loop.schedule_by_time:
                tick = time.perf_counter()
                loss, grad_norm, lr = self._train_step()
                self.step += 1
                self.elapsed_s = time.perf_counter() - start
                rate = tokens_per_step / (time.perf_counter() - tick)
                log.write({"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                           "tokens_per_s": rate, "elapsed_s": self.elapsed_s})
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:,.0f}", refresh=False)
                out_of_time = self._out_of_time()
                last_step = self.step == self.loop.max_steps or out_of_time
                if self._due(self.loop.eval_every) or last_step:
                    val = self.evaluate()
                    if val is not None:
                        log.write({"step": self.step, "val_loss": val,
                                   "val_ppl": math.exp(min(val, 50.0)),
                                   "elapsed_s": self.elapsed_s, **self.eval_extras()})
                        bar.write(f"step {self.step}: val loss {val:.4f}")
                if self._due(self.loop.save_every) or last_step:
                    last_ckpt = self.save()
                if out_of_time:
                    break
        finally:
            bar.close()
            log.close()
        total_tokens = self.step * tokens_per_step
        return TrainResult(self.step, loss, val, total_tokens / max(self.elapsed_s, 1e-9),
                           self.elapsed_s, last_ckpt)

    def _schedule_step(self) -> int:
        """The step the learning-rate schedule is at.

        The step itself; with `schedule_by_time`, the budget's elapsed fraction of max_steps;
        with `schedule_fits_max_minutes`, whichever of the two is further.
        """
        if not (self.loop.schedule_by_time or self.loop.schedule_fits_max_minutes):
            return self.step
        fraction = self.elapsed_s / (self.loop.max_minutes * 60)
        by_time = min(self.loop.max_steps, int(fraction * self.loop.max_steps))
        return by_time if self.loop.schedule_by_time else max(self.step, by_time)

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _out_of_time(self) -> bool:
        return self.loop.max_minutes > 0 and self.elapsed_s >= self.loop.max_minutes * 60

    def _train_step(self) -> tuple[float, float, float]:
        """One optimizer step over grad_accum micro-batches; returns (loss, grad norm, lr)."""
        # Dropout and any other torch randomness depend on (seed, step, rank) only.
        torch.manual_seed(hash((self.loop.seed, self.step, self.dist.rank)) % (2**63))
        lr = lr_at(self._schedule_step(), lr=self.optim.lr, min_lr=self.optim.min_lr,
                   warmup_steps=self.optim.warmup_steps, max_steps=self.loop.max_steps,
                   schedule=self.optim.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.step_model.train()
        total = torch.zeros((), dtype=torch.float32)
        for micro, batch in enumerate(self._micro_batches()):
            sync = micro == self.loop.grad_accum - 1
            with self._no_sync(sync), self._autocast():
                loss = self.objective(self.step_model, batch.to(self.dist.device))
            self._check_finite(loss, "loss")
            (loss / self.loop.grad_accum).backward()
            total += loss.detach().float().cpu() / self.loop.grad_accum
        grad_norm = self._clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sequences_seen += self.sequences_per_step
        return float(self.dist.mean(total)), grad_norm, lr

    def _micro_batches(self) -> Iterator[torch.Tensor]:
        """This rank's micro-batches of the step: disjoint slices of the global batch."""
        size, accum = self.loop.batch_size, self.loop.grad_accum
        for micro in range(accum):
            first = self.sequences_seen + (self.dist.rank * accum + micro) * size
            yield self.train_data.batch(first, size)

    def _no_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        # DDP all-reduces (FSDP reduce-scatters) gradients on the last micro-batch only.
        if self.sharded:
            self.model.set_requires_gradient_sync(sync)
            return contextlib.nullcontext()
        if self.dist.enabled and not sync:
            return self.step_model.no_sync()
        return contextlib.nullcontext()

    def _clip(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.optim.grad_clip if self.optim.grad_clip > 0 else float("inf")
        norm = fsdp.full_norm(torch.nn.utils.clip_grad_norm_(params, max_norm))
        self._check_finite(norm, "gradient norm")
        return float(norm)

    def _check_finite(self, value: torch.Tensor, what: str) -> None:
        if not torch.isfinite(value).all():
            good = latest_checkpoint(self.checkpoint_root)
            raise TrainingDiverged(
                f"{what} is {float(value.detach())} at step {self.step + 1}; stopped without "
                f"writing a checkpoint for it (last good: {good}). "
                "Lower optim.lr, raise optim.warmup_steps, or use train.dtype=float32"
            )

    # ------------------------------------------------------------- eval, save
    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean validation loss over `eval_batches` fixed batches (None without val data)."""
        if self.val_data is None or self.loop.eval_batches <= 0:
            return None
        self.step_model.eval()
        size, n = self.loop.batch_size, self.loop.eval_batches
        total, count = torch.zeros(()), torch.zeros(())
        # Under FSDP a forward is collective: every rank runs as many, extras uncounted.
        rounds = -(-n // self.dist.world_size) * self.dist.world_size if self.sharded else n
        for index in range(self.dist.rank, rounds, self.dist.world_size):
            first = (index % n * size) % max(1, self.val_data.blocks_per_epoch)
            with self._autocast():
                loss = self.objective(self.model, self.val_data.batch(first, size)
                                      .to(self.dist.device)).float().cpu()
            if index < n:
                total, count = total + loss, count + 1
        if self.dist.enabled:
            both = torch.stack([total, count])
            torch.distributed.all_reduce(both)
            total, count = both[0], both[1]
        return float(total / count.clamp(min=1))

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (main process; others wait)."""
        folder = None
        weights, optim_state = (fsdp.gather_state(self.model, self.optimizer, self.dist.is_main)
                                if self.sharded else (None, None))
        if self.dist.is_main:
            state = {"step": self.step, "sequences_seen": self.sequences_seen,
                     "elapsed_s": self.elapsed_s, "seed": self.loop.seed,
                     "rng": {"torch": _encode_rng(torch.get_rng_state())},
                     "optim": asdict(self.optim)}

            def extra(tmp: Path) -> None:
                (tmp / "config.json").write_text(json.dumps(self.run_config, indent=2) + "\n",
                                                 encoding="utf-8")
                if self.save_extra is not None:
                    self.save_extra(tmp)

            folder = save_checkpoint(self.checkpoint_root, self.step, model=self.model,
                                     optimizer=self.optimizer, state=state, extra=extra,
                                     keep_last=self.loop.keep_last, model_state=weights,
                                     optimizer_state=optim_state)
        self.dist.barrier()
        return folder


def _encode_rng(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def _decode_rng(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines of steps after `step` (written before a crash, about to be redone)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


class _Log:
    """log.jsonl (every record), optional TensorBoard, and loss.png at close."""

    def __init__(self, out_dir: Path, active: bool, tensorboard: bool) -> None:
        self.active, self.out_dir, self.writer = active, out_dir, None
        self.handle = None
        if not active:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.handle = (out_dir / "log.jsonl").open("a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if self.handle is None:
            return
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step":
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.handle is None:
            return
        self.handle.close()
        if self.writer is not None:
            self.writer.close()
        plot_losses(self.out_dir / "log.jsonl", self.out_dir / "loss.png")


def plot_losses(log_path: Path, png_path: Path) -> None:
    """Training and validation loss against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=0.8)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
