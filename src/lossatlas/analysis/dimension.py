"""Dimension of a point cloud of draws, measured against null models of the same size.

Statistics (of the good draws unless stated):
- ``pca_ev{k}``: fraction of variance in the top ``k`` principal components, full space;
- ``twonn``: TwoNN intrinsic dimension (Facco et al. 2017, Sci. Rep. 7:12140): the ratios
  ``mu = r2 / r1`` of second to first neighbour distances follow ``F(mu) = 1 - mu^-d``; ``d`` is
  the slope through the origin of ``-log(1 - F)`` against ``log mu``, the largest
  ``discard`` fraction of ``mu`` left out;
- ``mle``: Levina-Bickel (2004) maximum likelihood over ``k1..k2`` neighbours, with the
  MacKay-Ghahramani correction (average the per-point *inverse* estimates, then invert).

Draws of one Markov chain are autocorrelated: a draw's nearest neighbours are then mostly its
own chain's previous and next draws, and the estimates measure the chain's local moves, not the
set. With each draw's chain and position given, ``twonn`` and ``mle`` take neighbours only
outside a lag window around the draw in its own chain (other chains always count), and their
intervals bootstrap whole chains; ``twonn_naive`` and ``mle_naive`` keep every neighbour and
bootstrap draws, as a plain reading of the cloud would.
- ``pipeline_ev{n_pca}``: the report's pipeline on all draws: RBF kernel PCA to ``n_kpca``,
  keep the good draws, linear PCA to ``n_pca``, summed explained-variance ratio.

Intervals are bootstrap percentiles (fixed seed). Nulls: ``uniform`` = draws uniform in the box
(for the pipeline: as many uniform points as draws, with a random good set of the same size);
``shuffled`` = the chain's own draws with energies shuffled, so the good set is a random subset
of the same size; ``gaussian`` = independent draws from the Gaussian with the good draws' mean
and covariance (same spread, no other structure; not for the pipeline); ``laplace``, when given
(:class:`LaplaceNull`) = the Laplace approximation around the census minima, ``N(theta*,
(beta H)^-1)``, truncated to the box and the good set: the good set as quadratic basins would
make it (not for the pipeline).

Exact duplicate draws (repeated positions after rejected proposals) have zero neighbour
distance and are dropped before neighbour-based estimates.

Wide clouds (fewer points than coordinates, i.e. large p): the PCA share comes from the centred
Gram matrix, and the null replicates' statistics from their Gram matrices (:func:`gram_stats`);
the shuffled nulls' Gram matrices can be supplied from one streamed pass over the draws
(``subset_grams``). Same statistics, up to rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA, IncrementalPCA, KernelPCA
from sklearn.neighbors import NearestNeighbors

QUANTILES = (0.025, 0.975)
ENDS = ("lo", "hi", "lo_mcse", "hi_mcse")
# uniform in the box; the chain's own draws with a random good set; a Gaussian with the good
# draws' mean and covariance (a cloud with their spread and no other structure)
NULLS = ("uniform", "shuffled", "gaussian")


def _rng(seed):
    return np.random.default_rng(seed)


def _rows(X, idx) -> np.ndarray:
    """Rows ``idx`` of an array-like (h5py wants increasing indices), as float64."""
    return np.asarray(X[np.sort(np.asarray(idx, dtype=np.int64))], dtype=np.float64)


def _unique(X) -> np.ndarray:
    return np.unique(np.asarray(X, dtype=np.float64), axis=0)


def pca_spectrum(
    X, n_components: int | None = None, block: int = 4096, max_exact: int = 50_000_000
) -> dict:
    """Full-space PCA of ``X (n, p)``: ``explained_variance`` and ``explained_variance_ratio``
    (ratios of the *total* variance, so they need not sum to 1 when truncated).

    Exact (scikit-learn PCA) when ``n * p <= max_exact``; otherwise IncrementalPCA over draw
    blocks of ``block`` rows with ``n_components <= block`` (default ``min(p, block)``), and the
    total variance summed exactly while streaming.
    """
    n, p = X.shape
    if n * p <= max_exact:
        A = np.asarray(X, dtype=np.float64)
        pca = PCA(n_components=n_components, svd_solver="full").fit(A)
        total = A.var(axis=0, ddof=1).sum()
        ev = pca.explained_variance_
    else:
        k = min(n_components or p, block, p)
        ipca = IncrementalPCA(n_components=k)
        s1, s2 = np.zeros(p), np.zeros(p)
        bounds = list(range(0, n, block)) + [n]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < k:
            del bounds[-2]  # IncrementalPCA needs every batch >= n_components: merge the tail
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            A = np.asarray(X[lo:hi], dtype=np.float64)
            ipca.partial_fit(A)
            s1 += A.sum(axis=0)
            s2 += (A * A).sum(axis=0)
        total = ((s2 - s1 * s1 / n) / (n - 1)).sum()
        ev = ipca.explained_variance_
    return {"explained_variance": ev, "explained_variance_ratio": ev / total, "total": total}


def _top_k_ratio(X, k):
    n, p = X.shape
    if n < p:
        # fewer points than coordinates (large p): the centred Gram matrix (n x n) has the same
        # nonzero spectrum, at a fraction of the SVD's time and memory
        A = np.asarray(X, dtype=np.float64)
        A = A - A.mean(axis=0)
        return gram_top_k_ratio(A @ A.T, k, centred=True)
    return float(pca_spectrum(X, n_components=min(k, *X.shape))["explained_variance_ratio"].sum())


def gram_top_k_ratio(K: np.ndarray, k: int, centred: bool = False) -> float:
    """Share of the total variance in the top ``k`` principal components of the points whose
    Gram matrix (inner products) is ``K (n, n)``."""
    K = np.asarray(K, dtype=np.float64)
    if not centred:
        K = K - K.mean(axis=0) - K.mean(axis=1)[:, None] + K.mean()
    ev = np.linalg.eigvalsh(K)[::-1]
    return float(ev[:k].sum() / np.trace(K))


def gram_stats(
    K: np.ndarray,
    k_pca: int = 2,
    discard: float = 0.1,
    k1: int = 10,
    k2: int = 20,
    chains=None,
    steps=None,
    window: int = 0,
) -> dict:
    """``twonn``, ``mle`` and ``pca_ev{k_pca}`` values (no intervals) of the points whose Gram
    matrix is ``K (n, n)``, as :func:`twonn`, :func:`mle` and the PCA share compute them from
    the points. Repeated points (squared distance below 1e-12 of their squared norms) are
    dropped for the neighbour statistics, as :func:`_unique` does. With ``chains`` and
    ``steps``, also ``twonn_naive`` and ``mle_naive``, and ``twonn``/``mle`` take neighbours
    outside the lag ``window`` of each point's own chain, as :func:`neighbour_distances`."""
    K = np.asarray(K, dtype=np.float64)
    sq = np.diag(K)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * K, 0.0)
    same = d2 <= 1e-12 * (sq[:, None] + sq[None, :])
    keep = ~np.tril(same, -1).any(axis=1)  # the first of each group of repeated points
    dist = np.sort(np.sqrt(d2[np.ix_(keep, keep)]), axis=1)
    dist[:, 0] = 0.0  # each point is its own nearest neighbour
    naive = {
        "twonn": _twonn_of(dist, discard, 1, 0)["value"],
        "mle": _mle_of(dist, k1, k2, 1, 0)["value"],
    }
    out = {f"pca_ev{k_pca}": gram_top_k_ratio(K, k_pca)}
    if chains is None:
        return {**naive, **out}
    lag = (np.asarray(chains), np.asarray(steps), window)
    twonn_far, mle_far = _from_far(_nearest_outside_window(d2, *lag, 0, k2), discard, k1, k2, 1, 0)
    out.update(
        twonn=twonn_far["value"],
        mle=mle_far["value"],
        twonn_naive=naive["twonn"],
        mle_naive=naive["mle"],
    )
    return out


# --- neighbours -------------------------------------------------------------------------------


def neighbour_distances(
    X, k: int, chains=None, steps=None, window: int = 0, block: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Each point's ``k`` nearest neighbour distances, sorted, with a leading 0 column (the
    point itself), ``(m, k + 1)``, and the rows of ``X`` they belong to ``(m,)``.

    Without ``chains``: repeated positions count once (the first). With ``chains`` and
    ``steps`` (each point's chain and draw index), points of the same chain within ``window``
    draws are not neighbours, and points whose first neighbour is at distance 0 are left out.
    """
    X = np.asarray(X, dtype=np.float64)
    if chains is None:
        U, rows = np.unique(X, axis=0, return_index=True)
        dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(U).kneighbors(U)
        return dist, rows
    return _self_first(_far(X, k, chains, steps, window, block))


def _far(X, k: int, chains, steps, window: int, block: int = 512) -> np.ndarray:
    """Every point's ``k`` nearest distances outside its lag window, sorted, ``(n, k)``."""
    lag = (np.asarray(chains), np.asarray(steps), window)
    # cdist, not a BLAS product: the same bits whatever the number of threads
    nearest = [
        _nearest_outside_window(cdist(X[lo : lo + block], X, "sqeuclidean"), *lag, lo, k)
        for lo in range(0, len(X), block)
    ]
    return np.vstack(nearest)


def _nearest_outside_window(d2, chains, steps, window: int, lo: int, k: int) -> np.ndarray:
    """Sorted distances ``(rows, k)`` from rows ``lo, lo + 1, ...`` of the points to their
    ``k`` nearest points outside their lag window: ``d2`` holds those rows' squared distances
    to every point (overwritten); points of the same chain within ``window`` draws do not
    count."""
    rows, cols = _within_window(chains, steps, window, lo, len(d2))
    d2[rows, cols] = np.inf
    d2.partition(k - 1, axis=1)  # in place: np.partition would copy d2 first
    return np.sqrt(np.sort(d2[:, :k], axis=1))


def _within_window(chains, steps, window: int, lo: int, n_rows: int):
    """``(rows, cols)``: for rows ``lo .. lo + n_rows - 1`` of the points (numbered from 0),
    every point of the same chain within ``window`` draws, itself included. Found by sorting
    once on (chain, step), where each row's window is one run: O(rows x window) pairs, not a
    mask of every pair."""
    chains = np.asarray(chains, dtype=np.int64)
    steps = np.asarray(steps, dtype=np.int64)
    # a chain's keys span less than `span`, so a window never reaches into the next chain's
    span = int(steps.max() - steps.min()) + 2 * window + 1
    key = (chains - chains.min()) * span + (steps - steps.min())
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    mine = key[lo : lo + n_rows]
    first = np.searchsorted(ordered, mine - window, side="left")
    counts = np.searchsorted(ordered, mine + window, side="right") - first
    rows = np.repeat(np.arange(n_rows), counts)
    # positions first[i], first[i] + 1, ... of each row's run, all runs end to end
    starts = np.repeat(first - (np.cumsum(counts) - counts), counts)
    return rows, order[starts + np.arange(counts.sum())]


def _self_first(nearest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour distances with the leading 0 column of the point itself, and their rows:
    points at distance 0 from a neighbour, or with fewer allowed neighbours than columns
    (all in their window), have no estimate and are left out."""
    rows = np.flatnonzero((nearest[:, 0] > 0) & np.isfinite(nearest[:, -1]))
    return np.hstack([np.zeros((len(rows), 1)), nearest[rows]]), rows


def _chain_weights(chains, n_boot: int, seed) -> np.ndarray:
    """Bootstrap weights ``(n_boot, n)`` of points when whole chains are resampled."""
    _, unit = np.unique(np.asarray(chains), return_inverse=True)
    n_units = unit.max() + 1
    counts = _rng(seed).multinomial(n_units, np.full(n_units, 1 / n_units), size=n_boot)
    return counts[:, unit].astype(np.float64)


# --- TwoNN ------------------------------------------------------------------------------------


def _twonn_fit(mu: np.ndarray, discard: float) -> np.ndarray:
    """Slope through the origin, for each row of ``mu (b, N)``."""
    mu = np.sort(mu, axis=-1)
    N = mu.shape[-1]
    keep = int(np.floor(N * (1 - discard)))
    F = np.arange(1, N + 1) / N
    x = np.log(mu[..., :keep])
    y = -np.log(1 - F[:keep])
    return (x * y).sum(-1) / (x * x).sum(-1)


def twonn(
    X,
    discard: float = 0.1,
    n_boot: int = 200,
    seed: int = 0,
    chains=None,
    steps=None,
    window: int = 0,
) -> dict:
    """TwoNN estimate ``{"value", "lo", "hi", "n"}``; bootstrap over points (their ratios),
    or over whole chains when ``chains`` is given (neighbours as :func:`neighbour_distances`)."""
    dist, rows = neighbour_distances(X, 2, chains, steps, window)
    kept = None if chains is None else np.asarray(chains)[rows]
    return _twonn_of(dist, discard, n_boot, seed, chains=kept)


def _twonn_of(dist, discard, n_boot, seed, chains=None) -> dict:
    """TwoNN from each point's sorted neighbour distances ``dist (n, >= 3)``, self first;
    the bootstrap resamples points, or whole ``chains`` (each point's) when given."""
    if len(dist) < 3:
        return {"value": np.nan, **dict.fromkeys(ENDS, np.nan), "n": len(dist)}
    mu = dist[:, 2] / dist[:, 1]
    value = float(_twonn_fit(mu[None], discard)[0])
    if chains is None:
        idx = _rng(seed).integers(0, len(mu), size=(n_boot, len(mu)))
        boot = _twonn_fit(mu[idx], discard)
    else:
        weights = _chain_weights(chains, n_boot, seed)
        boot = np.array(
            [_twonn_fit(np.repeat(mu, w.astype(int))[None], discard)[0] for w in weights]
        )
    return {"value": value, **_ends(boot), "n": len(mu)}


# --- Levina-Bickel MLE -----------------------------------------------------------------------


def mle(
    X,
    k1: int = 10,
    k2: int = 20,
    n_boot: int = 200,
    seed: int = 0,
    chains=None,
    steps=None,
    window: int = 0,
) -> dict:
    """Levina-Bickel MLE with the MacKay-Ghahramani correction ``{"value", "lo", "hi", "n"}``.

    Per point and ``k``: ``1/m_k(x) = 1/(k-1) sum_{j<k} log(T_k / T_j)`` (an unbiased estimate
    of ``1/d`` for a locally uniform density); ``d_k = 1 / mean_x(1/m_k(x))``; the value is the
    mean of ``d_k`` over ``k = k1..k2``. Bootstrap: points resampled with replacement, or whole
    chains when ``chains`` is given (neighbours as :func:`neighbour_distances`).
    """
    _require_points(X, k2, chains)
    dist, rows = neighbour_distances(X, k2, chains, steps, window)
    kept = None if chains is None else np.asarray(chains)[rows]
    return _mle_of(dist, k1, k2, n_boot, seed, chains=kept)


class TooFewPoints(ValueError):
    """A cloud has no more points than the neighbours an estimator needs: a row to skip, with
    this message, not a failure."""


def _require_points(X, k2: int, chains) -> None:
    n_points = len(_unique(X)) if chains is None else len(X)
    if n_points <= k2:
        raise TooFewPoints(f"mle needs more than k2 = {k2} distinct points, got {n_points}")


def twonn_and_mle(X, discard=0.1, k1=10, k2=20, n_boot=200, seed=0, **lag) -> tuple[dict, dict]:
    """:func:`twonn` and :func:`mle` of ``X`` (``lag``: their ``chains``, ``steps`` and
    ``window``) from one neighbour search instead of two: the same numbers, as the two nearest
    of the ``k2`` nearest are the two nearest."""
    chains = lag.get("chains")
    _require_points(X, k2, chains)
    if chains is None:
        dist, _ = neighbour_distances(X, k2)
        return _twonn_of(dist[:, :3], discard, n_boot, seed), _mle_of(dist, k1, k2, n_boot, seed)
    far = _far(np.asarray(X, dtype=np.float64), k2, **lag)
    return _from_far(far, discard, k1, k2, n_boot, seed, np.asarray(chains))


def _from_far(far, discard, k1, k2, n_boot, seed, chains=None) -> tuple[dict, dict]:
    """TwoNN and MLE from each point's ``k2`` nearest distances outside its lag window,
    ``far (n, k2)``; the bootstraps resample whole ``chains`` (each point's) when given."""
    (d2, r2), (dk, rk) = _self_first(far[:, :2]), _self_first(far)
    by = (None, None) if chains is None else (chains[r2], chains[rk])
    return (
        _twonn_of(d2, discard, n_boot, seed, chains=by[0]),
        _mle_of(dk, k1, k2, n_boot, seed, chains=by[1]),
    )


def _inverse_estimates(dist, ks) -> np.ndarray:
    """Per point and ``k`` in ``ks``: ``1/m_k(x)`` from sorted distances ``dist`` (self first)."""
    logT = np.log(dist[:, 1 : ks.max() + 1])  # (n, k_max): T_1 .. T_kmax
    csum = np.cumsum(logT, axis=1)
    # sum_{j<k} log(T_k/T_j) = (k-1) log T_k - sum_{j<=k-1} log T_j
    return ((ks - 1) * logT[:, ks - 1] - csum[:, ks - 2]) / (ks - 1)  # (n, K)


def _mle_of(dist, k1, k2, n_boot, seed, chains=None) -> dict:
    """The MLE from each point's sorted neighbour distances ``dist (n, >= k2 + 1)``; the
    bootstrap resamples points, or whole ``chains`` (each point's) when given."""
    n = len(dist)
    if n < 3:
        return {"value": np.nan, **dict.fromkeys(ENDS, np.nan), "n": n}
    inv = _inverse_estimates(dist, np.arange(k1, k2 + 1))
    value = float(np.mean(1 / inv.mean(axis=0)))
    if chains is None:
        weights = _rng(seed).multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float)
    else:
        weights = _chain_weights(chains, n_boot, seed)
    boot = np.mean(1 / ((weights @ inv) / weights.sum(1, keepdims=True)), axis=1)
    return {"value": value, **_ends(boot), "n": n}


def dimension_by_scale(X, k_max: int = 20, chains=None, steps=None, window: int = 0) -> dict:
    """The Levina-Bickel estimate at each neighbour rank ``k = 2..k_max`` (MacKay-Ghahramani
    averaged): how the dimension changes with the scale it is read at."""
    dist, _ = neighbour_distances(X, k_max, chains, steps, window)
    ks = np.arange(2, k_max + 1)
    d = 1 / _inverse_estimates(dist, ks).mean(axis=0)
    return {"k": ks.tolist(), "dimension": d.tolist(), "n": len(dist)}


# --- the report's pipeline ---------------------------------------------------------------------


def pipeline_ev(
    theta,
    good: np.ndarray,
    n_kpca: int = 3,
    n_pca: int = 2,
    gamma: float | None = None,
    max_exact: int = 2000,
    seed: int = 0,
) -> float:
    """Report's statistic: RBF kernel PCA of all draws to ``n_kpca``, then linear PCA of the
    good ones to ``n_pca``; summed explained-variance ratio. ``gamma`` None = 1 / (p * mean
    variance). Above ``max_exact`` draws a random subset (fixed seed) of that size is used.
    NaN when fewer than ``n_pca + 1`` good draws remain."""
    theta = np.asarray(theta, dtype=np.float64)
    good = np.asarray(good, dtype=bool)
    if len(theta) > max_exact:
        keep = _rng(seed).choice(len(theta), size=max_exact, replace=False)
        theta, good = theta[keep], good[keep]
    return good_ev(lambda: pipeline_embedding(theta, n_kpca, gamma, seed), good, n_pca)


def pipeline_embedding(theta, n_kpca: int = 3, gamma: float | None = None, seed: int = 0):
    """The pipeline's first half: RBF kernel PCA of every row of ``theta`` to ``n_kpca``."""
    with _one_blas_thread():
        return _kernel_pca(theta, n_kpca, gamma, seed)


def _one_blas_thread():
    """Threaded BLAS products round differently: the shared null's embeddings must be those an
    experiment computes itself, whatever the threads of the process it runs in."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def _kernel_pca(theta, n_kpca, gamma, seed):
    theta = np.asarray(theta, dtype=np.float64)
    if gamma is None:
        gamma = 1.0 / (theta.shape[1] * theta.var(axis=0).mean())
    kp = KernelPCA(n_components=n_kpca, kernel="rbf", gamma=gamma, random_state=seed)
    return kp.fit_transform(theta)


def pipeline_uniform_null(
    n_null: int,
    n_draws: int,
    p: int,
    box: float,
    n_kpca: int = 3,
    gamma: float | None = None,
    seed: int = 0,
    null_transform=None,
) -> np.ndarray:
    """The uniform pipeline null's kernel PCA embeddings ``(n_null, n_draws, n_kpca)``: replicate
    ``r`` embeds ``n_draws`` uniform draws in ``[-box, box]^p`` (mapped by ``null_transform``)
    drawn from a stream of ``(seed, r)`` alone. Nothing of an experiment enters, so every
    experiment with one network shares them; only its random good set is its own."""
    out = np.empty((n_null, n_draws, n_kpca))
    with _one_blas_thread():
        for r in range(n_null):
            U = null_uniform_in(n_draws, p, box, _rng([seed, r, 3]), null_transform)
            out[r] = _kernel_pca(U, n_kpca, gamma, seed)
    return out


def uniform_cloud_values(
    n_null: int,
    m: int,
    p: int,
    box: float,
    seed: int = 0,
    null_transform=None,
    lagged: bool = True,
    k_pca: int = 2,
    discard: float = 0.1,
    k1: int = 10,
    k2: int = 20,
) -> dict[str, np.ndarray]:
    """The uniform null's statistics ``{stat: (n_null,)}`` as :func:`dimension_table` measures
    them on ``m`` good draws of ``p >= m`` parameters: replicate ``r``'s cloud is the first draw
    of the stream ``(seed, r)``, so nothing of an experiment enters and every experiment with
    one network and ``m`` good draws shares them."""
    out: dict[str, list] = {}
    for r in range(n_null):
        cloud = null_uniform_in(m, p, box, _rng([seed, r]), null_transform)
        fit = (discard, k1, k2)
        for stat, v in _cloud_values(cloud, None, False, True, lagged, {}, k_pca, *fit).items():
            out.setdefault(stat, []).append(v)
    return {stat: np.asarray(v, dtype=np.float64) for stat, v in out.items()}


def good_ev(embedding: Callable[[], np.ndarray], good: np.ndarray, n_pca: int = 2) -> float:
    """The pipeline's second half: explained-variance ratio of the top ``n_pca`` principal
    components of the ``good`` rows of ``embedding()``, which is called only when at least
    ``n_pca + 1`` rows are good (else NaN)."""
    good = np.asarray(good, dtype=bool)
    if good.sum() < n_pca + 1:
        return float("nan")
    return float(PCA(n_components=n_pca).fit(embedding()[good]).explained_variance_ratio_.sum())


# --- nulls --------------------------------------------------------------------------------------


def null_uniform(n: int, p: int, box: float, rng) -> np.ndarray:
    """``n`` draws uniform in ``[-box, box]^p``."""
    return _rng(rng).uniform(-box, box, size=(n, p))


def null_uniform_in(n: int, p: int, box: float, rng, null_transform=None) -> np.ndarray:
    """:func:`null_uniform`'s draws mapped into the analysis coordinates by ``null_transform``
    (None: raw), as the real draws are."""
    U = null_uniform(n, p, box, rng)
    return U if null_transform is None or n == 0 else np.asarray(null_transform(U))


def null_gaussian(G: np.ndarray, rng, factor=None) -> np.ndarray:
    """As many independent draws as ``G (m, p)`` has rows from the Gaussian with its mean and
    covariance, ``mean + Z F``, ``Z`` standard normal, ``F`` :func:`gaussian_factor` of
    ``G`` (pass it as ``factor`` to draw many replicates from one factorisation)."""
    mean, F = gaussian_factor(G) if factor is None else factor
    return mean + _rng(rng).standard_normal((len(G), F.shape[0])) @ F


def gaussian_factor(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, F)`` with ``F.T F`` the covariance of the rows of ``G (m, p)``: ``C = (G -
    mean) / sqrt(m - 1)`` itself (m x p) when ``p >= m``, so the p x p covariance is never
    formed; else the p x p ``R`` of ``C = QR``, the same law from m x p normals (``Z Q`` is
    standard normal)."""
    m, p = G.shape
    mean = G.mean(axis=0)
    centred = (G - mean) / np.sqrt(max(m - 1, 1))
    return mean, (np.linalg.qr(centred, mode="r") if p < m else centred)


@dataclass(frozen=True)
class LaplaceNull:
    """An equal-weight mixture of ``N(centres[i], S_i)``, ``factors[i] = S_i^(1/2)``, truncated
    to the points ``keep`` accepts (inside the box and good). ``transform`` maps its draws into
    the analysis coordinates. ``acceptance`` collects each :meth:`draw`'s accepted fraction."""

    centres: np.ndarray  # (c, p)
    factors: np.ndarray  # (c, p, p)
    keep: Callable[[np.ndarray], np.ndarray]  # (n, p) -> bool (n,)
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    max_candidates: int = 200  # candidates per wanted draw before giving up
    block: int = 1 << 15  # candidates per batch
    acceptance: list = field(default_factory=list)
    n_flat: np.ndarray | None = None  # per centre: directions given the draws' variance

    def draw(self, m: int, rng) -> np.ndarray | None:
        """``m`` accepted draws, or None when fewer than ``m`` of ``max_candidates * m``
        candidates were accepted."""
        rng = _rng(rng)
        c, p = self.centres.shape
        kept, n_kept, tried, limit = [], 0, 0, self.max_candidates * m
        while n_kept < m and tried < limit:
            size = min(self.block, limit - tried)
            counts = rng.multinomial(size, np.full(c, 1 / c))
            batch = np.concatenate(
                [
                    self.centres[i] + rng.standard_normal((k, p)) @ self.factors[i].T
                    for i, k in enumerate(counts)
                ]
            )
            kept.append(batch[self.keep(batch)])
            n_kept += len(kept[-1])
            tried += size
            if n_kept * limit < 0.5 * m * tried:
                break  # at this rate the limit would not reach m: say so now
        self.acceptance.append(n_kept / max(tried, 1))
        if n_kept < m:
            return None
        cloud = np.concatenate(kept)
        # a batch holds its components in order: pick at random, not the first m
        cloud = cloud[np.sort(rng.choice(len(cloud), size=m, replace=False))]
        return cloud if self.transform is None else np.asarray(self.transform(cloud))


def laplace_factors(hessians, beta: float, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(c, p, p)`` square roots of ``(beta H_i)^-1``, except along eigenvectors ``v`` where
    that Gaussian would be wider than the good draws (``1 / (beta lambda) > v' spread v``, flat
    or negative curvature, where the quadratic says nothing): there the good draws' variance
    ``v' spread v`` (``spread``: their covariance). Also ``(c,)``: how many such directions."""
    out, n_flat = [], []
    for H in hessians:
        lam, V = np.linalg.eigh(np.asarray(H, dtype=np.float64))
        along = np.einsum("ij,ik,kj->j", V, spread, V)
        positive = lam > 0
        var = np.full(lam.shape, np.inf)
        var[positive] = 1 / (beta * lam[positive])
        out.append(V * np.sqrt(np.minimum(var, along)))
        n_flat.append(int((var > along).sum()))
    return np.asarray(out), np.asarray(n_flat)


def null_shuffled(mean_loss: np.ndarray, rng) -> np.ndarray:
    """The energies permuted across draws: the good set becomes a random subset of equal size."""
    return _rng(rng).permutation(np.asarray(mean_loss))


# --- table --------------------------------------------------------------------------------------


def _interval(values):
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = np.quantile(v, QUANTILES)
    return float(np.median(v)), float(lo), float(hi)


def quantile_mcse(values, q: float) -> float:
    """Monte Carlo standard error of the ``q`` quantile of replicates ``values``: half the
    distance between the quantiles one binomial standard deviation of the rank,
    sqrt(q (1 - q) / B), either side of ``q`` (distribution-free)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan")
    h = np.sqrt(q * (1 - q) / len(v))
    lo, hi = np.quantile(v, [max(q - h, 0.0), min(q + h, 1.0)])
    return float((hi - lo) / 2)


def _ends(replicates) -> dict:
    """The interval's ends (2.5 and 97.5 % quantiles of ``replicates``) and their Monte Carlo
    errors."""
    lo, hi = np.quantile(replicates, QUANTILES)
    return {
        "lo": float(lo),
        "hi": float(hi),
        "lo_mcse": quantile_mcse(replicates, QUANTILES[0]),
        "hi_mcse": quantile_mcse(replicates, QUANTILES[1]),
    }


def p_mcse(p: float, n_replicates: int) -> float:
    """Monte Carlo standard error of :func:`_p_null`'s two-sided p-value from
    ``n_replicates`` replicates: twice a binomial proportion of p / 2, sqrt(p (2 - p) / R)."""
    if not np.isfinite(p) or n_replicates < 1:
        return float("nan")
    return float(np.sqrt(p * (2 - p) / n_replicates))


def _rank_count(value, null_values) -> tuple[int, int]:
    """How far into its tail ``value`` lies among the finite null replicates: the fewer of the
    counts at or below it and at or above it, each ``+1`` for the value itself; and how many
    finite replicates there are."""
    v = np.asarray(null_values, dtype=float)
    v = v[np.isfinite(v)]
    return int(min((v <= value).sum(), (v >= value).sum())) + 1, len(v)


def _p_null(value, null_values):
    """Two-sided rank p-value of ``value`` among null replicates (``+1`` so it is never 0)."""
    count, n = _rank_count(value, null_values)
    if not np.isfinite(value) or n == 0:
        return float("nan")
    return float(min(1.0, 2 * count / (n + 1)))


def _verdict(value, null, nv, nlo, nhi, p, alpha, n_replicates):
    if not np.isfinite(p):
        return "not computed (too few good draws)"
    smallest = 2 / (n_replicates + 1)  # the rank p-value of a value beyond every replicate
    if smallest > alpha:
        need = int(np.ceil(2 / alpha - 1))
        return (
            f"cannot be decided with {n_replicates} null replicates: the smallest p-value is "
            f"{smallest:.2g} > alpha = {alpha:g}; set landscape.dimension.n_null >= {need} "
            f"({value:.3g} vs the {null} null {nv:.3g} [{nlo:.3g}, {nhi:.3g}])"
        )
    if p > alpha:
        # "not distinguishable", not "within": the interval's ends are quantiles, so a value
        # just past one can still have p > alpha
        return (
            f"explained by construction: {value:.3g} is not distinguishable from the {null} "
            f"null ({nv:.3g} [{nlo:.3g}, {nhi:.3g}], p = {p:.2g})"
        )
    side = "above" if value > nv else "below"
    return f"{side} the {null} null ({value:.3g} vs {nv:.3g} [{nlo:.3g}, {nhi:.3g}], p = {p:.2g})"


def _estimate(r: dict) -> tuple:
    """``(value, lo, hi, lo_mcse, hi_mcse)`` of an estimate's dict."""
    return (r["value"], *(r[k] for k in ENDS))


def _too_few_note(m: int, window: int, k2: int) -> str | None:
    """Why the lagged neighbour statistics of ``m`` good draws are not computed, or None."""
    # about this many of the good draws are independent once autocorrelation counts
    effective = m / max(1, window)
    if effective > k2 + 1:
        return None
    return (
        f"not computed: about {effective:.0f} effectively independent good draws (a lag "
        f"window of {window} draws, from the ESS of U) and neighbour statistics need more "
        f"than {k2 + 1}; run longer chains (the *_naive rows read autocorrelated draws)"
    )


def _good_values(G, too_few, lag, by_scale, seed, n_boot, n_null, k_pca, discard, k1, k2):
    """The good draws' TwoNN and MLE (lag-windowed when ``lag``; ``*_naive`` beside them) and
    the top-``k_pca`` PCA share, each ``(value, lo, hi, lo_mcse, hi_mcse)``."""
    m = len(G)
    if too_few:
        missing = (np.nan, *(np.nan for _ in ENDS))
        real = {"twonn": missing, "mle": missing}
    else:
        r1, r2 = twonn_and_mle(G, discard, k1, k2, n_boot, seed, **lag)
        real = {k: _estimate(r) for k, r in (("twonn", r1), ("mle", r2))}
    if lag:
        r1, r2 = twonn_and_mle(G, discard, k1, k2, n_boot, seed)
        real["twonn_naive"], real["mle_naive"] = _estimate(r1), _estimate(r2)
    if by_scale is not None:
        by_scale.update(dimension_by_scale(G, k2, **lag))
    ev = _top_k_ratio(G, k_pca)
    br = _rng(seed)
    boots = [_top_k_ratio(G[br.integers(0, m, m)], k_pca) for _ in range(n_null)]
    _, lo, hi = _interval(boots)
    mcse = (quantile_mcse(boots, q) for q in QUANTILES)
    real[f"pca_ev{k_pca}"] = (ev, lo, hi, *mcse)
    return real


def _shuffled_picks(n_null: int, seed: int, n: int, m: int, p: int, box: float) -> list:
    """The shuffled null's subsets of each replicate, drawn as :func:`dimension_table` draws
    them (after that replicate's uniform cloud, from the same stream)."""
    picks = []
    for r in range(n_null):
        rs = _rng([seed, r])
        null_uniform(m, p, box, rs)
        picks.append(np.sort(rs.choice(n, size=m, replace=False)))
    return picks


def _null_lag(where, m: int, chains, steps, window: int) -> dict:
    """A null cloud's chains and steps: the shuffled subset's own (``where``), else each
    point a chain of its own (independent draws)."""
    return {
        "chains": np.arange(m) if where is None else np.asarray(chains)[where],
        "steps": np.zeros(m, dtype=np.int64) if where is None else np.asarray(steps)[where],
        "window": window,
    }


def _cloud_values(cloud, gram, wide: bool, iid: bool, lagged: bool, lag: dict, k_pca, *fit):
    """The statistics of one null cloud (``gram``: its Gram matrix, when the cloud itself was
    never read): from one n x n Gram matrix when the cloud is ``wide`` (fewer rows than
    parameters), else by neighbour searches; ``*_naive`` too when the real draws are
    ``lagged``. ``fit``: TwoNN's discarded fraction and the MLE's k1, k2."""
    discard, k1, k2 = fit
    if cloud is None or wide:
        K = gram if cloud is None else cloud @ cloud.T
        return gram_stats(K, k_pca, discard, k1, k2, **lag)
    # independent draws have no lag window to keep out: one plain neighbour search serves
    # both readings (the same neighbours; the sums in another order)
    r1, r2 = twonn_and_mle(cloud, discard, k1, k2, 1, **({} if iid else lag))
    values = {
        "twonn": r1["value"],
        "mle": r2["value"],
        f"pca_ev{k_pca}": _top_k_ratio(cloud, k_pca),
    }
    if lagged:
        if not iid:
            r1, r2 = twonn_and_mle(cloud, discard, k1, k2, 1)
        values["twonn_naive"] = r1["value"]
        values["mle_naive"] = r2["value"]
    return values


def _laplace_note(laplace, replicates, m: int) -> str | None:
    """Why the Laplace null has no rows, or None when it has them."""
    if isinstance(laplace, str):
        return f"not computed: {laplace}"
    if laplace is None or replicates:
        return None
    rate = max(laplace.acceptance, default=0.0)
    note = (
        f"not computed: the truncation to the box and the good set keeps {rate:.2g} of the "
        f"Laplace approximation's draws, too few for {m} per replicate"
    )
    if laplace.n_flat is not None:
        flat, p_all = int(np.median(laplace.n_flat)), laplace.centres.shape[1]
        note += (
            f"; U is flat at its centres in a median {flat} of {p_all} directions (beta H "
            "below the good draws' spread), so no quadratic basin describes the good set"
        )
    return note


def _follow_stream(name: str, rs, m: int, n: int, p: int, box: float) -> None:
    """Draw from replicate stream ``rs`` what the null ``name`` would have drawn, when it is
    skipped, so the nulls after it get the same numbers (the Gaussian and Laplace nulls draw
    from streams of their own)."""
    if name == "uniform":
        null_uniform(m, p, box, rs)
    elif name == "shuffled":
        rs.choice(n, size=m, replace=False)


def _settled(real: dict, values: dict, bound: float) -> bool:
    """Whether every neighbour or PCA statistic in a null's ``values`` has its real value with
    more than ``bound`` replicates at or beyond it on each side: more replicates only raise
    those counts, so its p-value from all of them stays above alpha (Besag and Clifford's
    sequential p-value, curtailed at the planned count). The pipeline's statistic, cheap and
    of its own kind, does not count."""
    stats = [s for s in values if not s.startswith("pipeline_ev")]
    for stat in stats:
        value = real.get(stat, (np.nan,))[0]
        if not np.isfinite(value) or _rank_count(value, values[stat])[0] <= bound:
            return False
    return bool(stats)


def _table_rows(real, nulls, used, pipe_name, floor, too_few, not_computed, alpha, n_good, stops):
    """A row per statistic and null: the value, its interval, the null's, p and verdict.
    ``stops``: ``n_null`` planned and the replicates after which a null ``stopped``."""
    rows = []
    for stat, (value, lo, hi, lo_mcse, hi_mcse) in real.items():
        for null in used:
            if stat == pipe_name and null in ("gaussian", "laplace"):
                continue  # the pipeline needs all draws, not only a cloud like the good ones
            replicates = np.asarray(nulls[null].get(stat, []), dtype=float)
            nv, nlo, nhi = _interval(replicates)
            pn = _p_null(value, replicates)
            n_finite = int(np.isfinite(replicates).sum())
            early = stops["stopped"].get(null) if stat != pipe_name else None
            # a stopped null's floor is the planned count's: it stopped because p stays above
            decided = n_finite + stops["n_null"] - early if early else n_finite
            note = (
                f"; stopped after {early} of {stops['n_null']} replicates: no later one could "
                "bring p to alpha"
                if early
                else ""
            )
            rows.append(
                {
                    "statistic": stat,
                    "value": value,
                    "lo": lo,
                    "hi": hi,
                    "lo_mcse": lo_mcse,
                    "hi_mcse": hi_mcse,
                    "null": null,
                    "null_value": nv,
                    "null_lo": nlo,
                    "null_hi": nhi,
                    "null_lo_mcse": quantile_mcse(replicates, QUANTILES[0]),
                    "null_hi_mcse": quantile_mcse(replicates, QUANTILES[1]),
                    "p_null": pn,
                    "p_null_mcse": p_mcse(pn, n_finite),
                    "verdict": too_few
                    if too_few and stat in ("twonn", "mle")
                    else not_computed
                    if null == "laplace" and not_computed
                    else _verdict(value, null, nv, nlo, nhi, pn, alpha, decided)
                    + (floor if stat == pipe_name else note),
                    "n_good": n_good,
                }
            )
    return rows


@dataclass(frozen=True)
class Pipeline:
    """The report's pipeline as the dimension table measures it: RBF kernel PCA of (at most
    ``max_draws``) draws to ``n_kpca`` components, then linear PCA of the good ones to
    ``n_pca``; ``gamma`` None = 1 / (p * mean variance)."""

    n_kpca: int = 3
    n_pca: int = 2
    gamma: float | None = None
    max_draws: int = 2000


# Longer than the rest (about 110 lines of code) for one reason: each null replicate r draws
# its uniform cloud and then the shuffled subset from one stream, _rng([seed, r]), in that
# order, and the pipeline nulls from the same stream after them. The loop keeps that order
# in one place; the measuring, the readings and the rows are functions of their own.
def dimension_table(
    theta,
    mean_loss,
    threshold: float,
    box: float,
    *,
    seed: int = 0,
    n_boot: int = 200,
    n_null: int = 49,
    alpha: float = 0.05,
    k_pca: int = 2,
    discard: float = 0.1,
    k1: int = 10,
    k2: int = 20,
    kpca: Pipeline = Pipeline(),
    max_points: int = 2000,
    null_transform=None,
    subset_grams=None,
    chains=None,
    steps=None,
    window: int = 0,
    by_scale: dict | None = None,
    laplace: LaplaceNull | str | None = None,
    pipeline_null: np.ndarray | None = None,
    uniform_null: dict | None = None,
) -> list[dict]:
    """Rows ``{statistic, value, lo, hi, null, null_value, null_lo, null_hi, p_null, verdict,
    n_good}`` for draws ``theta (n, p)`` with per-draw ``mean_loss (n,)``; good = ``mean_loss <
    threshold``.

    Data intervals: bootstrap percentiles (``n_boot`` for twonn/mle, ``n_null`` refits for
    ``pca_ev``; none for the pipeline, NaN). Null value and interval: median and 2.5-97.5%
    range over ``n_null`` null replicates. ``p_null``: two-sided rank p-value of the value
    among the null replicates; verdict "explained by construction" when ``p_null > alpha``, and
    "cannot be decided" when fewer than ``2 / alpha - 1`` replicates could never reject. A null
    stops before ``n_null`` once no further replicate could bring any of its neighbour and PCA
    p-values to ``alpha`` (:func:`_settled`), and its verdicts say so.
    ``kpca``: the report's pipeline (:class:`Pipeline`). At most ``max_points`` good draws
    (random subset, fixed seed) enter the good-draw statistics. ``null_transform`` maps uniform
    null points ``(m, p)`` into the coordinates ``theta`` is in (e.g. canonicalisation), so
    both sides are measured alike.

    ``subset_grams(subsets) -> [K]``, when given, returns the Gram matrices of ``theta``'s rows
    at each sorted index array: the shuffled nulls are then measured by :func:`gram_stats`
    from one pass over an on-disk ``theta`` instead of reading random rows per replicate
    (same subsets, same statistics up to rounding).

    ``chains``/``steps`` (each draw's chain and draw index, ``(n,)``): ``twonn`` and ``mle``
    take neighbours outside a lag ``window`` of the draw's own chain and bootstrap whole chains
    (the shuffled null's subsets are measured the same way; uniform draws have no chains), and
    ``twonn_naive``/``mle_naive`` keep the plain reading. ``by_scale``, when a dict, receives
    :func:`dimension_by_scale` of the good draws. ``laplace``: a :class:`LaplaceNull` adds the
    ``laplace`` null's rows; a string adds them as "not computed: <the string>".
    ``pipeline_null``: :func:`pipeline_uniform_null` of these settings, computed once for all
    experiments with this network; computed here when absent or of another shape.
    ``uniform_null``: ``{"m": m, "values": }`` :func:`uniform_cloud_values` of these settings,
    likewise shared; used when its ``m`` is this run's count of good draws (never for clouds
    narrower than ``p``, whose statistics read the draws' lag window).
    """
    rng = _rng(seed)
    lagged = chains is not None
    mean_loss = np.asarray(mean_loss, dtype=np.float64)
    n, p = theta.shape
    good = mean_loss < threshold
    n_good = int(good.sum())
    # read only subsets of theta: it may be an on-disk array with p up to 1e5
    idx = np.flatnonzero(good)
    if len(idx) > max_points:
        idx = rng.choice(idx, size=max_points, replace=False)
    G = _rows(theta, idx)
    m = len(G)
    # repeated positions (rejected proposals) do not count: the neighbour estimates drop them
    enough = m > 0 and len(_unique(G)) > k2 + 1
    n_pipe = min(n, kpca.max_draws)
    pipe_idx = np.arange(n) if n_pipe == n else rng.choice(n, size=n_pipe, replace=False)
    T, T_loss = _rows(theta, pipe_idx), mean_loss[np.sort(pipe_idx)]
    T_good = T_loss < threshold

    order = np.sort(idx)  # _rows reads in increasing order
    lag = {}
    if lagged:
        lag = {"chains": np.asarray(chains)[order], "steps": np.asarray(steps)[order]}
        lag["window"] = window
    too_few = _too_few_note(m, window, k2) if lagged and enough else None
    real = {}
    if enough:
        real = _good_values(G, too_few, lag, by_scale, seed, n_boot, n_null, k_pca, discard, k1, k2)
    pipe_name = f"pipeline_ev{kpca.n_pca}"
    n_kpca, n_pca = kpca.n_kpca, kpca.n_pca
    # one embedding of the real draws serves the real value and every shuffled-energy
    # replicate: only which draws count as good changes between them
    t_embedding = functools.cache(lambda: pipeline_embedding(T, n_kpca, kpca.gamma, seed))
    # the Gaussian null's every replicate draws from one factorisation of the good draws
    gaussian = functools.cache(lambda: gaussian_factor(G))
    # no bootstrap here: duplicated draws bias kernel PCA; the null spread carries the noise
    real[pipe_name] = (good_ev(t_embedding, T_good, n_pca), *(float("nan") for _ in ENDS))

    @functools.cache
    def uniform_embeddings():
        if pipeline_null is not None and pipeline_null.shape == (n_null, n_pipe, n_kpca):
            return pipeline_null
        return pipeline_uniform_null(
            n_null, n_pipe, p, box, n_kpca, kpca.gamma, seed, null_transform
        )

    # null replicates
    used = NULLS if laplace is None else (*NULLS, "laplace")
    laplace_failed = False
    nulls = {name: {} for name in used}
    grams = None
    shared = (
        uniform_null["values"]
        if uniform_null is not None and uniform_null["m"] == m and m >= p and enough
        and all(len(v) == n_null for v in uniform_null["values"].values())
        else None
    )  # fmt: skip
    if enough and subset_grams is not None:
        grams = subset_grams(_shuffled_picks(n_null, seed, n, m, p, box))
    # curtailed: a null stops once no further replicate could bring any of its p-values to
    # alpha (the verdict of all n_null replicates, for fewer where the answer is clear)
    stopped: dict[str, int] = {}
    for r in range(n_null):
        rs = _rng([seed, r])
        for name in used:
            # one null cloud at a time: at large p each is as big as the good draws; the
            # shuffled draws are read from the store only when they are used
            if name in stopped or (name == "uniform" and shared is not None):
                _follow_stream(name, rs, m, n, p, box)
                if name not in stopped:
                    for stat, v in shared.items():
                        nulls[name].setdefault(stat, []).append(v[r])
                continue
            if name == "uniform":
                cloud = null_uniform_in(m, p, box, rs, null_transform)
            elif name == "gaussian":
                # its own random stream, so the other nulls stay as they were
                cloud = null_gaussian(G, _rng([seed, r, 2]), gaussian()) if enough else None
            elif name == "laplace":
                # one failed replicate says the truncation keeps too little: stop there
                if not enough or isinstance(laplace, str) or laplace_failed:
                    continue
                cloud = laplace.draw(m, _rng([seed, r, 4]))
                laplace_failed = cloud is None
                if laplace_failed:
                    continue
            else:
                pick = rs.choice(n, size=m, replace=False)
                cloud = _rows(theta, pick) if enough and grams is None else None
            # the shuffled subset keeps its draws' chains; uniform draws are independent
            null_lag = {}
            if lagged:
                where = np.sort(pick) if name == "shuffled" else None  # the others: iid
                null_lag = _null_lag(where, m, chains, steps, window)
            if enough:
                gram = grams[r] if cloud is None and grams is not None else None
                values = _cloud_values(
                    cloud, gram, m < p, name != "shuffled", lagged, null_lag, k_pca, discard, k1, k2
                )
                for stat, v in values.items():
                    nulls[name].setdefault(stat, []).append(v)
            del cloud
        # pipeline nulls, on as many draws as the real pipeline: a uniform cloud with a random
        # good set of the same size; the real draws with their energies shuffled
        mask = np.zeros(n_pipe, dtype=bool)
        mask[rs.choice(n_pipe, size=int(T_good.sum()), replace=False)] = True
        nulls["uniform"].setdefault(pipe_name, []).append(
            good_ev(lambda: uniform_embeddings()[r], mask, n_pca)  # noqa: B023 (called here)
        )
        nulls["shuffled"].setdefault(pipe_name, []).append(
            good_ev(t_embedding, null_shuffled(T_loss, rs) < threshold, n_pca)
        )
        bound = alpha * (n_null + 1) / 2
        stopped |= {x: r + 1 for x in used if x not in stopped and _settled(real, nulls[x], bound)}

    # PCA of an n_kpca-dimensional cloud keeps at least n_pca / n_kpca of its variance
    floor = (
        f"; floor {n_pca}/{n_kpca} = {n_pca / n_kpca:.3g}: any {n_kpca}-D cloud keeps at least "
        f"that in its top {n_pca}, so pca_ev{k_pca} in the full space is the telling number"
    )
    not_computed = _laplace_note(laplace, nulls.get("laplace"), m)
    stops = {"n_null": n_null, "stopped": stopped}
    return _table_rows(
        real, nulls, used, pipe_name, floor, too_few, not_computed, alpha, n_good, stops
    )
