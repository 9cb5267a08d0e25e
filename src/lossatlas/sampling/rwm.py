"""Random-walk Metropolis over a batch of chains, with reflection at the box walls."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lossatlas.sampling._common import da_init, da_update, metropolis, reflect
from lossatlas.sampling.base import Kernel


class RWMState(NamedTuple):
    """Everything one chain needs to continue; leading axis = chain.

    ``log_step_size`` is the proposal scale in use; the ``da_*`` fields are the dual-averaging
    statistics of the warm-up (``da_log_step_avg`` becomes the frozen step size).
    """

    position: np.ndarray  # (C, p)
    U: np.ndarray  # (C,)
    log_step_size: np.ndarray  # (C,)
    da_log_step_avg: np.ndarray  # (C,)
    da_h_bar: np.ndarray  # (C,)
    da_count: np.ndarray  # (C,) int64
    da_mu: np.ndarray  # (C,)


class RWMInfo(NamedTuple):
    accept_prob: np.ndarray  # (C,)
    accepted: np.ndarray  # (C,) bool


class RWM(Kernel):
    """Gaussian random walk ``y = reflect(x + eps * z)`` accepted with min(1, e^{-beta dU}).

    The per-chain step size is tuned in warm-up by dual averaging on ``log eps`` towards
    ``target_accept`` and frozen (to the running average) by :meth:`end_warmup`.
    """

    state_cls = RWMState
    info_cls = RWMInfo
    config_fields = ("position", "U")

    def __init__(self, target, step_size=0.1, target_accept=0.234, dtype="float64"):
        super().__init__(target, step_size, target_accept, dtype)

    def init(self, position: np.ndarray, rng: np.random.Generator | None = None) -> RWMState:
        x = self._position(position)
        return RWMState(position=x, U=self.target.U(x), **da_init(self.step_size, x.shape[0]))

    def step_at(self, state: RWMState, rng: np.random.Generator, adapt: bool, beta):
        x = state.position
        eps = np.exp(state.log_step_size).astype(x.dtype)[:, None]
        z = rng.standard_normal(x.shape, dtype=x.dtype)
        y = reflect(x + eps * z, self.target.box)
        u_y = self.target.U(y)
        log_ratio = -np.asarray(beta) * (u_y.astype(np.float64) - state.U)
        accept_prob, accepted = metropolis(log_ratio, rng)
        new = dict(
            position=np.where(accepted[:, None], y, x),
            U=np.where(accepted, u_y, state.U),
        )
        if adapt:
            new.update(da_update(state, accept_prob, self.target_accept, 100 * self.target.box))
        return state._replace(**new), RWMInfo(accept_prob, accepted)
