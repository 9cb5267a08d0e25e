"""Pieces shared by the kernels: reflection into the box and per-chain dual averaging."""

from __future__ import annotations

import numpy as np

# Dual averaging constants of Hoffman & Gelman (2014), Algorithm 5.
DA_GAMMA = 0.05
DA_T0 = 10.0
DA_KAPPA = 0.75


def reflect(y: np.ndarray, box: float, xp=np) -> np.ndarray:
    """Fold ``y`` into ``[-box, box]`` by mirror reflections at the walls (any number of them).

    The fold is a deterministic map applied to a symmetric proposal, and the reflected density
    q(x -> y) = sum over images of N(y_image; x, s) is symmetric in (x, y), so RWM needs no
    Hastings correction. ``xp``: the array module (numpy, or ``jax.numpy`` in the compiled RWM).
    """
    L = xp.asarray(box, dtype=y.dtype)
    t = xp.mod(y + L, 4 * L)
    return L - xp.abs(t - 2 * L)


def da_init(step_size, n: int) -> dict[str, np.ndarray]:
    """Dual-averaging fields for ``n`` chains starting at ``step_size`` (scalar or (n,))."""
    log_eps = np.broadcast_to(np.log(np.asarray(step_size, dtype=np.float64)), (n,)).copy()
    return dict(
        log_step_size=log_eps,
        da_log_step_avg=log_eps.copy(),
        da_h_bar=np.zeros(n),
        da_count=np.zeros(n, dtype=np.int64),
        da_mu=np.log(10.0) + log_eps,
    )


def da_update(
    state, accept_prob: np.ndarray, target_accept: float, max_step: float = np.inf
) -> dict[str, np.ndarray]:
    """One dual-averaging update of the log step size per chain (Hoffman & Gelman 2014).

    ``max_step`` caps the step size: on (nearly) flat targets in a box every step is accepted
    and the step would grow without bound, to sizes where folding into the box loses all
    floating-point precision.
    """
    a = np.nan_to_num(np.asarray(accept_prob, dtype=np.float64), nan=0.0)
    t = state.da_count + 1
    eta = 1.0 / (t + DA_T0)
    h_bar = (1 - eta) * state.da_h_bar + eta * (target_accept - a)
    log_eps = np.minimum(state.da_mu - np.sqrt(t) / DA_GAMMA * h_bar, np.log(max_step))
    w = t ** (-DA_KAPPA)
    avg = w * log_eps + (1 - w) * state.da_log_step_avg
    return dict(log_step_size=log_eps, da_log_step_avg=avg, da_h_bar=h_bar, da_count=t)


def da_finish(state) -> dict[str, np.ndarray]:
    """Freeze the step size at the dual-averaging average."""
    return dict(log_step_size=state.da_log_step_avg.copy())


def metropolis(log_ratio: np.ndarray, rng: np.random.Generator):
    """Accept with probability min(1, exp(log_ratio)); NaN counts as a rejection."""
    return accept(log_ratio, rng.random(log_ratio.shape[0]))


def accept(log_ratio, uniform, xp=np):
    """``(accept_prob, accepted)`` of log acceptance ratios given one uniform number per chain:
    accepted where ``log(uniform) < log_ratio``, NaN a rejection. ``xp``: the array module."""
    log_ratio = xp.where(xp.isnan(log_ratio), -xp.inf, log_ratio)
    return xp.exp(xp.minimum(log_ratio, 0.0)), xp.log(uniform) < log_ratio


def beta_column(beta, ndim: int = 2):
    """A scalar beta, or a per-chain (C,) beta shaped to broadcast against (C, p) arrays."""
    b = np.asarray(beta, dtype=np.float64)
    return b.reshape(-1, *([1] * (ndim - 1))) if b.ndim else b
