"""Fusing projections that read the same input into one wider Linear."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def stack_linears(parts: Sequence[nn.Linear]) -> nn.Linear:
    """One Linear whose output rows are `parts`' rows, in order (one matmul, same numbers).

    Built on the meta device so that no throwaway random initialisation is computed
    and allocated beside the stacked weights.

    Args:
        parts: Linears over the same input width, all with or all without bias; or
            layers of one quantized kind (anything with a `stacked` classmethod).

    Returns:
        A Linear (in_features -> sum of out_features) in the parts' dtype and device,
        or the quantized kind's stacked layer.
    """
    first = parts[0]
    if not isinstance(first, nn.Linear):  # a quantized layer (zenlm.quant) stacks its own rows
        return type(first).stacked(parts)
    with torch.device("meta"):
        fused = nn.Linear(first.in_features, sum(p.out_features for p in parts),
                          bias=first.bias is not None)
    fused.weight = nn.Parameter(torch.cat([p.weight.detach() for p in parts]),
                                requires_grad=first.weight.requires_grad)
    if first.bias is not None:
        fused.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]),
                                  requires_grad=first.bias.requires_grad)
    return fused
