"""Known answers of the level-set papers, checked on a run: each check predicts a number from
theory, measures it with the workflow's own tools and says whether they agree.

U is the summed squared error (``model.loss: mse``, ``target.energy: sum``) throughout.

- ``cooper``: at a point that interpolates N points with r outputs, the zero-loss set is a
  manifold of dimension p - rN (Cooper 2018, generic data, p > rN); the Hessian there is
  2 J'J, so the census's ``cooper_dim`` (p - rank J) must read p - rN, and its ``n_zero``,
  counted on the free coordinates (those not pinned at the box wall), their number - rN.
- ``linear_sign_flip``: a linear network d-[h]-r with biases, any d and r. The
  least-squares fit's map M = W2 W1 factored with h = k = min(d, r) units, and the same map
  with one unit's sign flipped, lie in the two components of {det > 0} and {det < 0} of the
  square factor (W1 when k = d, W2 when k = r); every path between them crosses
  rank(W2 W1) <= k - 1, where U >= L* + sigma_k(Yhat)^2 (Eckart-Young: Yhat the fitted
  centred targets). So the barrier is sigma_k^2 exactly (shrinking the sigma_k direction
  through zero attains it). With h > k the rank constraint never binds: barrier 0.
- ``relu_permutation``: Freeman & Bruna's 2-3-2 ReLU task without biases. theta* (W1 = X,
  W2 = Y') interpolates (its hidden activations H are the identity) and so does its copy
  with hidden units 1 and 2 swapped; det H changes sign between them, so every path
  crosses a singular H >= 0. A singular nonnegative H has a nonnegative vector u in its row
  space, and the targets' rows span the plane orthogonal to (1, 1, 1) with weight 3/2, so
  U >= 3 - 3/2 (2 - (u.1)^2 / 3) >= 1/2: a certified lower bound on the barrier. DSS below
  it must fail; above the real barrier (~1) it connects; a rescaled copy connects at ~0.
- ``quadratic``: quadratic activations with biases, d = 2, one output, represent exactly
  the quadratic polynomials (once h >= 3), so the lowest U is the least-squares residual
  L* on [1, x1, x2, x1^2, x1 x2, x2^2]; with h > 2N every local minimum is global and the
  level sets above L* are connected (Venturi, Bandeira & Bruna 2019): every census minimum
  and every minimiser from random starts must reach L*, and DSS must join them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from lossatlas.analysis import connect, minima

CHECKS = ("cooper", "linear_sign_flip", "relu_permutation", "quadratic")
COLUMNS = ["check", "quantity", "predicted", "measured", "tolerance", "passed", "note"]


def _row(check, quantity, predicted, measured, tolerance, passed, note="") -> dict:
    return {
        "check": check,
        "quantity": quantity,
        "predicted": predicted,
        "measured": measured,
        "tolerance": tolerance,
        "passed": bool(passed),
        "note": note,
    }


def _interpolating(census: pd.DataFrame, tol: float = 1e-8) -> pd.DataFrame:
    """The census minima whose mean loss is zero to ``tol``."""
    return census[(census["mean_loss"] <= tol) & (census["index"] == 0)]


def cooper(target, census: pd.DataFrame, **_) -> list[dict]:
    """At every interpolating census minimum, like against like: ``n_zero`` (zero eigenvalues
    of the Hessian on the free coordinates) equals the free coordinates less rN, and
    ``cooper_dim`` (p - rank of the outputs' Jacobian, over all p) equals p - rN. A point on
    the box wall has fewer free coordinates. ``measured`` counts the points that disagree;
    the note names them."""
    p, r, N = target.p, target.mlp.sizes[-1], target.n_points
    rN = r * N
    zeros = _interpolating(census)
    pinned = zeros["n_pinned"].to_numpy(dtype=int) if "n_pinned" in zeros else np.zeros(len(zeros))
    ids = zeros["id"].to_numpy() if "id" in zeros else zeros.index.to_numpy()
    expected = {"n_zero": p - pinned - rN, "cooper_dim": np.full(len(zeros), p - rN)}
    quantity = {
        "n_zero": f"n_zero = free coordinates - rN ({p} - pinned - {rN})",
        "cooper_dim": f"cooper_dim = p - rN ({p} - {rN})",
    }
    on_wall = int((pinned > 0).sum())
    rows = []
    for column in ("n_zero", "cooper_dim"):
        values = zeros[column].to_numpy(dtype=float)
        bad = values != expected[column]
        note = f"{len(values)} interpolating minima of {len(census)}"
        if on_wall:
            note += f", {on_wall} on the box wall (free coordinates only)"
        if bad.any():
            note += "; disagree: " + ", ".join(
                f"id {i} ({v:g}, expected {e:g})"
                for i, v, e in zip(ids[bad], values[bad], expected[column][bad], strict=True)
            )
        rows.append(
            _row(
                "cooper",
                f"{quantity[column]}: interpolating minima that disagree",
                0,
                int(bad.sum()),
                "none",
                len(values) > 0 and not bad.any(),
                note,
            )
        )
    return rows


def linear_fit(X: np.ndarray, Y: np.ndarray) -> dict:
    """Least squares with intercept: the map ``M (r, d)``, the intercept, the minimum ``L*``
    and the singular values of the fitted centred targets."""
    xm, ym = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - xm, Y - ym
    M = np.linalg.lstsq(Xc, Yc, rcond=None)[0].T
    fitted = Xc @ M.T
    return {
        "M": M,
        "intercept": ym - M @ xm,
        "L_star": float(np.sum((Yc - fitted) ** 2)),
        "sigma": np.linalg.svd(fitted, compute_uv=False),
    }


def linear_sign_flip_pair(target) -> tuple[np.ndarray, np.ndarray, dict]:
    """Two least-squares fits of a linear d-[h]-r network with biases, the second with the
    first hidden unit's sign flipped: ``(a, b, fit)``. The first two units carry
    ``M = U S V'`` (unit 1 the sigma_1 direction), any further units are dead."""
    mlp = target.mlp
    d, h, r = mlp.sizes
    fit = linear_fit(target.X, target.y)
    U, S, Vt = np.linalg.svd(fit["M"], full_matrices=False)
    k = len(S)
    W1, W2 = np.zeros((h, d)), np.zeros((r, h))
    W1[:k] = np.sqrt(S)[:, None] * Vt
    W2[:, :k] = U * np.sqrt(S)
    b1, b2 = np.zeros(h), fit["intercept"]
    flip = np.ones(h)
    flip[0] = -1.0
    a = np.concatenate([W1.ravel(), b1, W2.ravel(), b2])
    b = np.concatenate([(W1 * flip[:, None]).ravel(), b1, (W2 * flip).ravel(), b2])
    return a, b, fit


def linear_sign_flip(target, settings, **_) -> list[dict]:
    a, b, fit = linear_sign_flip_pair(target)
    d, h, r = target.mlp.sizes
    k = min(d, r)
    # the smallest singular value of the fit: shrinking its direction through rank k - 1 is
    # the cheapest way between the two components
    L, s2 = fit["L_star"], float(fit["sigma"][k - 1])
    narrow = h <= k
    predicted = s2**2 if narrow else 0.0
    ends = target.U(np.vstack([a, b]))
    rows = [
        _row(
            "linear_sign_flip",
            "U at both ends - L*",
            0.0,
            float(ends.max() - L),
            1e-9,
            abs(ends.max() - L) <= 1e-9 * max(1, L),
        )
    ]
    measured, below, above = _barrier_and_levels(
        target, a, b, L, max(predicted, 1e-3 * s2**2), settings
    )
    tol = 0.05 * s2**2
    rows.append(
        _row(
            "linear_sign_flip",
            f"barrier (string method) / sigma_{k}^2 = {s2**2:.4g}",
            predicted,
            measured,
            tol,
            abs(measured - predicted) <= tol,
            "h = min(d, r): two components; a lower bound holds on every path"
            if narrow
            else "h > min(d, r): one component",
        )
    )
    if narrow:
        rows.append(
            _row(
                "linear_sign_flip",
                f"DSS at L* + sigma_{k}^2 / 2 connects",
                False,
                below["connected"],
                "",
                not below["connected"] and below["path_max"] >= L + s2**2 * (1 - 1e-9),
                below["status"],
            )
        )
    rows.append(
        _row(
            "linear_sign_flip",
            "DSS at L* + 1.6 barrier connects",
            True,
            above["connected"],
            "",
            above["connected"],
            above["status"],
        )
    )
    return rows


def _barrier_and_levels(target, a, b, L, barrier, settings) -> tuple[float, dict, dict]:
    """The string-method barrier from a DSS path above the predicted barrier, and DSS at
    half and one and a half times it (above ``L``)."""
    kw = connect.dss_budget(settings)
    ug, box = target.U_and_grad, target.box
    below = connect.dynamic_string(ug, a, b, L + 0.5 * barrier, box, floor=L, **kw)
    above = connect.dynamic_string(ug, a, b, L + 1.6 * barrier, box, floor=L, **kw)
    return _string_from(target, above, settings)["path_max"] - L, below, above


def _string_from(target, dss: dict, settings) -> dict:
    """The string method from a DSS result's beads (its two ends if it did not connect)."""
    beads = dss["beads"]
    path = beads if dss["connected"] else beads[[0, -1]]
    c = settings
    return connect.string_barrier(
        target.U_and_grad, path, target.box, n_images=c["n_images"], n_iter=c["n_iter"]
    )


def relu_permutation_pair(target) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """theta* (W1 = X, W2 = Y'), its copy with hidden units 1 and 2 swapped, and the control
    with unit 1 rescaled by 2 (its outgoing weights halved): ``(a, b, control)``."""
    X, Y = target.X, target.y
    swap = [1, 0, 2]
    a = np.concatenate([X.ravel(), Y.T.ravel()])
    b = np.concatenate([X[swap].ravel(), Y.T[:, swap].ravel()])
    scale = np.array([2.0, 1.0, 1.0])
    control = np.concatenate([(X * scale[:, None]).ravel(), (Y.T / scale).ravel()])
    return a, b, control


RELU_CERTIFIED_BOUND = 0.5


def relu_permutation(target, settings, **_) -> list[dict]:
    if target.mlp.sizes != (2, 3, 2) or target.p != 12:
        raise ValueError("relu_permutation needs the 2-3-2 network without biases (p = 12)")
    a, b, control = relu_permutation_pair(target)
    kw = connect.dss_budget(settings)
    ug, box = target.U_and_grad, target.box
    low = connect.dynamic_string(ug, a, b, 0.25, box, **kw)
    high = connect.dynamic_string(ug, a, b, 1.2, box, **kw)
    string = _string_from(target, high, settings)
    ctrl = connect.dynamic_string(ug, a, control, 0.01, box, **kw)
    bound = RELU_CERTIFIED_BOUND
    at_ends = float(target.U(np.vstack([a, b, control])).max())
    return [
        _row(
            "relu_permutation",
            "U at theta*, its swap and the control",
            0.0,
            at_ends,
            1e-12,
            at_ends <= 1e-12,
        ),
        _row(
            "relu_permutation",
            "DSS at 0.25 connects (certified barrier >= 0.5)",
            False,
            low["connected"],
            "",
            not low["connected"] and low["path_max"] >= bound,
            f"{low['status']}; lowest path found {low['path_max']:.4g}",
        ),
        _row(
            "relu_permutation",
            "DSS at 1.2 connects",
            True,
            high["connected"],
            "",
            high["connected"],
            f"{high['status']}, {high['n_beads']} beads",
        ),
        _row(
            "relu_permutation",
            "barrier (string method) >= certified bound",
            bound,
            string["path_max"],
            "lower bound",
            string["path_max"] >= bound,
            "the bound is proven; the measured barrier is an upper bound on the true one",
        ),
        _row(
            "relu_permutation",
            "control (unit 1 rescaled): DSS at 0.01 connects",
            True,
            ctrl["connected"],
            "",
            ctrl["connected"],
            f"path max {ctrl['path_max']:.3g}",
        ),
    ]


def quadratic_features(X: np.ndarray) -> np.ndarray:
    x1, x2 = X[:, 0], X[:, 1]
    return np.column_stack([np.ones(len(X)), x1, x2, x1 * x1, x1 * x2, x2 * x2])


QUADRATIC_STARTS = 8


def quadratic(target, census: pd.DataFrame, settings, **_) -> list[dict]:
    """L* against the census's lowest minimum; then L-BFGS-B from ``QUADRATIC_STARTS`` random
    starts (seeded) must all reach L*, at distinct parameters (the census merges minima that
    compute one function, so these are the nodes), and DSS must join consecutive ones just
    above L*."""
    F = quadratic_features(target.X)
    coef = np.linalg.lstsq(F, target.y, rcond=None)[0]
    L = float(np.sum((target.y - F @ coef) ** 2))
    tol = 1e-6 * max(L, 1.0)
    minima_rows = census[census["index"] == 0]
    lowest = float(minima_rows["U"].min()) if len(minima_rows) else float("nan")
    reach_census = float(np.mean(np.abs(minima_rows["U"] - L) <= tol)) if len(minima_rows) else 0
    rng = np.random.default_rng(0)
    starts = rng.uniform(-1.0, 1.0, (QUADRATIC_STARTS, target.p))
    ends, U, _ = minima.local_minimize(target.U_and_grad, starts, target.box)
    reach = float(np.mean(np.abs(U - L) <= tol))
    spread = float(np.min(np.linalg.norm(np.diff(ends, axis=0), axis=1)))
    level = L + 0.01 * max(L, 1e-3)
    kw = connect.dss_budget(settings)
    joined = [
        connect.dynamic_string(
            target.U_and_grad, ends[i], ends[i + 1], level, target.box, floor=L, **kw
        )  # fmt: skip
        for i in range(len(ends) - 1)
    ]
    n_joined = sum(j["connected"] for j in joined)
    return [
        _row("quadratic", "lowest census U = L*", L, lowest, tol, abs(lowest - L) <= tol),
        _row(
            "quadratic",
            "fraction of census minima at L*",
            1.0,
            reach_census,
            "all",
            reach_census == 1.0,
            f"{len(minima_rows)} distinct functions",
        ),
        _row(
            "quadratic",
            f"fraction of {QUADRATIC_STARTS} random starts reaching L*",
            1.0,
            reach,
            tol,
            reach == 1.0,
            f"nearest two ends {spread:.3g} apart: distinct parameters",
        ),
        _row(
            "quadratic",
            "consecutive ends joined by DSS at L* + 1 %",
            len(joined),
            n_joined,
            "all",
            n_joined == len(joined),
            "; ".join(sorted({j["status"] for j in joined})),
        ),
    ]


def unmet_requirement(
    name: str,
    *,
    loss: str,
    energy: str,
    activation: str,
    hidden: list[int],
    bias: str,
    generator: str,
    n_features: int,
    n_outputs: int,
) -> str | None:
    """What the check ``name`` needs that the network or the data (their real sizes, a user's
    file read for them) lack, or None. Only what the mathematics needs is asked."""
    if loss != "mse" or energy != "sum":
        return "model.loss: mse and target.energy: sum (U is the summed squared error)"
    one_hidden = len(hidden) == 1
    if name == "linear_sign_flip":
        if not (activation == "linear" and one_hidden and bias == "all"):
            return "model.activation: linear, one hidden layer and model.bias: all"
        if hidden[0] < min(n_features, n_outputs):
            return (
                f"a hidden width of at least min(d, r) = {min(n_features, n_outputs)} (the data "
                f"have d = {n_features} inputs and r = {n_outputs} outputs), so the network "
                "can fit the least-squares map"
            )
    if name == "relu_permutation" and not (
        generator == "permute3" and activation == "relu" and hidden == [3] and bias == "none"
    ):
        return "dataset.generator: permute3, model.activation: relu, hidden [3], bias: none"
    if name == "quadratic":
        if not (activation == "quadratic" and one_hidden and bias == "all"):
            return "model.activation: quadratic, one hidden layer and model.bias: all"
        if (n_features, n_outputs) != (2, 1):
            return (
                f"data with 2 inputs and 1 output (the quadratic polynomials in 2 variables); "
                f"these have {n_features} and {n_outputs}"
            )
    return None


RUNNERS: dict[str, Callable[..., list[dict]]] = {
    "cooper": cooper,
    "linear_sign_flip": linear_sign_flip,
    "relu_permutation": relu_permutation,
    "quadratic": quadratic,
}


def run_checks(
    names, target, *, census: pd.DataFrame, connections: pd.DataFrame, settings: dict
) -> pd.DataFrame:
    """The table of the checks ``names`` (from :data:`CHECKS`) on ``target``: one row per
    quantity (``COLUMNS``). ``settings``: the ``landscape.connect`` settings (DSS budget,
    string images and iterations)."""
    rows = []
    for name in names:
        rows += RUNNERS[name](target, census=census, connections=connections, settings=settings)
    return pd.DataFrame(rows, columns=COLUMNS)
