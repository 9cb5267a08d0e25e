"""Parallel tempering around any base kernel of this package."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lossatlas.sampling.base import run_steps
from lossatlas.sampling.hmc import HMCInfo, HMCState
from lossatlas.sampling.mala import MALAInfo, MALAState
from lossatlas.sampling.rwm import RWMInfo, RWMState


def _state_class(base_cls: type) -> type:
    """The tempered state type for a base state type.

    Fields: ``position``, ``U``, ``log_step_size`` of the beta = 1 replica (the sample), then
    ``rep_<field>`` for every base field with a replica axis ``(C, R, ...)`` (replica 0 is the
    target's beta), ``log_gaps (C, R-1)`` (``log(log beta_k - log beta_k+1)``) and
    ``pt_count (C,)`` (transitions done; its parity picks the swap pairs).
    """
    fields = [("position", np.ndarray), ("U", np.ndarray), ("log_step_size", np.ndarray)]
    fields += [(f"rep_{f}", np.ndarray) for f in base_cls._fields]
    fields += [("log_gaps", np.ndarray), ("pt_count", np.ndarray)]
    return NamedTuple(f"Tempered{base_cls.__name__}", fields)


def _info_class(base_cls: type) -> type:
    """Base info of the beta = 1 replica plus ``swap_accept_prob (C, R-1)`` (NaN where the pair
    was not attempted this transition) and ``swap_accept (C,)``, its mean over attempted pairs."""
    fields = [(f, np.ndarray) for f in base_cls._fields]
    fields += [("swap_accept_prob", np.ndarray), ("swap_accept", np.ndarray)]
    return NamedTuple(f"Tempered{base_cls.__name__}", fields)


# One tempered state and info type per kernel, made at import under their own names in this
# module, so they pickle by reference (e.g. across Dask workers).
TemperedRWMState = _state_class(RWMState)
TemperedMALAState = _state_class(MALAState)
TemperedHMCState = _state_class(HMCState)
TemperedRWMInfo = _info_class(RWMInfo)
TemperedMALAInfo = _info_class(MALAInfo)
TemperedHMCInfo = _info_class(HMCInfo)
_TEMPERED = {
    RWMState: TemperedRWMState,
    MALAState: TemperedMALAState,
    HMCState: TemperedHMCState,
    RWMInfo: TemperedRWMInfo,
    MALAInfo: TemperedMALAInfo,
    HMCInfo: TemperedHMCInfo,
}


class Tempered:
    """Replica exchange over a ladder ``beta_k = beta * r_k`` with ``r_0 = 1 > ... >= beta_min``.

    Every transition moves all replicas with the base kernel (replicas x chains flattened into
    its batch axis, each replica with its own tuned step size), then proposes swaps between
    neighbours ``(k, k+1)`` for ``k`` of one parity, alternating (the deterministic even-odd
    scheme, which lets configurations travel the ladder without a random walk in k). During
    warm-up with ``adapt_swap_rate``, the log gaps move by Robbins-Monro towards
    ``target_swap_rate``, from the swap acceptance averaged over the batch's chains (so all
    chains of a batch share one ladder); ``beta_min`` stays the hottest allowed (if every
    pair swaps too easily the ladder ends at ``beta_min`` with equal-ish rates instead of
    running off to beta = 0). Only replica 0 is the sample.
    """

    def __init__(
        self,
        base,
        n_temps: int,
        beta_min=0.1,
        ladder="geometric",
        adapt_swap_rate=False,
        target_swap_rate=0.3,
    ):
        if n_temps < 2:
            raise ValueError("tempering needs n_temps >= 2 (1 means off: use the base kernel)")
        if ladder != "geometric":
            raise ValueError(f"unknown ladder {ladder!r}; use geometric")
        if not 0 < beta_min < 1:
            raise ValueError("beta_min must be in (0, 1): it is a fraction of target.beta")
        self.base = base
        self.target = base.target
        self.n_temps = int(n_temps)
        self.beta_min = float(beta_min)
        self.adapt_swap_rate = bool(adapt_swap_rate)
        self.target_swap_rate = float(target_swap_rate)
        self._base_state_cls = base.state_cls
        self._state_cls = _TEMPERED[base.state_cls]
        self._info_cls = _TEMPERED[base.info_cls]

    def betas(self, state) -> np.ndarray:
        """Inverse temperatures ``(C, R)``, replica 0 first."""
        gaps = np.exp(state.log_gaps)
        log_r = -np.concatenate([np.zeros((gaps.shape[0], 1)), np.cumsum(gaps, axis=1)], axis=1)
        return self.target.beta * np.exp(log_r)

    def _split(self, state):
        """The base state, with replicas x chains flattened into the batch axis."""
        names = type(state)._fields
        rep = [getattr(state, n) for n in names if n.startswith("rep_")]
        return self._base_state_cls(*(f.reshape(-1, *f.shape[2:]) for f in rep))

    def _join(self, base_state, c, **extra):
        rep = {
            f"rep_{n}": v.reshape(c, self.n_temps, *v.shape[1:])
            for n, v in zip(base_state._fields, base_state, strict=True)
        }
        return self._state_cls(
            position=rep["rep_position"][:, 0].copy(),
            U=rep["rep_U"][:, 0].copy(),
            log_step_size=rep["rep_log_step_size"][:, 0].copy(),
            **rep,
            **extra,
        )

    def init(self, position: np.ndarray, rng: np.random.Generator):
        """Replica 0 starts at ``position``; the others at copies of it."""
        x = np.asarray(position)
        c, r = x.shape[0], self.n_temps
        flat = np.repeat(x[:, None, :], r, axis=1).reshape(c * r, -1)
        base_state = self.base.init(flat, rng)
        gap = -np.log(self.beta_min) / (r - 1)
        return self._join(
            base_state,
            c,
            log_gaps=np.full((c, r - 1), np.log(gap)),
            pt_count=np.zeros(c, dtype=np.int64),
        )

    def step(self, state, rng: np.random.Generator, adapt: bool = False):
        """Base transition of every replica, then one round of neighbour swaps."""
        c, r = state.position.shape[0], self.n_temps
        betas = self.betas(state)
        base_state, base_info = self.base.step_at(self._split(state), rng, adapt, betas.reshape(-1))
        fields = {
            n: v.reshape(c, r, *v.shape[1:])
            for n, v in zip(base_state._fields, base_state, strict=True)
        }
        # swaps of neighbours (k, k+1) for k of this transition's parity
        u = fields["U"].astype(np.float64)
        log_ratio = (betas[:, :-1] - betas[:, 1:]) * (u[:, :-1] - u[:, 1:])
        log_ratio = np.where(np.isnan(log_ratio), -np.inf, log_ratio)
        prob = np.exp(np.minimum(log_ratio, 0.0))
        draw = rng.random((c, r - 1))
        k = np.arange(r - 1)
        active = (k % 2)[None, :] == (state.pt_count % 2)[:, None]
        swap = active & (np.log(draw) < log_ratio)
        perm = np.tile(np.arange(r), (c, 1))
        ci, ki = np.nonzero(swap)
        perm[ci, ki], perm[ci, ki + 1] = ki + 1, ki
        for name in self.base.config_fields:
            v = fields[name]
            idx = perm.reshape(c, r, *([1] * (v.ndim - 2)))
            fields[name] = np.take_along_axis(v, idx, axis=1)
        log_gaps = state.log_gaps
        if adapt and self.adapt_swap_rate:
            # batch-mean acceptance of the attempted pairs; untouched pairs keep their gap
            n_act = active.sum(axis=0)
            mean_prob = np.where(active, prob, 0.0).sum(axis=0) / np.maximum(n_act, 1)
            lr = (1.0 + state.pt_count[:, None]) ** -0.6
            delta = np.where(n_act > 0, mean_prob - self.target_swap_rate, 0.0)
            log_gaps = log_gaps + lr * delta[None, :]
            # never hotter than beta_min: if the ladder would overshoot, shrink it uniformly
            span = np.exp(log_gaps).sum(axis=1, keepdims=True)
            log_gaps = log_gaps + np.minimum(0.0, np.log(-np.log(self.beta_min) / span))
        base_state = self._base_state_cls(
            *(fields[n].reshape(c * r, *fields[n].shape[2:]) for n in base_state._fields)
        )
        new = self._join(base_state, c, log_gaps=log_gaps, pt_count=state.pt_count + 1)
        swap_prob = np.where(active, prob, np.nan)
        n_pairs = active.sum(axis=1)
        swap_mean = np.where(active, prob, 0.0).sum(axis=1) / np.where(n_pairs > 0, n_pairs, np.nan)
        cold = {n: v.reshape(c, r, *v.shape[1:])[:, 0] for n, v in base_info._asdict().items()}
        if "hamiltonian" in cold:
            # each replica's kinetic energy goes with its configuration; the sample's H is at
            # the target's beta: beta_0 U + K of whatever replica 0 holds after the swaps
            ham = base_info.hamiltonian.reshape(c, r)
            kin = ham - betas * u
            kept = np.take_along_axis(kin, perm, axis=1)[:, 0]
            cold["hamiltonian"] = betas[:, 0] * fields["U"][:, 0].astype(np.float64) + kept
        info = self._info_cls(**cold, swap_accept_prob=swap_prob, swap_accept=swap_mean)
        return new, info

    def run(self, state, rng: np.random.Generator, n_steps: int):
        """``n_steps`` transitions without adaptation: ``(state, sums)`` of the info fields."""
        return run_steps(self, state, rng, n_steps)

    def end_warmup(self, state):
        c = state.position.shape[0]
        base_state = self.base.end_warmup(self._split(state))
        return self._join(base_state, c, log_gaps=state.log_gaps, pt_count=state.pt_count)
