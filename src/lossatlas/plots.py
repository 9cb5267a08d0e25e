"""The report's figures (datasets, good minima, kernel PCA) and the diagnostics' (trace, rank,
R-hat, energy histogram): every function draws one PNG at ``path`` and leaves no figure open.
Each landscape analysis draws its own figure in its module, on the same canvas.

Figures are built as ``matplotlib.figure.Figure`` objects on an Agg canvas, not through
``pyplot``, so nothing is registered globally and nothing depends on the session's backend.
No computation happens here beyond layout (ranks for the rank plot, a uniform subsample of
points when there are too many to draw).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lossatlas import canvas

RHAT_LINE = 1.01


def _parse_name(name: str):
    """Transforms from a sweep name like "rotate-120" or "rotate--30_scale-2" (config.py)."""
    out = []
    for part in name.split("_"):
        key, sep, value = part.partition("-")
        try:
            out.append((key, float(value)))
        except ValueError:
            if sep:
                out.append((key, value))
    return out


def experiment_title(name: str, transforms=None) -> str:
    """Panel title: "rotate-120: θ = 120°" for a rotation; otherwise the experiment name.

    Without ``transforms`` they are read back from the name.
    """
    for key, value in transforms if transforms is not None else _parse_name(name):
        if key == "rotate":
            return f"{name}: θ = {float(value):g}°"
    return name


# ---------------------------------------------------------------------------------------------
# The report's figures


def plot_datasets(datasets: Mapping, path, titles: Mapping | None = None, dpi: int = 120) -> Path:
    """Figure 1: one panel per experiment, points coloured by class, equal aspect (regression:
    the targets, see :func:`_regression_panel`).

    ``datasets`` maps experiment name -> object with ``X`` (n, 2) and ``y`` (n,) or ``Y``
    (a ``data.Dataset``); ``titles`` maps name -> panel title (default: the name).
    """
    names = list(datasets)
    rows, cols = canvas.grid(len(names))
    fig = canvas.figure(3.6 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    lim = max(float(np.max(np.abs(np.asarray(datasets[n].X)))) for n in names) * 1.1
    for ax, name in zip(axes, names, strict=False):
        ds = datasets[name]
        if getattr(ds, "Y", None) is not None:
            _regression_panel(ax, np.asarray(ds.X), np.asarray(ds.Y), lim)
        else:
            _class_panel(ax, np.asarray(ds.X), np.asarray(ds.y), lim)
        ax.set_title((titles or {}).get(name) or experiment_title(name))
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    if len(datasets) > 1:  # one panel's own title says it all, centred on its axes
        fig.suptitle("Dataset per experiment")
    return canvas.save(fig, path, dpi)


def _class_panel(ax, X, y, lim) -> None:
    one_d = X.shape[1] == 1
    # 1-D inputs: the class on the vertical axis
    XY = np.column_stack([X[:, 0], y]) if one_d else X[:, :2]
    for c in np.unique(y):
        ax.scatter(XY[y == c, 0], XY[y == c, 1], s=36, label=f"class {c}", edgecolor="k")
    ax.set_xlim(-lim, lim)
    ax.set_xlabel("$x_1$")
    if one_d:
        ax.set_ylim(-0.5, y.max() + 0.5)
        ax.set_ylabel("class")
    else:
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_ylabel("$x_2$")
    ax.legend(fontsize="small", loc="best")


def _regression_panel(ax, X, Y, lim) -> None:
    """Targets of a regression: against x (1-D inputs), as arrows x -> y (2-D to 2-D), or
    as the points' colour (the first target)."""
    ax.set_xlim(-lim, lim)
    ax.set_xlabel("$x_1$")
    if X.shape[1] == 1:
        for k in range(Y.shape[1]):
            ax.scatter(X[:, 0], Y[:, k], s=36, edgecolor="k", label=f"$y_{k + 1}$")
        ax.set_ylabel("target")
        ax.legend(fontsize="small", loc="best")
        return
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_ylabel("$x_2$")
    if Y.shape[1] == 2 and X.shape[1] == 2:
        ax.scatter(X[:, 0], X[:, 1], s=36, edgecolor="k", zorder=3, label="input x")
        ax.quiver(
            X[:, 0], X[:, 1], Y[:, 0] - X[:, 0], Y[:, 1] - X[:, 1],
            angles="xy", scale_units="xy", scale=1, width=0.006, alpha=0.7, label="x -> y",
        )  # fmt: skip
        ax.legend(fontsize="small", loc="best")
        return
    points = ax.scatter(X[:, 0], X[:, 1], c=Y[:, 0], s=36, edgecolor="k", cmap="viridis")
    ax.figure.colorbar(points, ax=ax, label="$y_1$")


def _good_panel(item, which: str):
    """(coords (n, 2), ratios, message, colour) from a Reduction or a plain dict."""
    if hasattr(item, "summary"):
        info = item.summary[which]
        coords = getattr(item, which)
        gi = item.good_index
        colour = item.mean_loss[gi[:, 0], gi[:, 1]] if len(gi) else None
    else:
        info = item
        coords = np.asarray(item["coords"])
        colour = item.get("colour")
    ratios = info.get("explained_variance_ratio") or []
    return coords, ratios, info.get("message", ""), info.get("status", "ok"), colour


def plot_good_minima(
    results: Mapping,
    path,
    which: str = "pca_kpca",
    titles: Mapping | None = None,
    threshold: float | None = None,
    dpi: int = 120,
) -> Path:
    """Figure 2: 2-D linear PCA of the good draws, one panel per experiment.

    ``results`` maps name -> ``reduce.Reduction`` (or a dict with ``coords``,
    ``explained_variance_ratio``, ``message``, ``status``); ``which`` is "pca_kpca" (PCA of the
    kernel-PCA coordinates, the report's pipeline) or "pca_param" (PCA in parameter space).
    Axes name the component and its explained-variance ratio; points are coloured by mean loss.
    """
    space = {"pca_kpca": "kernel-PCA space", "pca_param": "parameter space"}.get(which, which)
    names = list(results)
    rows, cols = canvas.grid(len(names))
    fig = canvas.figure(3.8 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        coords, ratios, message, status, colour = _good_panel(results[name], which)
        title = (titles or {}).get(name) or experiment_title(name)
        if status != "ok" or len(coords) < 2:
            ax.set_title(title)
            # wrapped to the panel by hand: matplotlib's wrap=True wraps to the figure
            text = textwrap.fill(message or "no good draws", width=34)
            ax.text(0.5, 0.5, text, ha="center", va="center", fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.set_title(f"{title}\n{len(coords)} good draws")
        sc = ax.scatter(coords[:, 0], coords[:, 1], s=4, c=colour, cmap="viridis", alpha=0.7)
        if colour is not None:
            fig.colorbar(sc, ax=ax, label="mean loss")
        for i, setter in enumerate((ax.set_xlabel, ax.set_ylabel)):
            r = f" ({ratios[i]:.1%} var.)" if i < len(ratios) else ""
            setter(f"PC{i + 1}{r}")
        ax.set_aspect("equal", adjustable="datalim")
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    cut = f" (mean loss < {threshold:g})" if threshold is not None else ""
    fig.suptitle(f"Good draws{cut}: linear PCA in {space}")
    return canvas.save(fig, path, dpi)


# ---------------------------------------------------------------------------------------------
# Diagnostics


CHAINS_PER_PANEL = 8  # more lines than this in one panel cannot be told apart


def plot_trace(energy, path, name: str = "U", title: str | None = None, dpi: int = 120) -> Path:
    """Trace of a (chain, draw) quantity: at most 8 chains per panel, each its own colour,
    panels sharing the y axis, so every chain can be followed and compared."""
    e = np.asarray(energy, dtype=float)
    n = e.shape[0]
    groups = [range(a, min(a + CHAINS_PER_PANEL, n)) for a in range(0, n, CHAINS_PER_PANEL)]
    rows, cols = canvas.grid(len(groups), max_cols=2)
    fig = canvas.figure(8 if cols == 1 else 11, 2.6 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, chains in zip(axes, groups, strict=False):
        for i, c in enumerate(chains):
            ax.plot(e[c], lw=0.6, color=f"C{i}", alpha=0.85)
        label = f"chain {chains[0]}" if len(chains) == 1 else f"chains {chains[0]}-{chains[-1]}"
        ax.set_title(label, fontsize="small")
        ax.set_ylabel(name)
    for ax in axes[len(groups) :]:
        ax.set_axis_off()
    for ax in axes[-cols:]:
        ax.set_xlabel("draw")
    head = f"{title}: " if title else ""
    fig.suptitle(f"{head}trace of {name} ({n} chains)")
    return canvas.save(fig, path, dpi)


def plot_rank(
    energy,
    path,
    bins: int | None = None,
    name: str = "U",
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Rank plot: histogram of the pooled ranks in each chain (Vehtari et al. 2021), the chains
    stacked in one panel as ArviZ draws it (one panel per chain cost seconds of layout).

    Converged chains give near-uniform histograms; the dashed lines are the uniform count.
    """
    # here, not at the top: scipy.stats costs a second of imports in every job that draws
    from scipy.stats import rankdata

    e = np.asarray(energy, dtype=float)
    n_chains, n_draws = e.shape
    ranks = rankdata(e.ravel()).reshape(e.shape)
    bins = bins or int(np.clip(n_draws // 10, 5, 30))
    edges = np.linspace(0.5, e.size + 0.5, bins + 1)
    which = np.clip(np.searchsorted(edges, ranks, side="right") - 1, 0, bins - 1)
    counts = np.zeros((n_chains, bins))
    np.add.at(counts, (np.arange(n_chains)[:, None], which), 1)
    uniform = n_draws / bins
    gap = 1.2 * max(counts.max(), uniform)  # each chain's row of bars, bottom to top
    fig = canvas.figure(8, min(2 + 0.35 * n_chains, 14))
    ax = fig.subplots()
    bottoms = np.arange(n_chains) * gap
    for c in range(n_chains):  # one filled step outline per chain: few artists to draw
        ax.stairs(counts[c] + bottoms[c], edges, baseline=bottoms[c], fill=True, color="C0")
    ax.hlines(bottoms + uniform, edges[0], edges[-1], colors="k", ls="--", lw=0.8)
    ax.set_yticks(bottoms, [f"chain {c}" for c in range(n_chains)], fontsize="small")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(f"rank of {name} among all draws")
    head = f"{title}: " if title else ""
    ax.set_title(f"{head}rank plot of {name} (dashed: uniform)")
    return canvas.save(fig, path, dpi)


def plot_rhat(
    names, rhat, path, threshold: float = RHAT_LINE, title: str | None = None, dpi: int = 120
) -> Path:
    """R-hat per quantity, with the threshold line; names on the axis when there are few."""
    r = np.asarray(rhat, dtype=float)
    names = list(names)
    fig = canvas.figure(min(12, 3 + 0.25 * len(r)) if len(r) <= 40 else 10, 3.4)
    ax = fig.subplots()
    x = np.arange(len(r))
    bad = ~(r < threshold)
    ax.scatter(x[~bad], r[~bad], s=14, color="C0", label=f"< {threshold}")
    ax.scatter(
        x[bad],
        np.where(np.isfinite(r[bad]), r[bad], threshold),
        s=18,
        color="C3",
        marker="x",
        label=f">= {threshold} or NaN",
    )
    ax.axhline(threshold, color="k", ls="--", lw=0.8)
    ax.axhline(1.0, color="0.6", lw=0.5)
    if len(r) <= 40:
        ax.set_xticks(x, names, rotation=90, fontsize="small")
    else:
        ax.set_xlabel("quantity index")
    ax.set_ylabel("rank-normalised split R-hat")
    head = f"{title}: " if title else ""
    ax.set_title(f"{head}R-hat ({int(bad.sum())} of {len(r)} at or above {threshold})")
    ax.legend(fontsize="small")
    return canvas.save(fig, path, dpi)


def plot_energy_hist(
    energy,
    path,
    bins: int = 60,
    title: str | None = None,
    good_below: float | None = None,
    dpi: int = 120,
) -> Path:
    """Histogram of U over all draws; ``good_below``: the U under which a draw is good."""
    e = np.asarray(energy, dtype=float).ravel()
    fig = canvas.figure(5, 3.4)
    ax = fig.subplots()
    ax.hist(e[np.isfinite(e)], bins=bins, color="C0")
    if good_below is not None:
        n_good = int((e < good_below).sum())
        ax.axvline(good_below, color="C3", linestyle="--", label=f"good: U < {good_below:.3g}")
        ax.legend(title=f"{n_good} of {e.size} draws good", fontsize="small")
    ax.set_xlabel("U")
    ax.set_ylabel("draws")
    head = f"{title}: " if title else ""
    ax.set_title(f"{head}energy histogram ({e.size} draws)")
    return canvas.save(fig, path, dpi)


def plot_kpca_3d(
    embedding,
    colour,
    path,
    max_points: int = 20000,
    seed: int = 0,
    fractions=None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """3-D scatter of the kernel-PCA coordinates coloured by U (2-D if fewer components).

    ``embedding`` is (chain, draw, k) or (n, k) and ``colour`` has the matching leading shape.
    ``fractions``: each component's share of the centred kernel's variance, shown on its axis
    and summed in the title. Above ``max_points`` a uniform subsample is drawn, only to keep
    the file readable.
    """
    emb = np.asarray(embedding, dtype=float)
    emb = emb.reshape(-1, emb.shape[-1])
    col = np.asarray(colour, dtype=float).ravel()
    if len(emb) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(emb), max_points, replace=False))
        emb, col = emb[idx], col[idx]
    fig = canvas.figure(6, 5)
    k = emb.shape[1]
    if k >= 3:
        ax = fig.add_subplot(projection="3d")
        sc = ax.scatter(emb[:, 0], emb[:, 1], emb[:, 2], c=col, s=2, cmap="viridis")
    else:
        ax = fig.add_subplot()
        y = emb[:, 1] if k == 2 else np.zeros(len(emb))
        sc = ax.scatter(emb[:, 0], y, c=col, s=2, cmap="viridis")
    share = list(fractions or [])

    def label(i: int) -> str:
        return f"KPC{i + 1}" + (f" ({share[i]:.1%})" if i < len(share) else "")

    ax.set_xlabel(label(0))
    ax.set_ylabel(label(1) if k >= 2 else "")
    if k >= 3:
        ax.set_zlabel(label(2))
    fig.colorbar(sc, ax=ax, label="U", shrink=0.7, pad=0.12)
    head = f"{title}: " if title else ""
    kept = f"\nthe {min(k, 3)} components keep {sum(share[:3]):.1%} of the kernel variance"
    ax.set_title(f"{head}kernel PCA of {len(emb)} draws" + (kept if share else ""))
    return canvas.save(fig, path, dpi)


# ---------------------------------------------------------------------------------------------
# A diagnostics table's R-hat


def rhat(table, path, rhat_max: float = RHAT_LINE, title: str | None = None, dpi: int = 120):
    """:func:`plot_rhat` from a ``diagnostics.summarize`` table (columns name, r_hat)."""
    return plot_rhat(table["name"], table["r_hat"], path, threshold=rhat_max, title=title, dpi=dpi)


# ---------------------------------------------------------------------------------------------
# Landscape analyses
