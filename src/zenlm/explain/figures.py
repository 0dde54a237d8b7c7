"""The explanation's pictures as PNG bytes (matplotlib, Agg: files only, no window)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402

#: Thumbnail side in pixels of one attention map in the per-head grid.
CELL = 48
GAP = 3


def heatmap(matrix: np.ndarray, labels: list[str], title: str, *,
            xlabel: str = "attended token (key)", ylabel: str = "token (query)",
            ylabels: list[str] | None = None, centered: bool = False,
            gamma: float = 1.0) -> bytes:
    """A labelled (rows, cols) heatmap as PNG bytes.

    `centered` uses a diverging scale around 0 (signed attributions); `gamma` < 1 is a
    power-law scale that lifts small values (attention, where one sink token can take
    most of the mass and hide the rest).
    """
    rows, cols = matrix.shape
    side = min(max(4.0, 0.22 * max(rows, cols) + 2.0), 16.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, min(side, 0.25 * rows + 2.5)))
    try:
        limit = float(np.abs(matrix).max()) or 1.0
        extra: dict = {"vmin": -limit, "vmax": limit} if centered else {}
        if gamma != 1.0 and not centered:
            extra = {"norm": PowerNorm(gamma, vmin=0.0, vmax=limit)}
        image = ax.imshow(matrix, cmap="RdBu_r" if centered else "viridis", aspect="auto",
                          **extra)
        font = 7 if max(rows, cols) > 24 else 9
        ax.set_xticks(range(cols), [_short(t) for t in labels], rotation=90, fontsize=font)
        ax.set_yticks(range(rows), [_short(t) for t in (ylabels or labels)], fontsize=font)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.04)
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


def bars(values: list[float], labels: list[str], title: str, ylabel: str,
         *, signed: bool = False) -> bytes:
    """One bar per token as PNG bytes; `signed` colours positive red and negative blue."""
    width = min(max(5.0, 0.28 * len(values) + 1.5), 24.0)
    fig, ax = plt.subplots(figsize=(width, 3.6))
    try:
        colours = ["#c0392b" if v >= 0 else "#2e6da4" for v in values] if signed else "#5b6abf"
        ax.bar(range(len(values)), values, color=colours)
        ax.set_xticks(range(len(values)), [_short(t) for t in labels], rotation=90,
                      fontsize=7 if len(values) > 24 else 9)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.axhline(0, color="black", linewidth=0.6)
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


def layer_heads(maps: np.ndarray, labels: list[str], title: str) -> bytes:
    """One layer's heads (H, n, n), each a labelled panel on a square-root scale, as PNG."""
    H, n = maps.shape[0], maps.shape[-1]
    cols = min(H, 4)
    rows = -(-H // cols)
    side = min(max(2.6, 0.12 * n + 1.2), 6.0)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * side, rows * side), squeeze=False)
    try:
        font = 5 if n > 24 else 7
        short = [_short(t, 10) for t in labels]
        for head, ax in enumerate(axes.flat):
            if head >= H:
                ax.axis("off")
                continue
            ax.imshow(maps[head], cmap="viridis", norm=PowerNorm(0.5, vmin=0.0,
                                                                 vmax=float(maps[head].max())))
            ax.set_title(f"head {head}", fontsize=9)
            ax.set_xticks(range(n), short if head + cols >= H else [], rotation=90,
                          fontsize=font)
            ax.set_yticks(range(n), short if head % cols == 0 else [], fontsize=font)
        fig.suptitle(title)
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


def head_grid(maps: np.ndarray) -> bytes:
    """Every layer's heads and their mean as one tiled PNG, each map scaled to its own max.

    Args:
        maps: (L, H, n, n) attention probabilities.

    Returns:
        PNG bytes: L rows (layers, first at the top), H + 1 columns (heads, then mean).
    """
    L, H = maps.shape[:2]
    tiles = np.concatenate([maps, maps.mean(axis=1, keepdims=True)], axis=1)  # (L, H+1, n, n)
    canvas = np.ones((L * (CELL + GAP) + GAP, (H + 1) * (CELL + GAP) + GAP, 3))
    colour = matplotlib.colormaps["viridis"]
    for layer in range(L):
        for head in range(H + 1):
            tile = _resize(tiles[layer, head], CELL)
            rgb = colour(tile / max(float(tile.max()), 1e-12))[..., :3]
            top, left = GAP + layer * (CELL + GAP), GAP + head * (CELL + GAP)
            canvas[top:top + CELL, left:left + CELL] = rgb
    buffer = io.BytesIO()
    plt.imsave(buffer, canvas, format="png")
    return buffer.getvalue()


def _resize(matrix: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of (n, n) to (size, size): each token stays a sharp block."""
    index = (np.arange(size) * matrix.shape[0]) // size
    return matrix[np.ix_(index, index)]


def _short(token: str, limit: int = 14) -> str:
    token = token.replace("\n", "\\n")
    return token if len(token) <= limit else token[: limit - 1] + "…"


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
