"""MCMC kernels over a batch of chains, BlackJAX style.

``sampler = build(cfg["sampler"], target)`` gives an object with

- ``init(position (C, p), rng) -> state``
- ``step(state, rng, adapt: bool) -> (state, info)``: one transition of every chain
- ``end_warmup(state) -> state``: freeze the tuned parameters

``state`` and ``info`` are NamedTuples of numpy arrays with the chain as leading axis; ``state``
holds everything needed to continue, so a checkpoint is its fields plus
``rng.bit_generator.state`` and a resumed run is bit-identical.

The target is duck-typed: any object with

- ``U(theta (C, p)) -> (C,)``: the energy; the density is ``exp(-beta * U)`` on the box
- ``U_and_grad(theta) -> (U (C,), dU (C, p))`` (gradient kernels only)
- ``box``: the half-width ``L`` of ``[-L, L]^p``
- ``beta``: the inverse temperature

:class:`lossatlas.model.Target` is one; the tests use small analytic ones.
"""

from __future__ import annotations

from .rwm import RWM, RWMInfo, RWMState

KINDS = {"rwm": RWM}

__all__ = ["KINDS", "RWM", "RWMInfo", "RWMState", "build"]


def build(sampler_cfg: dict, target):
    """The kernel named by ``sampler_cfg["kind"]`` for ``target``."""
    kind = sampler_cfg.get("kind", "rwm")
    if kind not in KINDS:
        raise ValueError(f"unknown sampler kind {kind!r}; use one of {', '.join(KINDS)}")
    return KINDS[kind](
        target,
        step_size=sampler_cfg.get("step_size", 0.1),
        target_accept=sampler_cfg.get("target_accept", 0.234),
        dtype=sampler_cfg.get("dtype", "float64"),
    )
