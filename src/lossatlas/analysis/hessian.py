"""The Hessian spectrum at each census minimum: how sharp or flat the good minima are.

What PyHessian reports for a trained network, at every minimum the census found (strict,
degenerate, and box KKT points of index 0, on their free coordinates):

- the top eigenvalues (sharpness) and the bottom ones;
- the trace (the sum of the curvatures);
- the eigenvalue density.

With at most ``dense_max`` free coordinates the Hessian is formed (central differences of the
exact gradient, :func:`lossatlas.analysis.minima.hessian`): every eigenvalue, the exact trace,
the density as the eigenvalues themselves. Above that:

- ``eigsh`` gives the ``n_eig`` largest and smallest eigenvalues from Hessian-vector products
  (:func:`lossatlas.analysis.minima.free_spectrum`);
- Hutchinson's estimator gives the trace from ``n_probes`` Rademacher vectors, with its
  standard error;
- stochastic Lanczos quadrature (``lanczos_steps`` steps from each probe) gives the density
  (Ghorbani et al. 2019; Yao et al. 2020).

Across the minima, Spearman's correlation of the top eigenvalue with U says whether the lower
minima are the flatter ones here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import eigh_tridiagonal
from scipy.stats import spearmanr

from lossatlas import canvas
from lossatlas.analysis import minima

COLUMNS = [
    "experiment", "id", "classification", "U", "mean_loss", "n_free", "method", "lambda_max",
    "lambda_min", "trace", "trace_se", "n_negative", "top_eigenvalues",
]  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """How the spectrum is computed (``landscape.hessian``)."""

    max_minima: int = 16
    dense_max: int = 2000
    n_eig: int = 6
    n_probes: int = 16
    lanczos_steps: int = 64
    eig_tol: float = 1e-6
    eig_maxiter: int = 1000
    seed: int = 0


def free_coordinates(U_and_grad, x: np.ndarray, box: float) -> np.ndarray:
    """The coordinates not pinned on the box wall by an outward gradient, as the census pins
    them (bool mask)."""
    _, g = minima.at_one_point(U_and_grad)(x)
    return ~minima.on_the_wall(x, g, box)


def lanczos_nodes(op, v0: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """One run of stochastic Lanczos quadrature from ``v0``: the Ritz values of ``op`` and
    their weights (squared first components of the Ritz vectors), which sum to 1."""
    n = len(v0)
    m = min(steps, n)
    Q = np.zeros((m, n))
    alpha, beta = np.zeros(m), np.zeros(max(m - 1, 0))
    q = v0 / np.linalg.norm(v0)
    for j in range(m):
        Q[j] = q
        w = op.matvec(q)
        alpha[j] = q @ w
        # full reorthogonalisation: m is small, and without it Ritz values repeat
        w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
        if j == m - 1:
            break
        beta[j] = np.linalg.norm(w)
        if beta[j] < 1e-12 * max(1.0, abs(alpha[j])):  # an invariant subspace: exact
            m = j + 1
            alpha, beta = alpha[:m], beta[: m - 1]
            break
        q = w / beta[j]
    nodes, vectors = eigh_tridiagonal(alpha, beta)
    return nodes, vectors[0] ** 2


def spectrum_at(U_and_grad, x: np.ndarray, box: float, settings: Settings) -> dict:
    """The Hessian spectrum at ``x`` on its free coordinates: eigenvalues computed (all, or
    both ends), trace (and its standard error), and the density as nodes and weights."""
    free = free_coordinates(U_and_grad, x, box)
    n = int(free.sum())
    # every eigenvalue up to dense_max free coordinates, both ends above: as the census does
    eig, method, _ = minima.free_spectrum(
        U_and_grad, x, free, dense_max=settings.dense_max, n_eig=settings.n_eig,
        eig_tol=settings.eig_tol, eig_maxiter=settings.eig_maxiter, seed=settings.seed,
    )  # fmt: skip
    if method == "dense":
        weights = np.full(n, 1.0 / max(n, 1))
        return {"n_free": n, "method": "dense", "eigenvalues": eig, "trace": float(eig.sum()),
                "trace_se": 0.0, "nodes": eig, "weights": weights}  # fmt: skip
    op = minima.hessian_operator(U_and_grad, x, free)
    rng = np.random.default_rng([settings.seed, n])
    probes = rng.choice([-1.0, 1.0], size=(settings.n_probes, n))
    quadratic = np.array([z @ op.matvec(z) for z in probes])
    runs = [lanczos_nodes(op, z, settings.lanczos_steps) for z in probes]
    return {
        "n_free": n,
        "method": "eigsh + Hutchinson + SLQ",
        "eigenvalues": eig,
        "trace": float(quadratic.mean()),
        "trace_se": float(quadratic.std(ddof=1) / np.sqrt(len(quadratic)))
        if len(quadratic) > 1
        else float("nan"),
        "nodes": np.concatenate([nodes for nodes, _ in runs]),
        "weights": np.concatenate([w for _, w in runs]) / len(runs),
    }


def minima_rows(census: pd.DataFrame, max_minima: int) -> pd.DataFrame:
    """The ``max_minima`` lowest census minima (index 0)."""
    t = census[minima.census_minima(census)]
    return t.sort_values(["U", "id"]).head(max_minima)


def run(target, census: pd.DataFrame, points: np.ndarray, settings: Settings):
    """``(table, spectra, meta)``: a row per census minimum, the spectra (for the figure),
    and the summary with the one-line finding."""
    rows, spectra = [], []
    for r in minima_rows(census, settings.max_minima).itertuples():
        s = spectrum_at(target.U_and_grad, np.asarray(points[r.id], float), target.box, settings)
        eig = s["eigenvalues"]
        top = eig[::-1][: settings.n_eig]
        rows.append({
            "id": int(r.id), "classification": r.classification, "U": float(r.U),
            "mean_loss": float(r.mean_loss), "n_free": s["n_free"], "method": s["method"],
            "lambda_max": float(eig[-1]) if len(eig) else np.nan,
            "lambda_min": float(eig[0]) if len(eig) else np.nan,
            "trace": s["trace"], "trace_se": s["trace_se"],
            "n_negative": int((eig < -1e-8 * max(1.0, np.abs(eig).max(initial=0))).sum()),
            "top_eigenvalues": " ".join(f"{v:.6g}" for v in top),
        })  # fmt: skip
        spectra.append(s)
    table = pd.DataFrame(rows, columns=COLUMNS[1:])
    return table, spectra, summary(table)


def summary(table: pd.DataFrame) -> dict:
    """Sharpness across the minima, and whether the lower ones are flatter: the finding."""
    if table.empty:
        return {"n_minima": 0, "finding": "no census minimum to measure"}
    lam, trace = table["lambda_max"], table["trace"]
    rho, p = spearmanr(table["U"], lam) if len(table) > 2 else (np.nan, np.nan)
    lowest = table.iloc[int(np.argmin(table["U"].to_numpy()))]
    rank = int((lam < lowest["lambda_max"]).sum()) + 1
    finding = (
        f"{len(table)} minima: top eigenvalue {lam.min():.3g} to {lam.max():.3g} (median "
        f"{lam.median():.3g}), trace {trace.min():.3g} to {trace.max():.3g}; the lowest "
        f"minimum is the {_ordinal(rank)} flattest of {len(table)}"
    )
    if np.isfinite(rho):
        finding += f"; Spearman rho(U, top eigenvalue) = {rho:.2f} (p = {p:.2g})"
    return {
        "n_minima": len(table),
        "lambda_max": {"min": lam.min(), "median": lam.median(), "max": lam.max()},
        "trace": {"min": trace.min(), "median": trace.median(), "max": trace.max()},
        "lowest_minimum": {"id": int(lowest["id"]), "flatness_rank": rank},
        "spearman_U_lambda_max": None if not np.isfinite(rho) else {"rho": rho, "p": p},
        "finding": finding,
    }


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 < 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, width: float) -> np.ndarray:
    """The eigenvalue density on ``grid``: each node a Gaussian of ``width`` (in the grid's
    symlog units), weighted."""
    z = (grid[:, None] - _symlog(nodes)[None, :]) / width
    return np.exp(-0.5 * z**2) @ weights / (width * np.sqrt(2 * np.pi))


def _symlog(x: np.ndarray, scale: float = 1e-6) -> np.ndarray:
    return np.sign(x) * np.log10(1 + np.abs(x) / scale)


def plot(table: pd.DataFrame, spectra: list[dict], path, *, title: str, dpi: int) -> None:
    """The eigenvalue density at each minimum (symmetric log scale), and top eigenvalue
    against U."""
    from matplotlib import colormaps

    fig = canvas.figure(10, 4)
    left, right = fig.subplots(1, 2)
    if table.empty:
        left.text(0.5, 0.5, "no census minimum", ha="center", va="center")
    else:
        ends = np.concatenate([_symlog(s["nodes"]) for s in spectra])
        grid = np.linspace(ends.min() - 1, ends.max() + 1, 400)
        colours = colormaps["viridis"](np.linspace(0, 1, len(spectra)))
        for s, colour in zip(spectra, colours, strict=True):
            left.plot(grid, density(s["nodes"], s["weights"], grid, 0.15), color=colour, lw=1)
        ticks = np.arange(np.floor(grid.min()), np.ceil(grid.max()) + 1, 2)
        left.set_xticks(ticks, [f"{np.sign(t) * 1e-6 * (10 ** abs(t) - 1):.0e}" for t in ticks])
        right.scatter(table["U"], table["lambda_max"], c=colours, s=20)
    left.set(xlabel="eigenvalue (symmetric log)", ylabel="density", title="Hessian spectrum")
    positive = not table.empty and bool((table["lambda_max"] > 0).all())
    right.set(xlabel="U", ylabel="top eigenvalue", title="sharpness vs loss")
    right.set_yscale("log" if positive else "linear")
    fig.suptitle(title)
    canvas.save(fig, path, dpi)
