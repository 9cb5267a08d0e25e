"""Hamiltonian Monte Carlo over a batch of chains, with trajectories reflected at the box walls."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lossatlas.sampling._common import beta_column, da_init, da_update, metropolis, reflect
from lossatlas.sampling.base import Kernel

DIVERGENCE = 1000.0  # energy error that marks a trajectory as divergent


class HMCState(NamedTuple):
    """Leading axis = chain.

    ``da_*``: dual averaging of the step size. ``mm_*``: Welford statistics of the current
    mass-matrix window; windows double in length (``mm_window_len``) and end at step
    ``mm_window_end`` of the warm-up (``adapt_count`` counts warm-up steps).
    """

    position: np.ndarray  # (C, p)
    U: np.ndarray  # (C,)
    grad: np.ndarray  # (C, p)
    log_step_size: np.ndarray  # (C,)
    inv_mass: np.ndarray  # (C, p): diagonal of M^-1
    da_log_step_avg: np.ndarray
    da_h_bar: np.ndarray
    da_count: np.ndarray
    da_mu: np.ndarray
    adapt_count: np.ndarray  # (C,) int64
    mm_count: np.ndarray  # (C,) int64
    mm_mean: np.ndarray  # (C, p)
    mm_m2: np.ndarray  # (C, p)
    mm_window_len: np.ndarray  # (C,) int64
    mm_window_end: np.ndarray  # (C,) int64


class HMCInfo(NamedTuple):
    accept_prob: np.ndarray  # (C,)
    accepted: np.ndarray  # (C,) bool
    n_reflections: np.ndarray  # (C,) int64: wall hits along the trajectory
    divergent: np.ndarray  # (C,) bool: energy error above DIVERGENCE (or NaN)
    energy_error: np.ndarray  # (C,) H(end) - H(start)
    # (C,) H = beta U + K at the state the transition ends in (the proposal's if accepted,
    # else the start with its fresh momentum): ArviZ's `energy`, which BFMI reads
    hamiltonian: np.ndarray


def reflect_with_momentum(x, p, box):
    """Fold positions into the box and flip the momenta of coordinates hit an odd number of
    times. The map is volume preserving and its own inverse up to the momentum sign, so the
    leapfrog stays reversible (Neal 2011, section 5.5.1)."""
    L = np.asarray(box, dtype=x.dtype)
    hits = np.floor((x + L) / (2 * L))
    x = reflect(x, box)
    odd = np.mod(hits, 2) != 0
    return x, np.where(odd, -p, p), np.minimum(np.abs(hits), 2**40).astype(np.int64).sum(axis=1)


class HMC(Kernel):
    """Static-length HMC (``n_leapfrog`` steps) with reflective walls.

    Warm-up tunes the step size by dual averaging to ``target_accept`` and the diagonal mass
    matrix from the draws' variance in doubling windows (first ``mass_window`` steps); after
    each window the step-size adaptation restarts. :meth:`end_warmup` freezes both.
    """

    state_cls = HMCState
    info_cls = HMCInfo
    config_fields = ("position", "U", "grad")

    def __init__(
        self,
        target,
        step_size=0.1,
        target_accept=0.8,
        n_leapfrog=10,
        mass_window=50,
        adapt_mass=True,
        dtype="float64",
    ):
        super().__init__(target, step_size, target_accept, dtype)
        self.n_leapfrog = int(n_leapfrog)
        self.mass_window = int(mass_window)
        self.adapt_mass = bool(adapt_mass)

    def _U_and_grad(self, x: np.ndarray):
        return self.target.U_and_grad(x)

    def init(self, position: np.ndarray, rng: np.random.Generator | None = None) -> HMCState:
        x = self._position(position)
        c, p = x.shape
        u, g = self._U_and_grad(x)
        ints = lambda v: np.full(c, v, dtype=np.int64)  # noqa: E731
        return self.state_cls(
            position=x,
            U=u,
            grad=g,
            inv_mass=np.ones((c, p)),
            adapt_count=ints(0),
            mm_count=ints(0),
            mm_mean=np.zeros((c, p)),
            mm_m2=np.zeros((c, p)),
            mm_window_len=ints(self.mass_window),
            mm_window_end=ints(self.mass_window),
            **da_init(self.step_size, c),
        )

    def step_at(self, state: HMCState, rng: np.random.Generator, adapt: bool, beta):
        x0, u0, g0 = state.position, state.U, state.grad
        dt = x0.dtype
        b = beta_column(beta)
        b1 = np.asarray(beta, dtype=np.float64)
        eps = np.exp(state.log_step_size)[:, None]
        inv_m = state.inv_mass
        mom = rng.standard_normal(x0.shape, dtype=dt) / np.sqrt(inv_m)
        h0 = b1 * u0 + 0.5 * (mom * mom * inv_m).sum(axis=1)
        x, u, g = x0, u0, g0
        n_refl = np.zeros(x0.shape[0], dtype=np.int64)
        mom = mom - 0.5 * eps * b * g
        for i in range(self.n_leapfrog):
            x, mom, hits = reflect_with_momentum(
                (x + eps * inv_m * mom).astype(dt), mom, self.target.box
            )
            n_refl += hits
            u, g = self.target.U_and_grad(x)
            mom = mom - (0.5 if i == self.n_leapfrog - 1 else 1.0) * eps * b * g
        h1 = b1 * u + 0.5 * (mom * mom * inv_m).sum(axis=1)
        err = np.asarray(h1, dtype=np.float64) - h0
        divergent = ~(err < DIVERGENCE)
        accept_prob, accepted = metropolis(-err, rng)
        a = accepted[:, None]
        new = dict(
            position=np.where(a, x, x0), U=np.where(accepted, u, u0), grad=np.where(a, g, g0)
        )
        if adapt:
            new.update(da_update(state, accept_prob, self.target_accept, 100 * self.target.box))
            if self.adapt_mass:
                new.update(self._mass_update(state, new))
        hamiltonian = np.where(accepted, np.asarray(h1, dtype=np.float64), h0)
        info = HMCInfo(accept_prob, accepted, n_refl, divergent, err, hamiltonian)
        return state._replace(**new), info

    def _mass_update(self, state, new):
        x = new["position"].astype(np.float64)
        count = state.mm_count + 1
        delta = x - state.mm_mean
        mean = state.mm_mean + delta / count[:, None]
        m2 = state.mm_m2 + delta * (x - mean)
        steps = state.adapt_count + 1
        done = steps >= state.mm_window_end
        d = done[:, None]
        # Stan's regularisation: shrink towards 1e-3 for short windows
        n = count[:, None]
        var = m2 / np.maximum(n - 1, 1)
        var = var * n / (n + 5.0) + 1e-3 * 5.0 / (n + 5.0)
        out = dict(
            adapt_count=steps,
            inv_mass=np.where(d, var, state.inv_mass),
            mm_count=np.where(done, 0, count),
            mm_mean=np.where(d, 0.0, mean),
            mm_m2=np.where(d, 0.0, m2),
            mm_window_len=np.where(done, 2 * state.mm_window_len, state.mm_window_len),
            mm_window_end=np.where(
                done, state.mm_window_end + 2 * state.mm_window_len, state.mm_window_end
            ),
        )
        # a new metric changes the scale: restart dual averaging from the current step size
        log_eps = new.get("log_step_size", state.log_step_size)
        restart = da_init(np.exp(log_eps), x.shape[0])
        for k, v in restart.items():
            base = new.get(k, getattr(state, k))
            out[k] = np.where(done, v, base)
        return out
