"""Per-example clipping for DP-SGD, two ways, with the same result: exact and ghost.

- **exact** (Opacus's hooks mode, `GradSampleModule`): every example's gradient is
  materialised (rows x trainable weights per physical piece), then `DPOptimizer` clips
  each to `max_grad_norm` and sums.
- **ghost** (Opacus's fast gradient clipping, `GradSampleModuleFastGradientClipping`):
  a first backward of the piece's mean loss gives each example's gradient NORM from the
  layer's input and output gradient (for nn.Linear: ||sum_t g_t x_t^T||^2 =
  sum_{t,s} (g_t.g_s)(x_t.x_s), or the per-example gradient of that one layer when cheaper),
  never the whole model's per-example gradients; a second backward of
  sum_i c_i * loss_i (c_i = min(1, C / (norm_i + 1e-6)), Opacus's clipping factor) leaves
  the clipped sum in `.grad`. `DPOptimizerFastGradientClipping` then adds the noise.

Layers without a norm sampler (LayerNorm, Embedding, zenlm's LoRALinear, RMSNorm,
positions), and layers whose parameter is shared with another layer (a tied LM head),
take Opacus's exact path inside ghost mode: their own per-example gradients, reduced to
norms at once. Nothing is approximated.

Both optimizers draw the noise of step t from (secret, t) (`derive_seed`), so a resumed
run adds the noise of an uninterrupted one, and both modes add the same noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from torch import nn

from zenlm.errors import ZenlmError

CLIPPING = ("ghost", "exact")


class PrivacyError(ZenlmError):
    """A setting that would break (or cannot give) the differential-privacy guarantee."""


def derive_seed(secret: bytes, purpose: str, step: int) -> int:
    """A 63-bit seed from (secret, purpose, step) via SHA-256."""
    digest = hashlib.sha256(secret + f"/{purpose}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ------------------------------------------------------------------ norm sampler
def linear_norm_sample(layer: nn.Linear, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Each example's gradient norm of an nn.Linear, exactly, in float32 or wider.

    Opacus's own norm sampler handles 2-D and 3-D inputs only (others get no norm) and
    works in the autocast dtype; this one flattens the middle dimensions and picks, per
    layer, the cheaper exact formula: the Gram matrices (T^2 (in + out) per example) or the
    layer's per-example gradient (T in out).

    Args:
        layer: The Linear.
        activations: [x (n, ..., in)].
        backprops: dL_i/dy (n, ..., out) (Opacus has scaled a mean loss by n).

    Returns:
        {param: (n,)} for the layer's trainable parameters.
    """
    dtype = torch.promote_types(backprops.dtype, torch.float32)
    n = backprops.shape[0]
    g = backprops.to(dtype).reshape(n, -1, backprops.shape[-1])  # (n, T, out)
    x = activations[0].to(dtype).reshape(n, -1, activations[0].shape[-1])  # (n, T, in)
    steps, size_in, size_out = x.shape[1], x.shape[2], g.shape[2]
    out: dict[nn.Parameter, torch.Tensor] = {}
    if layer.weight.requires_grad:
        if steps * steps * (size_in + size_out) <= steps * size_in * size_out:
            gram = (g @ g.transpose(1, 2)) * (x @ x.transpose(1, 2))  # (n, T, T)
            out[layer.weight] = gram.sum((1, 2)).clamp(min=0).sqrt()
        else:
            out[layer.weight] = torch.linalg.matrix_norm(g.transpose(1, 2) @ x)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = g.sum(1).norm(dim=1)
    return out


class GhostClippingHooks(GradSampleModuleFastGradientClipping):
    """Opacus's ghost-clipping hooks with zenlm's exact norm samplers (see module docstring).

    Args:
        model: The model (its submodules get the hooks; `model` itself is unchanged).
        max_grad_norm: C.
    """

    NORM_SAMPLERS = {nn.Linear: linear_norm_sample}  # this class's own: Opacus's untouched

    def __init__(self, model: nn.Module, *, max_grad_norm: float) -> None:
        super().__init__(model, batch_first=True, loss_reduction="mean", strict=True,
                         max_grad_norm=max_grad_norm, use_ghost_clipping=True)
        self.layer_names = {id(m): name for name, m in model.named_modules()}
        self.exact_layers = shared_parameter_layers(model)

    def capture_activations_hook(self, module: nn.Module, *args: Any) -> None:
        """Opacus's hook; a layer sharing a weight takes the exact path; reuse is refused."""
        try:
            self._call_exact_if_shared(module, super().capture_activations_hook,
                                       module, *args)
        except NotImplementedError:
            raise PrivacyError(
                f"layer {self.layer_names.get(id(module), '?')!r} runs more than once per "
                "forward pass; ghost clipping needs one call per layer: use "
                "--dp-clipping exact") from None

    def capture_backprops_hook(self, module: nn.Module, *args: Any, **kwargs: Any) -> None:
        """Opacus's hook (norms from activations and backprops), exact path for shared ones."""
        self._call_exact_if_shared(module, super().capture_backprops_hook, module, *args,
                                   **kwargs)

    def _call_exact_if_shared(self, module: nn.Module, hook: Callable, *args: Any,
                              **kwargs: Any) -> None:
        if id(module) not in self.exact_layers:
            hook(*args, **kwargs)
            return
        # The per-example gradients of a shared weight must be summed over its layers
        # before the norm: Opacus's exact path accumulates them (as in hooks mode).
        self.use_ghost_clipping = False
        try:
            hook(*args, **kwargs)
        finally:
            self.use_ghost_clipping = True


def shared_parameter_layers(model: nn.Module) -> set[int]:
    """The ids of the layers owning a trainable parameter that another layer owns too."""
    owners: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.requires_grad:
                owners.setdefault(id(param), []).append(module)
    return {id(m) for layers in owners.values() if len(layers) > 1 for m in layers}


# ------------------------------------------------------------------ one step's pieces
def per_example(losses: torch.Tensor, rows: int) -> torch.Tensor:
    """The private objective's output, checked: one loss per example (rows,).

    Raises:
        PrivacyError: another shape (a mean over the batch couples its examples).
    """
    if losses.shape != (rows,):
        raise PrivacyError(f"a private objective returns one loss per example, shape "
                           f"({rows},), got {tuple(losses.shape)}")
    return losses


def rows_of(batch: Any) -> int:
    """The examples of a batch: the length of its first tensor."""
    return len(next(v for v in batch.values() if torch.is_tensor(v)))


def exact_pieces_loss(model: nn.Module, pieces: Sequence[Any],
                      objective: Callable[[nn.Module, Any], torch.Tensor],
                      optimizer: DPOptimizer) -> torch.Tensor:
    """Exact mode: backward every piece but the last; return the last's mean loss.

    Each earlier piece's per-example gradients are clipped and summed into the optimizer's
    `summed_grad` at once, then dropped: only one piece's per-example gradients (rows x
    trainable weights) are held at a time, not the whole draw's (GBs for a full encoder).
    The last piece's are clipped by the optimizer's own step. Its value is the mean over
    the whole draw (for the log), its gradient the last piece's.
    """
    total, rows = torch.zeros(()), 0
    for index, piece in enumerate(pieces):
        n = rows_of(piece)
        losses = per_example(objective(model, piece), n)
        loss = losses.mean()
        total, rows = total + losses.detach().float().sum().cpu(), rows + n
        if index < len(pieces) - 1:
            # The Trainer calls this under autocast, but backward and the optimizer's step
            # run outside it: so do these, or grad samplers and clipping go bfloat16.
            with torch.autocast(loss.device.type, enabled=False):
                loss.backward()
                optimizer.clip_and_accumulate()
            for param in optimizer.params:
                param.grad_sample = None
    mean = (total / rows).to(device=loss.device, dtype=loss.dtype)
    return loss + (mean - loss.detach())


def ghost_pieces_loss(model: nn.Module, pieces: Sequence[Any],
                      objective: Callable[[nn.Module, Any], torch.Tensor],
                      hooks: GhostClippingHooks, optimizer: DPOptimizer,
                      names: dict[int, str]) -> torch.Tensor:
    """Ghost mode: every piece's clipped gradient sum accumulates in `.grad`.

    Returns:
        The draw's mean loss (for the log) as a leaf: the Trainer's backward of it adds
        nothing, the gradients are already in place.
    """
    total, rows = torch.zeros(()), 0
    for piece in pieces:
        n = rows_of(piece)
        losses = per_example(objective(model, piece), n)  # under the Trainer's autocast
        total, rows = total + losses.detach().float().sum().cpu(), rows + n
        with torch.autocast(losses.device.type, enabled=False):  # as exact mode's pieces
            factors = _clip_factors(losses, hooks, optimizer.params, names)
            hooks.disable_hooks()  # the second backward computes no norm
            try:
                (factors * losses).sum().backward()
            finally:
                hooks.enable_hooks()
    return (total / rows).requires_grad_()


def _clip_factors(losses: torch.Tensor, hooks: GhostClippingHooks,
                  params: list[nn.Parameter], names: dict[int, str]) -> torch.Tensor:
    """Opacus's clipping factors (n,) of one piece, from a first backward of its mean loss.

    The first backward's parameter gradients are discarded: `.grad` keeps the clipped
    sums of the earlier pieces.
    """
    kept = [p.grad for p in params]
    for param in params:
        param.grad = None
    losses.mean().backward(retain_graph=True)
    for param, grad in zip(params, kept, strict=True):
        param.grad = grad
    for param in params:
        norms = getattr(param, "_norm_sample", None)
        if norms is None or norms.shape != losses.shape:
            raise PrivacyError(
                f"trainable parameter {names.get(id(param), '?')!r} got no per-example "
                "gradient norm (unused in the forward pass?); freeze it, since noise alone "
                "would update it")
    factors = hooks.get_clipping_coef().detach().to(losses.dtype)
    for param in params:  # no stale norm may reach the next piece
        param._norm_sample = None
    return factors


# ------------------------------------------------------------------ optimizers
class _Seeded:
    """Noise of step t from (secret, t); the sum divided by the expected batch q * N only."""

    params: list[nn.Parameter]
    expected_batch_size: int

    def setup(self, secret: bytes, names: dict[int, str], step: int = 0) -> None:
        """The run's secret, parameter names (for errors) and the next step's number."""
        self.secret, self.names, self.noise_step = secret, names, step

    def scale_grad(self) -> None:
        """Divide by the expected logical batch q * N only.

        Opacus also divides by the number of backward passes (its virtual steps, where
        `expected_batch_size` is the physical batch); here pieces of one Poisson draw
        make up the logical batch, whose size is already the divisor.
        """
        for param in self.params:
            param.grad /= self.expected_batch_size

    def add_noise(self) -> None:
        """Opacus's noise, drawn from a generator seeded by (secret, step)."""
        seed = derive_seed(self.secret, "noise", self.noise_step)
        self.generator = torch.Generator(device=self.params[0].device).manual_seed(seed)
        self.noise_step += 1
        super().add_noise()  # type: ignore[misc]

    def _refuse_missing(self, attribute: str) -> None:
        for param in self.params:
            if getattr(param, attribute) is None:
                name = self.names.get(id(param), "?")
                raise PrivacyError(
                    f"trainable parameter {name!r} got no per-sample gradient (unused in the "
                    "forward pass?); freeze it, since noise alone would update it")


class SeededDPOptimizer(_Seeded, DPOptimizer):
    """Opacus's DPOptimizer (exact mode) with seeded noise."""

    def pre_step(self, closure: Callable[[], float] | None = None) -> bool | None:
        """Opacus's clip, noise and accounting, first naming a parameter without grad samples.

        (Opacus itself only says that one is missing.)
        """
        self._refuse_missing("grad_sample")
        return super().pre_step(closure)


class SeededGhostOptimizer(_Seeded, DPOptimizerFastGradientClipping):
    """Opacus's DPOptimizerFastGradientClipping (ghost mode: `.grad` is clipped already)."""

    def pre_step(self, closure: Callable[[], float] | None = None) -> bool | None:
        """Opacus's noise and accounting, first naming a parameter without a gradient."""
        self._refuse_missing("grad")
        return super().pre_step(closure)
