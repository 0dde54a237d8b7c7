"""Which input tokens pushed a classifier towards a label: attributions through captum.

Integrated gradients (Sundararajan et al. 2017) on the output of the token embedding:
the path from a baseline (every ordinary token replaced by the padding token; special
tokens such as [CLS] and [SEP] kept) to the text, `n_steps` points, Gauss-Legendre.
Its completeness axiom says the attributions sum to f(text) - f(baseline), f being the
target label's logit; captum's convergence delta is the gap, reported as the check.
Gradient x input (one gradient, no path) is the cheap alternative, without that axiom.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients  # runtime dependency
from torch import nn

METHODS = ("ig", "gxi")


@dataclass
class Attribution:
    """Per-token attributions of P explained outputs (logits) of one text.

    Attributes:
        scores: (P, T) float64: row p is output p's attribution to each input token
            (summed over the embedding dimension).
        output: (P,) f(text): the explained logits.
        baseline_output: (P,) f(baseline) (None for gradient x input).
        delta: (P,) captum's convergence delta, sum(scores) - (f(text) - f(baseline))
            (None for gradient x input).
    """

    scores: torch.Tensor
    output: torch.Tensor
    baseline_output: torch.Tensor | None = None
    delta: torch.Tensor | None = None

    def completeness_error(self) -> float | None:
        """Largest |delta| / |f(text) - f(baseline)| over the rows (None without IG)."""
        if self.delta is None or self.baseline_output is None:
            return None
        gap = (self.output - self.baseline_output).abs().clamp(min=1e-12)
        return float((self.delta.abs() / gap).max())


def baseline_ids(ids: torch.Tensor, pad: int, keep: set[int]) -> torch.Tensor:
    """(B, T): `ids` with every token not in `keep` (the special ones) set to `pad`."""
    kept = torch.tensor(sorted(keep), dtype=ids.dtype) if keep else ids.new_empty(0)
    return torch.where(torch.isin(ids, kept), ids, torch.full_like(ids, pad))


def attribute(model: nn.Module, embedding: nn.Embedding, ids: torch.Tensor,
              targets: list[int | tuple[int, int]], *, pad: int, special: set[int],
              method: str = "ig", n_steps: int = 50,
              internal_batch_size: int = 16) -> Attribution:
    """Attributions of `targets` of `model(ids)` to the tokens of `ids` (1, T).

    Args:
        model: Maps ids (B, T) to logits (B, C) or (B, T, C), in eval mode.
        embedding: The token embedding whose output is attributed.
        ids: The text (1, T).
        targets: P targets: a class index (sequence classifier) or (position, class)
            (token classifier); one attribution row each.
        pad: Baseline token id.
        special: Token ids kept in the baseline.
        method: "ig" (integrated gradients) or "gxi" (gradient x input).
        n_steps: Integration points of IG.
        internal_batch_size: Path points per forward pass of IG (bounds memory).

    Returns:
        The Attribution: scores (P, T), outputs (P,), and for IG baseline outputs and
        convergence deltas (P,).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    inputs = ids.expand(len(targets), -1).contiguous()  # (P, T): one row per target
    target = list(targets)
    outputs = _pick(_logits(model, inputs), target)
    if method == "gxi":
        raw = LayerGradientXActivation(model, embedding).attribute(inputs, target=target)
        return Attribution(raw.sum(-1).double().detach(), outputs)
    base = baseline_ids(inputs, pad, special)
    raw, delta = LayerIntegratedGradients(model, embedding).attribute(
        inputs, baselines=base, target=target, n_steps=n_steps,
        internal_batch_size=internal_batch_size, return_convergence_delta=True,
    )  # (P, T, d), (P,)
    base_out = _pick(_logits(model, base), target)
    return Attribution(raw.sum(-1).double().detach(), outputs, base_out,
                       delta.double().detach())


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).double()


def _pick(logits: torch.Tensor, targets: list[int | tuple[int, int]]) -> torch.Tensor:
    """(P,) the logit each target names, row p of logits (P, C) or (P, T, C)."""
    rows = [logits[p][t] if isinstance(t, int) else logits[p][t[0], t[1]]
            for p, t in enumerate(targets)]
    return torch.stack(rows)
