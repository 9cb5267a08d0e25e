"""The skeleton every kernel shares, BlackJAX-style: ``init``, ``step``, ``end_warmup`` and a
multi-step ``run``, over a batch of chains.

A kernel's state and info are NamedTuples of per-chain arrays (leading axis = chain); a step
is a pure function of ``(state, rng)``. Kernels implement :meth:`Kernel.init` and
:meth:`Kernel.step_at` (one transition at a given inverse temperature, scalar or per chain);
the rest is here.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from lossatlas.sampling._common import da_finish


class Sampler(Protocol):
    """What the engine drives: a kernel, or parallel tempering around one."""

    target: Any

    def init(self, position: np.ndarray, rng: np.random.Generator): ...

    def step(self, state, rng: np.random.Generator, adapt: bool = False): ...

    def end_warmup(self, state): ...

    def run(self, state, rng: np.random.Generator, n_steps: int, beta=None): ...


class Kernel:
    """Base of the RWM, MALA and HMC kernels.

    ``state_cls`` / ``info_cls``: the kernel's NamedTuples; ``config_fields``: the state fields
    that move with the configuration when parallel tempering swaps replicas.
    """

    state_cls: type
    info_cls: type
    config_fields: tuple[str, ...]

    def __init__(self, target, step_size: float, target_accept: float, dtype="float64"):
        self.target = target
        self.step_size = float(step_size)
        self.target_accept = float(target_accept)
        self.dtype = np.dtype(dtype)

    def _position(self, position: np.ndarray) -> np.ndarray:
        x = np.array(position, dtype=self.dtype)
        if x.ndim != 2:
            raise ValueError(f"position must be (n_chains, p), got {x.shape}")
        return x

    def step(self, state, rng: np.random.Generator, adapt: bool = False):
        """One transition of every chain; the warm-up's adaptation when ``adapt``."""
        return self.step_at(state, rng, adapt, self.target.beta)

    def step_at(self, state, rng: np.random.Generator, adapt: bool, beta):
        """:meth:`step` at inverse temperature ``beta`` (scalar or per chain)."""
        raise NotImplementedError

    def end_warmup(self, state):
        """Freeze the tuned step size at its dual-averaging average."""
        return state._replace(**da_finish(state))

    def run(self, state, rng: np.random.Generator, n_steps: int, beta=None):
        """``n_steps`` transitions without adaptation: ``(state, sums)``, ``sums`` the
        per-chain float64 sums over the transitions of every info field."""
        return run_steps(self, state, rng, n_steps, beta)


# Info fields that describe the state a transition ends in, not the transition: a run of
# several transitions reports the last one's value, not a sum (HMC's Hamiltonian at the draw,
# which ArviZ's BFMI reads from consecutive draws).
AT_DRAW = ("hamiltonian",)


def accumulate(sums: dict, info) -> dict:
    """Add one transition's ``info`` to ``sums``: per-chain sums, the last value of
    :data:`AT_DRAW` fields."""
    for name, value in zip(type(info)._fields, info, strict=True):
        value = np.asarray(value, dtype=np.float64)
        sums[name] = value if name in AT_DRAW else sums.get(name, 0.0) + value
    return sums


def run_steps(sampler, state, rng: np.random.Generator, n_steps: int, beta=None):
    """:meth:`Kernel.run` by ``n_steps`` calls of ``step`` (or ``step_at`` with ``beta``)."""
    sums: dict[str, Any] = {}
    for _ in range(int(n_steps)):
        if beta is None:
            state, info = sampler.step(state, rng, adapt=False)
        else:
            state, info = sampler.step_at(state, rng, False, beta)
        accumulate(sums, info)
    return state, sums
