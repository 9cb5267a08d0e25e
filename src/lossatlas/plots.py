"""Figures: every function draws one PNG at ``path`` and leaves no figure open.

Figures are built as ``matplotlib.figure.Figure`` objects on an Agg canvas, not through
``pyplot``, so nothing is registered globally and nothing depends on the session's backend.
No computation happens here beyond layout (ranks for the rank plot, a uniform subsample of
points when there are too many to draw).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

RHAT_LINE = 1.01


def _figure(width, height) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    fig.clear()
    return path


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


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
    rows, cols = _grid(len(names))
    fig = _figure(3.6 * cols, 3.4 * rows)
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
    return _save(fig, path, dpi)


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
    rows, cols = _grid(len(names))
    fig = _figure(3.8 * cols, 3.4 * rows)
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
    return _save(fig, path, dpi)


# ---------------------------------------------------------------------------------------------
# Diagnostics


CHAINS_PER_PANEL = 8  # more lines than this in one panel cannot be told apart


def plot_trace(energy, path, name: str = "U", title: str | None = None, dpi: int = 120) -> Path:
    """Trace of a (chain, draw) quantity: at most 8 chains per panel, each its own colour,
    panels sharing the y axis, so every chain can be followed and compared."""
    e = np.asarray(energy, dtype=float)
    n = e.shape[0]
    groups = [range(a, min(a + CHAINS_PER_PANEL, n)) for a in range(0, n, CHAINS_PER_PANEL)]
    rows, cols = _grid(len(groups), max_cols=2)
    fig = _figure(8 if cols == 1 else 11, 2.6 * rows + 0.6)
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
    return _save(fig, path, dpi)


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
    fig = _figure(8, min(2 + 0.35 * n_chains, 14))
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
    return _save(fig, path, dpi)


def plot_rhat(
    names, rhat, path, threshold: float = RHAT_LINE, title: str | None = None, dpi: int = 120
) -> Path:
    """R-hat per quantity, with the threshold line; names on the axis when there are few."""
    r = np.asarray(rhat, dtype=float)
    names = list(names)
    fig = _figure(min(12, 3 + 0.25 * len(r)) if len(r) <= 40 else 10, 3.4)
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
    return _save(fig, path, dpi)


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
    fig = _figure(5, 3.4)
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
    return _save(fig, path, dpi)


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
    fig = _figure(6, 5)
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
    return _save(fig, path, dpi)


# ---------------------------------------------------------------------------------------------
# A diagnostics table's R-hat


def rhat(table, path, rhat_max: float = RHAT_LINE, title: str | None = None, dpi: int = 120):
    """:func:`plot_rhat` from a ``diagnostics.summarize`` table (columns name, r_hat)."""
    return plot_rhat(table["name"], table["r_hat"], path, threshold=rhat_max, title=title, dpi=dpi)


# ---------------------------------------------------------------------------------------------
# Landscape analyses


def plot_census_loss_index(table, path, title: str | None = None, dpi: int = 120) -> Path:
    """Critical points of a census: mean loss against Hessian index, one marker per
    classification, marker area by basin share. ``table`` has columns mean_loss, index,
    classification, basin_share (a ``minima.census`` table)."""
    fig = _figure(5.6, 3.8)
    ax = fig.subplots()
    kinds = list(dict.fromkeys(str(k) for k in table["classification"]))
    markers = dict(zip(kinds, "osD^vx*", strict=False))
    rng = np.random.default_rng(0)
    for i, kind in enumerate(kinds):
        sel = np.asarray(table["classification"]) == kind
        idx = np.asarray(table["index"], dtype=float)[sel]
        # jitter the integer index a little so equal points stay visible
        x = idx + rng.uniform(-0.12, 0.12, size=len(idx))
        share = np.asarray(table["basin_share"], dtype=float)[sel]
        ax.scatter(
            x,
            np.asarray(table["mean_loss"], dtype=float)[sel],
            s=20 + 400 * share,
            marker=markers.get(kind, "o"),
            color=f"C{i}",
            alpha=0.7,
            edgecolor="k",
            label=f"{kind} ({int(sel.sum())})",
        )
    index = np.asarray(table["index"], dtype=float)
    if len(index) and np.isfinite(index).any():
        lo, hi = int(np.nanmin(index)), int(np.nanmax(index))
        ax.set_xlim(lo - 0.5, hi + 0.5)
        if hi - lo <= 20:
            ax.set_xticks(range(lo, hi + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(
        "Hessian index (negative eigenvalues, free coordinates);\n"
        "points spread by up to ±0.12 around it so equal ones stay visible",
        fontsize="small",
    )
    ax.set_ylabel("mean per-point loss")
    head = f"{title}: " if title else ""
    ax.set_title(f"{head}census of {len(table)} critical points (area = basin share)")
    if kinds:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no critical points", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path, dpi)


def plot_census_plane(plane, table, path, title: str | None = None, dpi: int = 120) -> Path:
    """Census points on the 2-D linear PCA plane of the good draws. ``plane`` is a dict
    with ``good (n, 2)``, ``points (m, 2)``, ``ratio``, ``colour (n,)`` or None (no plane: a
    message is drawn); ``table`` the census table in the same row order as ``points``."""
    fig = _figure(6, 4.6)
    ax = fig.subplots()
    head = f"{title}: " if title else ""
    if plane is None or plane["good"].shape[1] < 2:
        ax.text(0.5, 0.5, "fewer than 2 good draws: no plane", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(f"{head}census minima on the good draws' plane")
        return _save(fig, path, dpi)
    g, pts = plane["good"], plane["points"]
    sc = ax.scatter(g[:, 0], g[:, 1], s=4, c=plane.get("colour"), cmap="viridis", alpha=0.5)
    if plane.get("colour") is not None:
        fig.colorbar(sc, ax=ax, label="mean loss (draws)")
    good = np.asarray(table["good"], dtype=bool) if len(table) else np.zeros(0, bool)
    for sel, label, mk in ((good, "good critical point", "*"), (~good, "other", "x")):
        if sel.any():
            ax.scatter(pts[sel, 0], pts[sel, 1], s=90, marker=mk, color="C3", label=label)
    r = plane.get("ratio") or []
    ax.set_xlabel(f"PC1 ({r[0]:.1%} var.)" if r else "PC1")
    ax.set_ylabel(f"PC2 ({r[1]:.1%} var.)" if len(r) > 1 else "PC2")
    ax.set_title(f"{head}census points on the good draws' PCA plane")
    if len(g):
        # frame the good cloud and the critical points near it (within its own extent again);
        # farther ones would shrink the cloud to a dot, so they are counted instead
        lo, hi = g.min(axis=0), g.max(axis=0)
        span = hi - lo + 1e-9
        near = np.all((pts >= lo - span) & (pts <= hi + span), axis=1) if len(pts) else []
        if np.any(near):
            lo = np.minimum(lo, pts[near].min(axis=0))
            hi = np.maximum(hi, pts[near].max(axis=0))
        pad = 0.05 * (hi - lo) + 1e-9
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        far = int(len(pts) - np.sum(near))
        if far:
            ax.text(
                0.01, 0.01, f"{far} critical point{'s' * (far != 1)} beyond the frame",
                transform=ax.transAxes,
                fontsize="x-small", va="bottom",
            )  # fmt: skip
    ax.legend(fontsize="small")
    return _save(fig, path, dpi)


def plot_compare(results: Mapping, path, reference: str = "reference", dpi: int = 120) -> Path:
    """One row per compared experiment: the reference's and the experiment's good draws on the
    reference's PCA plane, before and after mapping back. ``results`` maps name -> dict with
    ``projection`` (``reference``, ``before``, ``after`` (n, 2) arrays, or None) and ``rows``
    (the two table rows, before and after); ``reference`` names the reference experiment.
    Open markers, so neither cloud hides the other."""
    names = list(results) or ["(none)"]
    fig = _figure(9, 3.6 * len(names))
    axes = fig.subplots(len(names), 2, squeeze=False)
    for row, name in zip(axes, names, strict=True):
        item = results.get(name) or {}
        proj = item.get("projection")
        stages = {r["stage"]: r for r in item.get("rows", [])}
        for ax, stage in zip(row, ("before", "after"), strict=True):
            r = stages.get(stage, {})
            if proj is None:
                text = textwrap.fill(str(r.get("status", "not compared")), width=40)
                ax.text(0.5, 0.5, text, ha="center", va="center", fontsize="small")
                ax.set_axis_off()
                ax.set_title(f"{name}: {stage} mapping back")
                continue
            for pts, who, colour, marker in (
                (proj["reference"], f"{reference} (reference)", "C0", "o"),
                (proj[stage], name, "C1", "^"),
            ):
                ax.scatter(
                    *pts.T, s=9, marker=marker, facecolors="none", edgecolors=colour,
                    linewidths=0.6, alpha=0.7, label=f"{who}, {len(pts)} good draws",
                )  # fmt: skip
            ax.set_xlabel("reference PC1")
            ax.set_ylabel("reference PC2")
            nan = float("nan")
            ax.set_title(
                f"{name}, {stage} mapping back\np = {r.get('pvalue', nan):.3g} (whole chains), "
                f"max angle {r.get('max_angle', nan):.1f}° "
                f"[{r.get('max_angle_lo', nan):.1f}, {r.get('max_angle_hi', nan):.1f}]",
                fontsize="small",
            )
            ax.legend(fontsize="x-small")
    fig.suptitle(f"Good draws against those of the reference, {reference}")
    return _save(fig, path, dpi)


def component_steps(levels, counts) -> tuple[np.ndarray, np.ndarray]:
    """The components-against-level curve to draw (``where="post"``): from a little below the
    lowest level, where no minimum lies and so no component, to the last level."""
    levels, counts = np.asarray(levels, dtype=float), np.asarray(counts)
    span = levels[-1] - levels[0] if len(levels) > 1 else 0.0
    below = levels[0] - 0.05 * (span if span > 0 else max(abs(levels[0]), 1.0))
    return np.r_[below, levels], np.r_[0, counts]


def plot_connect_tree(meta: Mapping, path, title: str | None = None, dpi: int = 120) -> Path:
    """Disconnectivity dendrogram of the connectivity analysis's nodes: single linkage of
    the lowest known path maxima (``meta`` of ``connect.run_connect``), heights in mean
    loss, with the components of the level sets against the level beside it."""
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    fig = _figure(9.0, 3.8)
    ax_tree, ax_count = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    M = np.asarray(meta["path_max"], dtype=float)
    head = f"{title}: " if title else ""
    if len(M) < 2:
        ax_tree.text(0.5, 0.5, "fewer than 2 minima", ha="center", va="center")
        ax_tree.set_axis_off()
        ax_count.set_axis_off()
        return _save(fig, path, dpi)
    D = M.copy()
    # pairs with no known path merge above every known one
    top = D[np.isfinite(D)].max()
    D[~np.isfinite(D)] = 2 * top if top > 0 else 1.0
    np.fill_diagonal(D, 0.0)
    dendrogram(
        linkage(squareform(D, checks=False), method="single"),
        ax=ax_tree,
        labels=[str(n) for n in meta["nodes"]],
        color_threshold=meta["level"],
    )
    ax_tree.axhline(meta["level"], color="k", ls="--", lw=0.8, label=f"level {meta['level']:g}")
    ax_tree.set_ylabel("highest mean loss on the lowest known path")
    ax_tree.set_xlabel("census point id")
    ax_tree.legend(fontsize="small")
    ax_tree.set_title(f"{head}merge tree of {len(M)} minima", fontsize="medium")
    ax_count.step(*component_steps(meta["levels"], meta["n_components"]), where="post")
    ax_count.axvline(meta["level"], color="k", ls="--", lw=0.8)
    ax_count.set_xlabel("level λ (mean loss)")
    ax_count.set_ylabel("components of {loss ≤ λ} (upper bound)")
    ax_count.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path, dpi)


def plot_connect_profiles(
    meta: Mapping, path, title: str | None = None, dpi: int = 120, max_pairs: int = 6
) -> Path:
    """Mean loss along arc length for the refined pairs: straight line, Dynamic String
    Sampling and the string method (``meta`` of ``connect.run_connect``)."""
    profiles = list(meta["profiles"])[:max_pairs]
    rows, cols = _grid(max(1, len(profiles)))
    fig = _figure(3.6 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, prof in zip(axes, profiles, strict=False):
        for key, style in (("straight", ":"), ("dss", "--"), ("string", "-")):
            ax.plot(prof[key]["s"], prof[key]["loss"], style, label=key)
        ax.axhline(meta["level"], color="k", lw=0.6)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(bottom=0.0)
        ax.set_title(f"{prof['pair'][0]} - {prof['pair'][1]}", fontsize="small")
        ax.set_xlabel("arc length (normalised)")
        ax.set_ylabel("mean loss")
    if profiles:
        axes[0].legend(fontsize="x-small")
    else:
        axes[0].text(0.5, 0.5, "no pair refined", ha="center", va="center")
    for ax in axes[len(profiles) :]:
        ax.set_axis_off()
    fig.suptitle(f"{title + ': ' if title else ''}loss along the paths between minima")
    return _save(fig, path, dpi)


def plot_connect_length(meta: Mapping, path, title: str | None = None, dpi: int = 120) -> Path:
    """Freeman & Bruna's figure: Dynamic String Sampling's normalised length and bead count
    against the level, one line per scanned pair; hollow markers where it did not connect
    (``meta["length_by_level"]`` of ``connect.run_connect``)."""
    scans = list(meta.get("length_by_level") or [])
    fig = _figure(8.0, 3.2)
    ax_len, ax_beads = fig.subplots(1, 2)
    for k, scan in enumerate(scans):
        colour = f"C{k % 10}"
        level = np.asarray(scan["level"])
        ok = np.asarray(scan["connected"], dtype=bool)
        label = f"{scan['pair'][0]} - {scan['pair'][1]}"
        for ax, key in ((ax_len, "normalised_length"), (ax_beads, "n_beads")):
            y = np.asarray(scan[key], dtype=float)
            ax.plot(level, y, "-", color=colour, lw=0.8, label=label if ax is ax_len else None)
            ax.plot(level[ok], y[ok], "o", color=colour)
            ax.plot(level[~ok], y[~ok], "o", mfc="none", color=colour)
    from matplotlib.ticker import NullFormatter

    for ax, name in ((ax_len, "normalised length"), (ax_beads, "beads")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("level (mean loss)")
        ax.set_ylabel(name)
        ax.axvline(meta["level"], color="k", lw=0.6)
    if scans:
        ax_len.legend(fontsize="x-small", title="pair (hollow: not connected)",
                      title_fontsize="x-small")  # fmt: skip
    else:
        ax_len.text(0.5, 0.5, "no pair scanned", ha="center", va="center")
    fig.suptitle(f"{title + ': ' if title else ''}path length and beads against the level")
    return _save(fig, path, dpi)


def plot_cells(table, meta: Mapping, path, title: str | None = None, dpi: int = 120) -> Path:
    """Liu's cells: posterior mass of each examined cell against its minimum's loss, genuine
    cells filled, spurious hollow, cells holding census minima ringed; beside it, each
    cell's lowest sampled loss against its minimum's (``cells.run_cells``)."""
    fig = _figure(8.0, 3.4)
    ax_mass, ax_low = fig.subplots(1, 2)
    genuine = table["genuine"].to_numpy(dtype=bool)
    loss = table["cell_loss"].to_numpy(dtype=float)
    mass = np.maximum(table["mass"].to_numpy(dtype=float), 0.5 / max(meta["draws"], 1))
    census = table["census_ids"].fillna("").astype(str).str.len().to_numpy() > 0
    for ax, y in ((ax_mass, mass), (ax_low, table["lowest_loss"].to_numpy(dtype=float))):
        ax.plot(loss[genuine], y[genuine], "o", color="C0", ms=4, label="genuine")
        ax.plot(loss[~genuine], y[~genuine], "o", mfc="none", color="C3", ms=4,
                label="spurious")  # fmt: skip
        ax.plot(loss[census], y[census], "s", mfc="none", color="k", ms=8,
                label="holds a census minimum")  # fmt: skip
        ax.set_xlabel("cell minimum (mean loss)")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    ax_mass.set_yscale("log")
    ax_mass.set_ylabel("posterior mass (never visited: at the floor)")
    ax_low.set_ylabel("lowest sampled loss in the cell")
    lims = [np.nanmin(loss) if len(loss) else 0, np.nanmax(loss) if len(loss) else 1]
    ax_low.plot(lims, lims, "k-", lw=0.5)
    ax_mass.legend(fontsize="x-small")
    fig.suptitle(
        f"{title + ': ' if title else ''}{meta['cells_visited']} cells visited of "
        f"10^{meta['log10_cells_of_layer']:.1f}; unseen mass {meta['unseen_mass_by_chains']:.2g}"
    )
    return _save(fig, path, dpi)


def plot_band(points: list, table, path, dpi: int = 120) -> Path:
    """Choromanska's figures: every critical point's loss against its index fraction, one
    colour per network; the band of the minima's losses (5-95 %) against the network's
    parameter count, with the held-out band when there is one (``steps.band``)."""
    fig = _figure(8.0, 3.4)
    ax_pts, ax_band = fig.subplots(1, 2)
    for k, (pts, row) in enumerate(zip(points, table.to_dict("records"), strict=True)):
        colour = f"C{k % 10}"
        ax_pts.plot(pts["index_fraction"], pts["mean_loss"], "o", ms=3, mfc="none",
                    color=colour, label=f"{row['hidden']} (p = {row['p']})")  # fmt: skip
    ax_pts.set_xlabel("index / p")
    ax_pts.set_ylabel("mean loss")
    ax_pts.set_yscale("log")
    if points:
        ax_pts.legend(fontsize="x-small", title="hidden widths", title_fontsize="x-small")
    p = table["p"].to_numpy(dtype=float) if len(table) else np.zeros(0)
    for lo, hi, label, colour in (("band_lo", "band_hi", "training", "C0"),
                                  ("heldout_lo", "heldout_hi", "held-out", "C1")):  # fmt: skip
        if lo in table and table[lo].notna().any():
            ax_band.fill_between(p, table[lo], table[hi], alpha=0.3, color=colour, label=label)
            ax_band.plot(p, table[lo], "o-", color=colour, ms=3)
            ax_band.plot(p, table[hi], "o-", color=colour, ms=3)
    ax_band.set_xlabel("parameters p")
    ax_band.set_ylabel("minima's mean loss, 5-95 %")
    ax_band.set_yscale("log")
    ax_band.legend(fontsize="x-small")
    fig.suptitle("critical values against index, and the band of minima against width")
    return _save(fig, path, dpi)
