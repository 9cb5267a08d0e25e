"""Do two experiments' good draws agree once the dataset transform is undone?

An affine input transform ``x' = A x + t`` is undone in parameter space by
:func:`lossatlas.data.to_reference` (``W1 = W1' A``, ``b1 = b1' + W1' t``); for a rotation this is
an isometry, up to the box. Agreement is measured by
- a two-sample test: energy distance or the (biased) RBF-kernel MMD^2, with a permutation
  p-value (``scipy.stats.permutation_test``, fixed seed) on at most ``max_points`` draws per
  sample (the pooled distance matrix is ``(n + m)^2``);
- the principal angles (degrees) between the two clouds' fitted ``k``-dim PCA subspaces
  (``scipy.linalg.subspace_angles``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.linalg import subspace_angles
from scipy.spatial.distance import cdist
from scipy.stats import permutation_test
from sklearn.decomposition import PCA

from lossatlas import data


def _subsample(X, max_points, rng):
    X = np.asarray(X, dtype=np.float64)
    if len(X) > max_points:
        X = X[np.sort(rng.choice(len(X), size=max_points, replace=False))]
    return X


def two_sample_test(
    X,
    Y,
    method: str = "energy",
    n_perm: int = 999,
    seed: int = 0,
    max_points: int = 1000,
    gamma: float | None = None,
) -> dict:
    """Permutation test of ``X (n, p)`` and ``Y (m, p)`` coming from one distribution.

    ``method``: ``energy`` (``2 E|X-Y| - E|X-X'| - E|Y-Y'|``) or ``mmd`` (``E k(X,X') +
    E k(Y,Y') - 2 E k(X,Y)``, ``k = exp(-gamma |.|^2)``, ``gamma`` None = 1 / median squared
    pooled distance). Both are V-statistics over the pooled matrix; larger = more different.
    Returns ``{"statistic", "pvalue", "n_x", "n_y", "method"}``.
    """
    rng = np.random.default_rng(seed)
    X, Y = _subsample(X, max_points, rng), _subsample(Y, max_points, rng)
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

    def stat(ix, iy, axis=-1):
        # ix (..., n), iy (..., m): indices into the pooled sample
        ix, iy = np.atleast_2d(ix), np.atleast_2d(iy)
        a = np.zeros((len(ix), len(Z)))
        np.put_along_axis(a, ix, 1.0, axis=1)
        b = 1.0 - a
        Ma = a @ M
        sxx = (Ma * a).sum(1) / (n * n)
        syy = ((b @ M) * b).sum(1) / (m * m)
        sxy = (Ma * b).sum(1) / (n * m)
        return sign[0] * sxx + sign[1] * syy + sign[2] * sxy

    res = permutation_test(
        (np.arange(n), np.arange(n, n + m)),
        stat,
        permutation_type="independent",
        vectorized=True,
        n_resamples=n_perm,
        alternative="greater",
        random_state=seed,
        batch=64,
    )
    return {
        "statistic": float(np.ravel(res.statistic)[0]),
        "pvalue": float(res.pvalue),
        "n_x": n,
        "n_y": m,
        "method": method,
    }


def pca_angles(X, Y, k: int = 2) -> np.ndarray:
    """Principal angles (degrees, descending) between the ``k``-dim PCA subspaces of ``X`` and
    ``Y`` (each centred on its own mean)."""
    Vx = PCA(n_components=k).fit(np.asarray(X, dtype=np.float64)).components_.T
    Vy = PCA(n_components=k).fit(np.asarray(Y, dtype=np.float64)).components_.T
    return np.degrees(subspace_angles(Vx, Vy))


def map_back(
    theta, sizes: Sequence[int], transforms, box: float | None = None
) -> tuple[np.ndarray, dict]:
    """A transformed experiment's draws in the reference experiment's coordinates, by
    :func:`lossatlas.data.experiment_affine` and :func:`lossatlas.data.to_reference`. Info:
    ``exact`` (False when label noise was applied: no parameter map makes the problems equal)
    and ``frac_outside_box`` (mapped draws leaving ``[-box, box]^p``)."""
    A, t, exact = data.experiment_affine(transforms, int(sizes[0]))
    mapped = data.to_reference(theta, sizes, A, t)
    outside = float(np.mean(np.abs(mapped).max(axis=1) > box)) if box is not None else np.nan
    return mapped, {"exact": exact, "frac_outside_box": outside}


def compare_clouds(
    reference,
    other,
    sizes: Sequence[int],
    transforms,
    *,
    box: float | None = None,
    key: Callable[[np.ndarray], np.ndarray] | None = None,
    k: int = 2,
    method: str = "energy",
    n_perm: int = 999,
    seed: int = 0,
    max_points: int = 1000,
) -> dict:
    """Compare the good draws ``reference (n, p)`` of the reference experiment with ``other
    (m, p)`` of an experiment with ``transforms``, before and after mapping ``other`` back.
    ``key`` (e.g. canonicalisation) is applied to both clouds after mapping.

    Returns ``{"before": {...}, "after": {...}, "exact", "frac_outside_box"}``; each of
    before/after holds ``statistic, pvalue, angles (degrees, k), max_angle`` and the sizes.
    """
    ref = np.asarray(reference, dtype=np.float64)
    oth = np.asarray(other, dtype=np.float64)
    mapped, info = map_back(oth, sizes, transforms, box)
    out = dict(info)
    for name, cloud in (("before", oth), ("after", mapped)):
        a, b = (key(ref), key(cloud)) if key is not None else (ref, cloud)
        r = two_sample_test(a, b, method, n_perm, seed, max_points)
        angles = pca_angles(a, b, k)
        out[name] = {**r, "angles": angles.tolist(), "max_angle": float(angles.max())}
    return out
