"""Differentially private training (DP-SGD) with Opacus, as transforms around the one Trainer.

`PrivateTraining` hands the Trainer four things instead of copying its loop:

- the model, with Opacus's hooks installed: per-example gradient norms by ghost clipping
  (`clipping="ghost"`, the default) or per-example gradients (`clipping="exact"`, hooks
  mode); both clip each example's gradient to `max_grad_norm` exactly, see
  `zenlm.train.dp_clipping` (zenlm's own layers get exact grad samplers in `dp_samplers`);
- the optimizer, wrapped in Opacus's `DPOptimizer` or `DPOptimizerFastGradientClipping`
  (Gaussian noise of `noise_multiplier * max_grad_norm` on the clipped sum);
- the objective: the task's per-example losses (B,), clipped piece by piece;
- the data: `PoissonBatches`, Opacus's Poisson sampler (`UniformWithReplacementSampler`,
  what `DPDataLoader` uses) drawing each step's batch, every example with probability
  `sample_rate`;
- an accountant (RDP or PRV) stepped by the optimizer, saved with every checkpoint as JSON
  and restored on resume, so a resumed run spends exactly the budget of an uninterrupted one.

The noise multiplier is solved once, before training, from the target (epsilon, delta)
over the planned steps (`opacus.accountants.utils.get_noise_multiplier`).

Sampling and noise come from a secret drawn with `secrets` at the start of a run (never
from the public `--seed`: an adversary who can recompute the noise or the batches gets no
protection). The secret lives in the run's checkpoints (`privacy.json`), so that a resume
is exact; the released model folder does not hold it.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample import GradSampleModule
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from zenlm.nn.lora import LoRALinear
from zenlm.train import dp_samplers  # noqa: F401  (registers zenlm's grad samplers)
from zenlm.train.dp_clipping import (
    CLIPPING,
    GhostClippingHooks,
    PrivacyError,
    SeededDPOptimizer,
    SeededGhostOptimizer,
    derive_seed,
    exact_pieces_loss,
    ghost_pieces_loss,
)

ACCOUNTANTS = ("rdp", "prv")
STATE_FILE = "privacy.json"


@dataclass(frozen=True)
class PrivacyPlan:
    """What a private run promises and how: the solved noise and the sampling.

    Attributes:
        epsilon: The target epsilon (the budget after `steps` steps).
        delta: The target delta.
        max_grad_norm: Each example's gradient is clipped to this L2 norm (C).
        noise_multiplier: sigma: Gaussian noise of std sigma * C is added to the summed grads.
        sample_rate: q: each example is in a step's batch with this probability.
        steps: Planned optimizer steps.
        dataset_size: N, the number of training examples (the privacy units).
        accountant: "rdp" or "prv".
    """

    epsilon: float
    delta: float
    max_grad_norm: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    dataset_size: int
    accountant: str = "rdp"

    @property
    def expected_batch_size(self) -> float:
        """The mean Poisson batch q * N Poisson batch (the divisor of the summed gradient)."""
        return self.sample_rate * self.dataset_size


def plan_privacy(epsilon: float, delta: float, max_grad_norm: float, *, batch_size: int,
                 dataset_size: int, steps: int, accountant: str = "rdp") -> PrivacyPlan:
    """Solve the noise multiplier reaching (epsilon, delta) after `steps` Poisson steps.

    Args:
        epsilon: Target epsilon, > 0.
        delta: Target delta, in (0, 1/N): a delta of 1/N or more allows leaking one
            example outright.
        max_grad_norm: Per-example clipping bound C, > 0.
        batch_size: Expected batch; the sample rate is batch_size / dataset_size.
        dataset_size: Training examples N.
        steps: Planned optimizer steps.
        accountant: "rdp" or "prv".

    Raises:
        PrivacyError: any setting out of range (named, with the valid range).
    """
    _check_settings(epsilon, delta, max_grad_norm, batch_size, dataset_size, steps, accountant)
    rate = batch_size / dataset_size
    sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=rate,
                                 steps=steps, accountant=accountant)
    return PrivacyPlan(epsilon, delta, max_grad_norm, float(sigma), rate, steps, dataset_size,
                       accountant)


def _check_settings(epsilon: float, delta: float, max_grad_norm: float, batch_size: int,
                    dataset_size: int, steps: int, accountant: str) -> None:
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise PrivacyError(f"--dp-epsilon must be a finite number > 0, got {epsilon}")
    if not 0 < delta < 1 / dataset_size:
        raise PrivacyError(f"--dp-delta must be in (0, 1/N) = (0, {1 / dataset_size:.3g}) for "
                           f"N={dataset_size} training examples, got {delta}")
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise PrivacyError(f"--dp-max-grad-norm must be > 0, got {max_grad_norm}")
    if not 0 < batch_size <= dataset_size:
        raise PrivacyError(f"--batch-size must be in 1..{dataset_size} (the training "
                           f"examples) for Poisson sampling, got {batch_size}")
    if steps <= 0:
        raise PrivacyError(f"a private run needs planned steps > 0, got {steps}")
    if accountant not in ACCOUNTANTS:
        raise PrivacyError(f"--dp-accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


class EmptyBatch(dict):
    """A Poisson draw that selected no example (the step still adds noise)."""

    def to(self, device: torch.device | str) -> EmptyBatch:
        """Itself: nothing to move."""
        return self


class PhysicalBatches(list):
    """One Poisson batch as length-sorted physical batches (logical batching).

    Per-example gradients do not depend on which examples share a forward pass, so the
    logical batch is computed in pieces of similar length: far less padding than one
    batch of random lengths, and bounded memory. Opacus concatenates the pieces'
    per-sample gradients before clipping and noise, as for its BatchMemoryManager.
    """

    def to(self, device: torch.device | str) -> PhysicalBatches:
        """Every piece on `device`."""
        return PhysicalBatches(piece.to(device) for piece in self)


class PoissonBatches:
    """The Trainer's training data under DP: step t's batch is a Poisson draw.

    Each example joins the batch of step t with probability `sample_rate`, independently
    (Opacus's `UniformWithReplacementSampler`, the sampler of `DPDataLoader`); its
    generator is seeded from (secret, t), so a resumed run draws the same batches.

    Args:
        features: The training examples (one privacy unit each).
        collate: Builds a batch from a list of features.
        sample_rate: q.
        secret: The run's secret bytes.
        block_size: Tokens per sequence (for the Trainer's throughput figure).
        physical_batch: Rows per forward pass (0: the whole draw at once); the draw is
            sorted by length (`len(feature.ids)`) and cut into `PhysicalBatches`.
    """

    def __init__(self, features: Sequence[Any], collate: Callable[[list], Any], *,
                 sample_rate: float, secret: bytes, block_size: int,
                 physical_batch: int = 0) -> None:
        self.features, self.collate = list(features), collate
        self.sample_rate, self.secret, self.block_size = sample_rate, secret, block_size
        self.physical_batch = physical_batch
        self.blocks_per_epoch = len(self.features)

    def indices(self, step: int) -> list[int]:
        """The examples of step `step` (0-based)."""
        generator = torch.Generator().manual_seed(derive_seed(self.secret, "sample", step))
        sampler = UniformWithReplacementSampler(num_samples=len(self.features),
                                                sample_rate=self.sample_rate,
                                                generator=generator, steps=1)
        return next(iter(sampler))

    def batch(self, first: int, count: int) -> Any:
        """The batch of the step whose first sequence number is `first` (`count` per step)."""
        if first % count:
            raise PrivacyError(f"private training reads whole steps; got sequence {first} "
                               f"with {count} per step (gradient accumulation?)")
        chosen = self.indices(first // count)
        if not chosen:
            return EmptyBatch()
        size = self.physical_batch
        if not size or len(chosen) <= size:
            return self.collate([self.features[i] for i in chosen])
        chosen.sort(key=lambda i: len(getattr(self.features[i], "ids", ())))
        return PhysicalBatches(self.collate([self.features[i] for i in chosen[at:at + size]])
                               for at in range(0, len(chosen), size))


@dataclass
class PrivacyState:
    """privacy.json of a run's checkpoint: the plan, the accountant's history, the secret."""

    plan: dict[str, Any]
    history: list[list[float]]
    trainable: list[str]
    secret: str  # hex

    def settings(self) -> dict[str, Any]:
        """What must not change on resume: the plan and the trainable parameters."""
        return {**self.plan, "trainable": self.trainable}


class PrivateTraining:
    """DP-SGD transforms for the Trainer (see the module docstring).

    Args:
        plan: The solved plan (`plan_privacy`).
        secret: The run's secret (default: 32 fresh random bytes).
        clipping: "ghost" (per-example gradient norms, two backward passes) or "exact"
            (per-example gradients materialised); the same clipped sum either way.

    Raises:
        PrivacyError: an unknown `clipping`.
    """

    def __init__(self, plan: PrivacyPlan, secret: bytes | None = None, *,
                 clipping: str = "ghost") -> None:
        if clipping not in CLIPPING:
            raise PrivacyError(f"--dp-clipping must be one of {CLIPPING}, got {clipping!r}")
        self.plan, self.clipping = plan, clipping
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.accountant = create_accountant(plan.accountant)
        self.hooks: Any = None
        self._sampler: PoissonBatches | None = None
        self.names: dict[int, str] = {}

    # ------------------------------------------------------ the transforms
    def check_loop(self, loop: Any, *, distributed: bool = False) -> None:
        """Refuse loop settings that break the per-example guarantee.

        Raises:
            PrivacyError: grad_accum > 1, several processes, torch.compile.
        """
        if loop.grad_accum != 1:
            raise PrivacyError(
                f"gradient accumulation (grad_accum={loop.grad_accum}) is refused under DP: "
                "micro-batches of a Poisson batch are not independent draws. The batch size "
                "is already the logical (expected) batch; use grad_accum=1")
        if distributed:
            raise PrivacyError("private training runs in one process; several processes "
                               "would each need their own Poisson sampler (not supported)")
        if loop.compile:
            raise PrivacyError("torch.compile is refused under DP: Opacus's per-sample "
                               "gradient hooks need the eager modules")

    def transform_model(self, model: nn.Module) -> nn.Module:
        """Install the per-sample-gradient hooks; the model itself is returned unchanged.

        Raises:
            PrivacyError: no trainable parameter, or a trainable layer without an exact
                per-sample gradient (named, with the layers that have one).
        """
        check_layers(model)
        self.names = {id(p): n for n, p in model.named_parameters()}
        # The hooks live on the submodules: calling `model` computes grad samples (or
        # their norms), and checkpoints keep the model's own parameter names.
        if self.clipping == "ghost":
            self.hooks = GhostClippingHooks(model, max_grad_norm=self.plan.max_grad_norm)
        else:
            self.hooks = GradSampleModule(model, batch_first=True, loss_reduction="mean",
                                          strict=True)
        return model

    def make_optimizer(self, factory: Callable[[nn.Module, Any], torch.optim.Optimizer]
                       ) -> Callable[[nn.Module, Any], torch.optim.Optimizer]:
        """An optimizer factory: `factory`'s optimizer wrapped in a DPOptimizer."""

        def build(model: nn.Module, optim: Any) -> torch.optim.Optimizer:
            inner = factory(model, optim)
            _check_trainable(model, inner)
            kind = SeededGhostOptimizer if self.clipping == "ghost" else SeededDPOptimizer
            dp = kind(inner, noise_multiplier=self.plan.noise_multiplier,
                      max_grad_norm=self.plan.max_grad_norm,
                      expected_batch_size=max(1, round(self.plan.expected_batch_size)),
                      loss_reduction="mean")
            dp.setup(self.secret, self.names)
            dp.attach_step_hook(lambda _: self.accountant.step(
                noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate))
            self.optimizer = dp
            return dp

        return build

    def objective(self, objective: Callable[[nn.Module, Any], torch.Tensor]
                  ) -> Callable[[nn.Module, Any], torch.Tensor]:
        """The Trainer's objective from a task's per-example losses.

        Args:
            objective: (model, batch of B rows) -> losses (B,), each example's own loss
                (`TaskSpec.private_objective`).

        Returns:
            (model, batch) -> the mean loss of the Poisson draw (its pieces clipped); an
            empty draw gives zero gradients (the step adds noise only).
        """

        def private(model: nn.Module, batch: Any) -> torch.Tensor:
            if isinstance(batch, EmptyBatch):
                return self._empty(model)
            if not torch.is_grad_enabled():  # an evaluation: nothing to clip
                return objective(model, batch).mean()
            pieces = batch if isinstance(batch, PhysicalBatches) else [batch]
            if self.clipping == "ghost":
                return ghost_pieces_loss(model, pieces, objective, self.hooks,
                                         self.optimizer, self.names)
            return exact_pieces_loss(model, pieces, objective, self.optimizer)

        return private

    def _empty(self, model: nn.Module) -> torch.Tensor:
        for param in model.parameters():
            if param.requires_grad and self.clipping == "ghost":
                param.grad = torch.zeros_like(param)
            elif param.requires_grad:
                param.grad_sample = param.new_zeros((0, *param.shape))
        return torch.zeros((), requires_grad=True)

    def sampler(self, features: Sequence[Any], collate: Callable[[list], Any], *,
                block_size: int, physical_batch: int = 0) -> PoissonBatches:
        """The Poisson-sampled training data (see `PoissonBatches` for `physical_batch`)."""
        if len(features) != self.plan.dataset_size:
            raise PrivacyError(f"the plan was made for N={self.plan.dataset_size} examples, "
                               f"the sampler got {len(features)}")
        self._sampler = PoissonBatches(features, collate, sample_rate=self.plan.sample_rate,
                                       secret=self.secret, block_size=block_size,
                                       physical_batch=physical_batch)
        return self._sampler

    # ----------------------------------------------------------- reporting
    @property
    def steps(self) -> int:
        """Noisy steps taken so far (from the accountant's history)."""
        return int(sum(h[2] for h in self.accountant.history))

    def epsilon(self) -> float:
        """Epsilon spent so far at the plan's delta (0 before the first step)."""
        if not self.accountant.history:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.plan.delta))

    def summary(self) -> dict[str, Any]:
        """The `dp` record: epsilon spent, delta, noise, clipping, steps, sample rate."""
        plan = self.plan
        return {"epsilon": self.epsilon(), "delta": plan.delta, "target_epsilon": plan.epsilon,
                "noise_multiplier": plan.noise_multiplier, "max_grad_norm": plan.max_grad_norm,
                "steps": self.steps, "planned_steps": plan.steps,
                "sample_rate": plan.sample_rate, "dataset_size": plan.dataset_size,
                "accountant": plan.accountant, "clipping": self.clipping}

    def eval_record(self) -> dict[str, Any]:
        """Merged into each evaluation's log line: epsilon spent so far."""
        return {"dp_epsilon": self.epsilon(), "dp_steps": self.steps}

    # ------------------------------------------------------- save, resume
    def state(self) -> PrivacyState:
        """This run's checkpoint state."""
        trainable = sorted(self.names[id(p)] for p in self._params())
        history = [list(h) for h in self.accountant.history]
        return PrivacyState(asdict(self.plan), history, trainable, self.secret.hex())

    def _params(self) -> list[nn.Parameter]:
        return list(self.optimizer.params) if hasattr(self, "optimizer") else []

    def save_state(self, folder: Path) -> None:
        """Write privacy.json (JSON, never pickle) into a checkpoint folder."""
        text = json.dumps(asdict(self.state()), indent=1) + "\n"
        (Path(folder) / STATE_FILE).write_text(text, encoding="utf-8")

    def load_state(self, folder: Path) -> None:
        """Restore the accountant and the secret from a checkpoint; refuse changed settings.

        Raises:
            PrivacyError: no privacy.json (a non-private checkpoint), or a setting differs.
        """
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            raise PrivacyError(f"{folder}: no {STATE_FILE}; resuming a non-private run under "
                               "DP would not account for its earlier steps")
        saved = PrivacyState(**json.loads(path.read_text(encoding="utf-8")))
        now = self.state()
        for key, value in saved.settings().items():
            if now.settings().get(key) != value:
                raise PrivacyError(f"{path}: resuming with {key}={now.settings().get(key)!r}, "
                                   f"but the run was started with {key}={value!r}; a private "
                                   "run resumes only with the same sampler and settings")
        self.accountant.history = [(float(s), float(q), int(n)) for s, q, n in saved.history]
        self.secret = bytes.fromhex(saved.secret)
        self.optimizer.setup(self.secret, self.names, step=self.steps)
        if self._sampler is not None:
            self._sampler.secret = self.secret

    def public_record(self) -> dict[str, Any]:
        """What a released model folder carries (no secret): `summary()` plus the history."""
        return {**self.summary(), "history": [list(h) for h in self.accountant.history]}


def check_layers(model: nn.Module) -> None:
    """Refuse trainable layers without an exact per-sample gradient in Opacus's hooks mode.

    Raises:
        PrivacyError: names the first such module and lists the supported layer types.
    """
    supported = GradSampleModule.GRAD_SAMPLERS
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise PrivacyError("the model has no trainable parameter to train privately")
    for name, module in model.named_modules():
        own = [n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if own and type(module) not in supported:
            kinds = sorted(t.__name__ for t in supported)
            raise PrivacyError(
                f"layer {name!r} ({type(module).__name__}, trainable {own}) has no exact "
                f"per-sample gradient in Opacus; freeze it (--freeze-layers/--lora) or use "
                f"layers of these types: {kinds}")
        if isinstance(module, LoRALinear) and (module.merged or module.lora_dropout.p > 0):
            raise PrivacyError(f"LoRA layer {name!r} has adapter dropout "
                               f"{module.lora_dropout.p} (or is merged); under DP use "
                               "--lora-dropout 0: the exact per-sample gradient needs the "
                               "adapter's undropped input")
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise PrivacyError(f"layer {name!r} ({type(module).__name__}) mixes examples of "
                               "a batch; it cannot be trained privately")


def _check_trainable(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer's parameters must be exactly the model's trainable ones."""
    names = {id(p): n for n, p in model.named_parameters()}
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in in_optimizer:
            raise PrivacyError(f"parameter {name!r} is trainable but not in the optimizer: "
                               "its gradient would escape clipping and noise")
    for group in optimizer.param_groups:
        for param in group["params"]:
            if not param.requires_grad:
                raise PrivacyError(f"parameter {names.get(id(param), '?')!r} is in the "
                                   "optimizer but frozen (requires_grad=False)")
