"""A matplotlib figure on an Agg canvas, saved as a PNG: what every figure of the package draws
on. Figures are ``matplotlib.figure.Figure`` objects, not ``pyplot``'s, so nothing is
registered globally and nothing depends on the session's backend."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def figure(width, height) -> Figure:
    """A constrained-layout figure of ``width`` x ``height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path, dpi: int) -> Path:
    """``fig`` as a PNG at ``path`` (its folder made), then cleared; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    fig.clear()
    return path


def grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    """Rows and columns of a grid of ``n`` panels, at most ``max_cols`` wide."""
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols
