"""Metropolis-adjusted Langevin over a batch of chains, inside the box."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lossatlas.sampling._common import beta_column, da_init, da_update, metropolis
from lossatlas.sampling.base import Kernel


class MALAState(NamedTuple):
    """Leading axis = chain; ``da_*`` are the warm-up dual-averaging statistics."""

    position: np.ndarray  # (C, p)
    U: np.ndarray  # (C,)
    grad: np.ndarray  # (C, p), dU/dtheta at position
    log_step_size: np.ndarray  # (C,)
    da_log_step_avg: np.ndarray
    da_h_bar: np.ndarray
    da_count: np.ndarray
    da_mu: np.ndarray


class MALAInfo(NamedTuple):
    accept_prob: np.ndarray  # (C,)
    accepted: np.ndarray  # (C,) bool
    outside: np.ndarray  # (C,) bool: the proposal left the box (and was rejected)


class MALA(Kernel):
    """Langevin proposal ``y = x - (eps^2 / 2) beta grad U(x) + eps z``, Metropolis-Hastings.

    The box is handled by rejecting proposals outside it: the proposal density stays the plain
    Gaussian, so the Hastings ratio is exact. Reflecting instead would make ``q`` an infinite
    sum over mirror images whose drift terms do not cancel (the drift breaks the symmetry that
    makes reflection free for RWM); truncating that sum biases the chain. Rejections are rare
    unless ``eps`` is comparable to the distance to the wall, and dual averaging shrinks ``eps``
    when they are not.
    """

    state_cls = MALAState
    info_cls = MALAInfo
    config_fields = ("position", "U", "grad")

    def __init__(self, target, step_size=0.1, target_accept=0.574, dtype="float64"):
        super().__init__(target, step_size, target_accept, dtype)

    def init(self, position: np.ndarray, rng: np.random.Generator | None = None) -> MALAState:
        x = self._position(position)
        u, g = self.target.U_and_grad(x)
        return MALAState(x, u, g, **da_init(self.step_size, x.shape[0]))

    def step_at(self, state: MALAState, rng: np.random.Generator, adapt: bool, beta):
        x, g = state.position, state.grad
        b = beta_column(beta)
        eps = np.exp(state.log_step_size)[:, None]
        z = rng.standard_normal(x.shape, dtype=x.dtype)
        mean_x = x - 0.5 * eps**2 * b * g
        y = (mean_x + eps * z).astype(x.dtype)
        L = self.target.box
        outside = np.any(np.abs(y) > L, axis=1)
        # evaluate at a clipped point so foreign targets never see out-of-box input
        u_y, g_y = self.target.U_and_grad(np.clip(y, -L, L))
        mean_y = y - 0.5 * eps**2 * b * g_y
        log_q_fwd = -0.5 * (z.astype(np.float64) ** 2).sum(axis=1)
        log_q_rev = -0.5 * (((x - mean_y) / eps) ** 2).sum(axis=1)
        log_ratio = -np.asarray(beta) * (u_y - state.U) + log_q_rev - log_q_fwd
        log_ratio = np.where(outside, -np.inf, log_ratio)
        accept_prob, accepted = metropolis(log_ratio, rng)
        a = accepted[:, None]
        new = dict(
            position=np.where(a, y, x),
            U=np.where(accepted, u_y, state.U),
            grad=np.where(a, g_y, g),
        )
        if adapt:
            new.update(da_update(state, accept_prob, self.target_accept, 100 * self.target.box))
        return state._replace(**new), MALAInfo(accept_prob, accepted, outside)
