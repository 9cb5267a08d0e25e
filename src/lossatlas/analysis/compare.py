"""Do two experiments' good draws agree once the dataset transform is undone?

An affine input transform ``x' = A x + t`` is undone in parameter space by
:func:`lossatlas.data.to_reference` (``W1 = W1' A``, ``b1 = b1' + W1' t``). For a rotation this
map is an isometry, and the report's kernel PCA and PCA are invariant under it: agreement after
mapping back holds by construction except where the box cuts, so the comparison checks the
sampler and the box, not the data. It is made sound by
- comparing after mapping back only on ``B ∩ M(B)`` (:func:`restrict_to_common_box`), the part
  of the box both experiments sample: there both target the same density, for any invertible
  affine map (scale and shear included); outside it the null hypothesis is false by design;
- a two-sample test (energy distance or the biased RBF-kernel MMD^2) whose p-value permutes
  whole chains, not draws (:func:`two_sample_test`): draws of one chain are autocorrelated, and
  permuting them is anti-conservative;
- the principal angles (degrees) between the two clouds' ``k``-dim PCA subspaces with an
  interval from a bootstrap over chains, set against the angles between two halves of the
  reference's own chains (:func:`angle_check`).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.linalg import subspace_angles
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA

from lossatlas import canvas, data
from lossatlas.analysis import draws
from lossatlas.storage import streaming

QUANTILES = (0.025, 0.975)


def _units(groups, n: int) -> np.ndarray:
    """Chain ids of ``n`` draws (None: every draw its own unit)."""
    return np.arange(n) if groups is None else np.asarray(groups)


def _subsample(X, g, max_points, rng):
    X = np.asarray(X, dtype=np.float64)
    if len(X) > max_points:
        keep = np.sort(rng.choice(len(X), size=max_points, replace=False))
        X, g = X[keep], g[keep]
    return X, g


def _verdict(p: float, smallest: float, alpha: float, n_units: tuple[int, int]) -> str:
    if smallest > alpha:
        return (
            f"cannot be decided with {n_units[0]} + {n_units[1]} chains: the smallest p-value "
            f"of whole-chain permutations is {smallest:.2g} > alpha = {alpha:g}"
        )
    if p <= alpha:
        return f"differ (p = {p:.2g}, whole chains permuted)"
    return f"not distinguishable (p = {p:.2g}, whole chains permuted)"


def two_sample_test(
    X,
    Y,
    method: str = "energy",
    n_perm: int = 999,
    seed: int = 0,
    max_points: int = 1000,
    gamma: float | None = None,
    *,
    groups_x=None,
    groups_y=None,
    alpha: float = 0.05,
) -> dict:
    """Permutation test of ``X (n, p)`` and ``Y (m, p)`` coming from one distribution.

    ``method``: ``energy`` (``2 E|X-Y| - E|X-X'| - E|Y-Y'|``) or ``mmd`` (``E k(X,X') +
    E k(Y,Y') - 2 E k(X,Y)``, ``k = exp(-gamma |.|^2)``, ``gamma`` None = 1 / median squared
    pooled distance). Both are V-statistics over the pooled matrix; larger = more different.
    ``groups_x``/``groups_y``: each draw's chain; the permutations reassign whole chains (all
    of them when there are at most ``n_perm`` ways), so autocorrelated draws do not make the
    test anti-conservative. None: every draw its own unit.
    Returns ``statistic, pvalue, smallest_pvalue, verdict, n_x, n_y, chains_x, chains_y,
    method``.
    """
    rng = np.random.default_rng(seed)
    X, gx = _subsample(X, _units(groups_x, len(X)), max_points, rng)
    Y, gy = _subsample(Y, _units(groups_y, len(Y)), max_points, rng)
    Z = np.vstack([X, Y])
    n, m = len(X), len(Y)
    D = cdist(Z, Z)
    if method == "energy":
        M, sign = D, np.array([-1.0, -1.0, 2.0])
    elif method == "mmd":
        sq = D * D
        if gamma is None:
            med = np.median(sq[np.triu_indices(len(Z), 1)])
            gamma = 1.0 / med if med > 0 else 1.0
        M, sign = np.exp(-gamma * sq), np.array([1.0, 1.0, -2.0])
    else:
        raise ValueError(f"unknown method {method!r}; use energy or mmd")
    # units: the chains of X, then those of Y; unit_of[i] is draw i's unit
    ux, unit_x = np.unique(gx, return_inverse=True)
    uy, unit_y = np.unique(gy, return_inverse=True)
    unit_of = np.concatenate([unit_x, len(ux) + unit_y])
    n_units, k_x = len(ux) + len(uy), len(ux)

    def stat(members: np.ndarray) -> np.ndarray:
        # members (B, n_units) bool: the units assigned to X in each of B arrangements
        a = members[:, unit_of].astype(np.float64)
        b = 1.0 - a
        na, nb = a.sum(1), b.sum(1)
        Ma = a @ M
        sxx = (Ma * a).sum(1) / (na * na)
        syy = ((b @ M) * b).sum(1) / (nb * nb)
        sxy = (Ma * b).sum(1) / (na * nb)
        return sign[0] * sxx + sign[1] * syy + sign[2] * sxy

    observed = np.zeros((1, n_units), dtype=bool)
    observed[0, :k_x] = True
    t_obs = float(stat(observed)[0])
    total = math.comb(n_units, k_x)
    exact = total <= n_perm
    if exact:
        arrangements = combinations(range(n_units), k_x)
    else:
        arrangements = (rng.permutation(n_units)[:k_x] for _ in range(n_perm))
    at_least, done = 0, 0
    tol = 1e-12 * max(1.0, abs(t_obs))
    while True:
        batch = [next(arrangements, None) for _ in range(64)]
        batch = [c for c in batch if c is not None]
        if not batch:
            break
        members = np.zeros((len(batch), n_units), dtype=bool)
        for row, chosen in enumerate(batch):
            members[row, list(chosen)] = True
        at_least += int((stat(members) >= t_obs - tol).sum())
        done += len(batch)
    # exact: the observed arrangement is among all of them; random: it is added (never p = 0)
    pvalue = at_least / done if exact else (at_least + 1) / (done + 1)
    smallest = 1.0 / total if exact else 1.0 / (done + 1)
    return {
        "statistic": t_obs,
        "pvalue": float(pvalue),
        "smallest_pvalue": float(smallest),
        "verdict": _verdict(pvalue, smallest, alpha, (len(ux), len(uy))),
        "permutations": "all" if exact else done,
        "n_x": n,
        "n_y": m,
        "chains_x": len(ux),
        "chains_y": len(uy),
        "method": method,
    }


def pca_angles(X, Y, k: int = 2) -> np.ndarray:
    """Principal angles (degrees, descending) between the ``k``-dim PCA subspaces of ``X`` and
    ``Y`` (each centred on its own mean)."""
    Vx = PCA(n_components=k).fit(np.asarray(X, dtype=np.float64)).components_.T
    Vy = PCA(n_components=k).fit(np.asarray(Y, dtype=np.float64)).components_.T
    return np.degrees(subspace_angles(Vx, Vy))


def _centred(G: np.ndarray) -> np.ndarray:
    return G - G.mean(0, keepdims=True) - G.mean(1, keepdims=True) + G.mean()


def _top(C: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    w, U = np.linalg.eigh(C)
    w, U = w[::-1][:k], U[:, ::-1][:, :k]
    return U, np.sqrt(np.maximum(w, 1e-300))


class _Angles:
    """Principal angles between PCA subspaces of row subsets of one pooled cloud: direct PCA
    when the rows are longer than they are many, else from the pooled Gram matrix, computed
    once (wide clouds: p >> n)."""

    def __init__(self, Z: np.ndarray, k: int):
        self.Z, self.k = Z, k
        self.G = Z @ Z.T if Z.shape[1] > len(Z) else None

    def max_angle(self, i: np.ndarray, j: np.ndarray) -> float:
        if self.G is None:
            return float(pca_angles(self.Z[i], self.Z[j], self.k).max())
        Ux, sx = _top(_centred(self.G[np.ix_(i, i)]), self.k)
        Uy, sy = _top(_centred(self.G[np.ix_(j, j)]), self.k)
        cos = np.linalg.svd(
            (Ux / sx).T @ _centred(self.G[np.ix_(i, j)]) @ (Uy / sy), compute_uv=False
        )
        return float(np.degrees(np.arccos(np.clip(cos.min(), -1.0, 1.0))))


def _rows_of(units: np.ndarray, unit_of: np.ndarray) -> np.ndarray:
    order = np.argsort(unit_of, kind="stable")
    bounds = np.searchsorted(unit_of[order], np.arange(unit_of.max() + 2))
    return np.concatenate([order[bounds[u] : bounds[u + 1]] for u in units])


def angle_check(
    X,
    Y,
    k: int = 2,
    *,
    groups_x=None,
    groups_y=None,
    n_boot: int = 100,
    n_splits: int = 20,
    seed: int = 0,
) -> dict:
    """The largest principal angle between the ``k``-dim PCA subspaces of ``X`` and ``Y``, an
    interval from a bootstrap over chains (each cloud's chains resampled with replacement), and
    the same angle between two random halves of ``X``'s own chains (``n_splits`` splits): what
    chance alone gives with this many chains."""
    rng = np.random.default_rng(seed)
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    _, ux = np.unique(_units(groups_x, len(X)), return_inverse=True)
    _, uy = np.unique(_units(groups_y, len(Y)), return_inverse=True)
    angles = _Angles(np.vstack([X, Y]), k)
    ix, iy = np.arange(len(X)), len(X) + np.arange(len(Y))
    out = {"angles": pca_angles(X, Y, k).tolist()}
    out["max_angle"] = float(max(out["angles"]))
    boot = []
    for _ in range(n_boot):
        i = ix[_rows_of(rng.integers(0, ux.max() + 1, ux.max() + 1), ux)]
        j = iy[_rows_of(rng.integers(0, uy.max() + 1, uy.max() + 1), uy)]
        if min(len(i), len(j)) > k:
            boot.append(angles.max_angle(i, j))
    lo, hi = np.quantile(boot, QUANTILES) if boot else (np.nan, np.nan)
    out["max_angle_interval"] = [float(lo), float(hi)]
    halves = []
    n_units = ux.max() + 1
    for _ in range(n_splits if n_units >= 2 else 0):
        perm = rng.permutation(n_units)
        i, j = _rows_of(perm[: n_units // 2], ux), _rows_of(perm[n_units // 2 :], ux)
        if min(len(i), len(j)) > k:
            halves.append(angles.max_angle(i, j))
    if halves:
        med, q95 = np.median(halves), np.quantile(halves, 0.95)
        out["split_half_max_angle"] = {"median": float(med), "q95": float(q95), "n": len(halves)}
        side = "beyond" if lo > q95 else "within"
        out["angle_verdict"] = (
            f"{side} what two halves of the reference's own chains give: {out['max_angle']:.3g} "
            f"deg [{lo:.3g}, {hi:.3g}] vs split halves {med:.3g} deg (95 % below {q95:.3g})"
        )
    else:
        out["split_half_max_angle"] = None
        out["angle_verdict"] = "not calibrated: the reference has too few chains to split"
    return out


def map_back(
    theta, sizes: Sequence[int], transforms, box: float | None = None
) -> tuple[np.ndarray, dict]:
    """A transformed experiment's draws in the reference experiment's coordinates, by
    :func:`lossatlas.data.experiment_affine` and :func:`lossatlas.data.to_reference`. Info:
    ``exact`` (False when label noise was applied: no parameter map makes the problems equal)
    and ``frac_outside_box`` (mapped draws leaving ``[-box, box]^p``)."""
    A, t, exact = data.experiment_affine(transforms, int(sizes[0]))
    if is_identity(A, t):  # nothing to map (e.g. label noise), whatever the network
        mapped = np.array(theta, dtype=np.float64)
    else:
        mapped = data.to_reference(theta, sizes, A, t)
    outside = float(np.mean(np.abs(mapped).max(axis=1) > box)) if box is not None else np.nan
    return mapped, {"exact": exact, "frac_outside_box": outside}


def is_identity(A: np.ndarray, t: np.ndarray) -> bool:
    """Whether the input map ``x' = A x + t`` leaves every input as it is."""
    return bool(np.array_equal(A, np.eye(len(A))) and not np.any(t))


def inside_box_of(theta, sizes: Sequence[int], transforms, box: float) -> np.ndarray:
    """Which draws ``theta`` (in the untransformed data's coordinates) lie in the box of the
    experiment with ``transforms``: ``M^-1(theta)`` in ``[-box, box]^p``."""
    A, t, _ = data.experiment_affine(transforms, int(sizes[0]))
    A_inv = np.linalg.inv(A)
    there = np.asarray(theta, dtype=np.float64)
    if not is_identity(A, t):
        there = data.to_reference(there, sizes, A_inv, -A_inv @ t)
    return np.abs(there).max(axis=1) <= box * (1 + 1e-12)


def compare_clouds(
    reference,
    other,
    sizes: Sequence[int],
    transforms,
    *,
    ref_transforms=(),
    chains_ref=None,
    chains_other=None,
    box: float | None = None,
    key: Callable[[np.ndarray], np.ndarray] | None = None,
    k: int = 2,
    method: str = "energy",
    n_perm: int = 999,
    seed: int = 0,
    max_points: int = 1000,
    alpha: float = 0.05,
    n_boot: int = 100,
    n_splits: int = 20,
) -> dict:
    """Compare the good draws ``reference (n, p)`` of the reference experiment (in the
    untransformed data's coordinates; ``ref_transforms`` its own, for its box) with ``other
    (m, p)`` of an experiment with ``transforms``, before and after mapping ``other`` back.
    ``chains_ref``/``chains_other``: each draw's chain (permutations and bootstraps move whole
    chains). After mapping back, both clouds keep only their draws inside both experiments'
    boxes (``box`` None: no box). ``key`` (e.g. canonicalisation) is applied after that.

    Returns ``{"before": {...}, "after": {...}, "exact", "frac_outside_box", ...}``; each
    stage holds :func:`two_sample_test` and :func:`angle_check`.
    """
    ref = np.asarray(reference, dtype=np.float64)
    oth = np.asarray(other, dtype=np.float64)
    gr, go = _units(chains_ref, len(ref)), _units(chains_other, len(oth))
    mapped, info = map_back(oth, sizes, transforms, box)
    out = dict(info)
    after = (ref, gr, mapped, go)
    if box is not None:
        keep_ref = inside_box_of(ref, sizes, transforms, box)
        keep_oth = inside_box_of(mapped, sizes, ref_transforms, box)
        after = (ref[keep_ref], gr[keep_ref], mapped[keep_oth], go[keep_oth])
        out["common_box"] = {
            "meaning": "after mapping back, only draws inside both experiments' boxes "
            "(B ∩ M(B)) are compared: there both sample the same density",
            "ref_kept": int(keep_ref.sum()),
            "ref_dropped_fraction": float(1 - keep_ref.mean()) if len(ref) else 0.0,
            "other_kept": int(keep_oth.sum()),
            "other_dropped_fraction": float(1 - keep_oth.mean()) if len(oth) else 0.0,
        }
    for name, (a, ga, b, gb) in (("before", (ref, gr, oth, go)), ("after", after)):
        if min(len(a), len(b)) <= k:
            out[name] = {"status": f"skipped: {len(a)} and {len(b)} draws in the common box"}
            continue
        a, b = (key(a), key(b)) if key is not None else (a, b)
        r = two_sample_test(
            a, b, method, n_perm, seed, max_points, groups_x=ga, groups_y=gb, alpha=alpha
        )
        angles = angle_check(
            a, b, k, groups_x=ga, groups_y=gb, n_boot=n_boot, n_splits=n_splits, seed=seed
        )
        out[name] = {"status": "ok", **r, **angles}
    return out


# --- from the store ----------------------------------------------------------------------


def compare_rows(
    ref,
    other,
    sizes,
    key: streaming.Transform | None,
    ref_exp,
    exp,
    n_good,
    *,
    coordinates: str,
    box: float,
    seed: int,
    method: str,
    n_perm: int,
    max_points: int,
    max_mb: float,
    k: int,
    alpha: float = 0.05,
    n_boot: int = 100,
    n_splits: int = 20,
) -> tuple[list[dict], dict]:
    """Rows (one per stage, before/after mapping back) and the full result of comparing the
    good draws ``other`` of experiment ``exp`` with ``ref`` of the reference ``ref_exp``, for
    the network of layer widths ``sizes``, in the analysis coordinates ``key`` (None: raw).
    ``ref`` and ``other`` are ``(draws, chain of each)`` pairs (:func:`good_rows`); ``n_good``
    = (reference, other) good-draw counts before subsampling; ``memory`` in the result says how
    many rows ``max_mb`` allowed per experiment. The keyword arguments are ``target.box``,
    ``seed`` and the ``landscape.compare`` settings (config/README.md)."""
    sz = tuple(sizes)
    (ref, ref_chains), (other, other_chains) = ref, other
    base = {
        "experiment": exp.name,
        "reference": ref_exp.name,
        "coordinates": coordinates,
        "method": method,
        "n_good_ref": int(n_good[0]),
        "n_good_other": int(n_good[1]),
    }
    memory = draws.row_budget(np.shape(ref)[1], max_mb, max_points=max_points)
    A, t, _ = data.experiment_affine(ref_exp.transforms, sz[0])
    if not (np.allclose(A, np.eye(len(A))) and np.allclose(t, 0)):
        # compare() maps the other experiment to the untransformed dataset: do the same here
        ref, _ = map_back(ref, sz, ref_exp.transforms)
    need = k + 1
    if min(len(ref), len(other)) < need:
        msg = f"skipped: n_good={n_good[0]} (reference), {n_good[1]} (this); needs >= {need} each"
        rows = [dict(base, stage=s, status=msg) for s in ("before", "after")]
        return rows, dict(base, status=msg, memory=memory)
    res = compare_clouds(
        ref,
        other,
        sz,
        exp.transforms,
        ref_transforms=ref_exp.transforms,
        chains_ref=ref_chains,
        chains_other=other_chains,
        box=box,
        key=key,
        k=k,
        method=method,
        n_perm=n_perm,
        seed=seed,
        max_points=max_points,
        alpha=alpha,
        n_boot=n_boot,
        n_splits=n_splits,
    )
    res["isometry"] = _is_isometry(ref_exp, sz) and _is_isometry(exp, sz)
    res["meaning"] = _meaning(res)
    box_info = res.get("common_box", {})
    rows = []
    for stage in ("before", "after"):
        r = res[stage]
        if r["status"] != "ok":
            rows.append(dict(base, stage=stage, status=r["status"]))
            continue
        row = dict(base, stage=stage, status="ok", statistic=r["statistic"], pvalue=r["pvalue"])
        row.update(
            smallest_pvalue=r["smallest_pvalue"],
            verdict=r["verdict"],
            chains_ref=r["chains_x"],
            chains_other=r["chains_y"],
        )
        row.update({f"angle_{i + 1}": a for i, a in enumerate(r["angles"])})
        split = r["split_half_max_angle"] or {}
        row.update(
            max_angle=r["max_angle"],
            max_angle_lo=r["max_angle_interval"][0],
            max_angle_hi=r["max_angle_interval"][1],
            split_half_max_angle=split.get("median", np.nan),
            split_half_max_angle_q95=split.get("q95", np.nan),
            angle_verdict=r["angle_verdict"],
            n_ref=r["n_x"],
            n_other=r["n_y"],
            exact=res["exact"],
            frac_outside_box=res["frac_outside_box"],
        )
        if stage == "after":
            row.update(
                ref_dropped_fraction=box_info.get("ref_dropped_fraction", 0.0),
                other_dropped_fraction=box_info.get("other_dropped_fraction", 0.0),
            )
        rows.append(row)
    return rows, dict(base, status="ok", memory=memory, **res)


def _is_isometry(exp, sizes) -> bool:
    A, _, exact = data.experiment_affine(exp.transforms, sizes[0])
    return exact and bool(np.allclose(A.T @ A, np.eye(len(A))))


def _meaning(res: dict) -> str:
    if not res["exact"]:
        return (
            "the labels were changed: no parameter map makes the two problems the same, so "
            "'after' compares related but different targets"
        )
    if res["isometry"]:
        return (
            "the transform is an isometry of parameter space and the report's kernel PCA and "
            "PCA are invariant under it: after mapping back, agreement holds by construction "
            "inside B ∩ M(B), so 'after' checks the sampler; 'before' shows what the transform "
            "moves, and the dropped fractions what the box cuts"
        )
    return (
        "the transform is not an isometry: mapped back, the other experiment's box is a "
        "different parallelepiped M(B), and only on B ∩ M(B) do both experiments sample the same "
        "density; 'after' compares there, and the dropped fractions say how much that leaves out"
    )


def compare_projection(ref, other, sizes, key: streaming.Transform | None, exp) -> dict | None:
    """Both clouds (``(draws, chains)`` pairs), before and after mapping back, on the
    reference's top-2 PCA plane (in the analysis coordinates ``key``, None: raw), for the
    figure."""
    (ref, _), (other, _) = ref, other
    if min(len(ref), len(other)) < 3:
        return None
    mapped, _ = map_back(other, tuple(sizes), exp.transforms)
    key = key or (lambda x: x)
    pca = PCA(n_components=2).fit(key(ref))
    return {
        "reference": pca.transform(key(ref)),
        "before": pca.transform(key(other)),
        "after": pca.transform(key(mapped)),
    }


# --- figure ------------------------------------------------------------------------------


def plot_compare(results: Mapping, path, reference: str = "reference", dpi: int = 120) -> Path:
    """One row per compared experiment: the reference's and the experiment's good draws on the
    reference's PCA plane, before and after mapping back. ``results`` maps name -> dict with
    ``projection`` (``reference``, ``before``, ``after`` (n, 2) arrays, or None) and ``rows``
    (the two table rows, before and after); ``reference`` names the reference experiment.
    Open markers, so neither cloud hides the other."""
    names = list(results) or ["(none)"]
    fig = canvas.figure(9, 3.6 * len(names))
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
    return canvas.save(fig, path, dpi)
