"""MCMC kernels over a batch of chains, BlackJAX style.

``sampler = build(cfg["sampler"], target)`` gives an object with

- ``init(position (C, p), rng) -> state``
- ``step(state, rng, adapt: bool) -> (state, info)``: one transition of every chain
- ``end_warmup(state) -> state``: freeze the tuned parameters

``state`` and ``info`` are NamedTuples of numpy arrays with the chain as leading axis; ``state``
holds everything needed to continue, so a checkpoint is its fields plus
``rng.bit_generator.state`` and a resumed run is bit-identical. Every state has ``position``
``(C, p)``, ``U`` ``(C,)`` and ``log_step_size`` ``(C,)`` of the sample; every info has
``accept_prob`` and ``accepted`` ``(C,)``.

The target is duck-typed: any object with

- ``U(theta (C, p)) -> (C,)``: the energy; the density is ``exp(-beta * U)`` on the box
- ``U_and_grad(theta) -> (U (C,), dU (C, p))`` (MALA and HMC only)
- ``box``: the half-width ``L`` of ``[-L, L]^p``
- ``beta``: the inverse temperature (a float)

:class:`lossatlas.model.Target` is one; the tests use small analytic ones.

Base kernels also offer ``step_at(state, rng, adapt, beta)`` (``beta`` scalar or per chain),
which parallel tempering (:mod:`.tempering`) uses to run all replicas in one batch.

``backend: numba`` runs RWM and HMC on MLP targets as fused compiled kernels
(:mod:`.fused`) where they are the faster (small networks); other kinds and targets, and wide
networks, use these numpy kernels, which stay the reference. ``backend: cuda`` runs the same
fused code on a CUDA GPU (:mod:`.cuda`, RWM and HMC on MLP targets only; anything else is a
config error, as is a machine without a GPU).
"""

from __future__ import annotations

from .hmc import HMC, HMCInfo, HMCState
from .mala import MALA, MALAInfo, MALAState
from .rwm import RWM, RWMInfo, RWMState
from .tempering import Tempered

KINDS = {"rwm": RWM, "mala": MALA, "hmc": HMC}
BACKENDS = ("numpy", "numba", "cuda")
DEFAULT_BACKEND = "numba"  # keep equal to the schema's default
# Enters every checkpoint's settings hash: bump it whenever a kernel's numbers change for the same
# settings, so an old checkpoint is set aside instead of being continued by different code.
ALGORITHM_VERSION = 1

__all__ = [
    "HMC",
    "KINDS",
    "MALA",
    "RWM",
    "HMCInfo",
    "HMCState",
    "MALAInfo",
    "MALAState",
    "RWMInfo",
    "RWMState",
    "Tempered",
    "build",
]


def build(sampler_cfg: dict, target):
    """The kernel described by a (validated) ``sampler`` config section, for ``target``.

    Missing keys take the schema's defaults. ``tempering.n_temps > 1`` wraps the kernel in
    parallel tempering. ``backend: numba`` picks the fused kernel where one exists for the
    kind and target and is the faster for ``chains_per_batch`` chains (:func:`.fused.supports`:
    small networks), and the numpy kernel otherwise (wide networks, where BLAS wins).
    ``backend: cuda`` picks the CUDA kernels (:mod:`.cuda`) and raises
    :class:`lossatlas.config.ConfigError` before any work where there are none for the kind or
    target, or no usable GPU.
    """
    cfg = sampler_cfg
    kind = cfg.get("kind", "rwm")
    backend = cfg.get("backend", DEFAULT_BACKEND)
    if backend not in BACKENDS:
        raise ValueError(f"unknown sampler backend {backend!r}; use one of {', '.join(BACKENDS)}")
    rwm_cls, hmc_cls = RWM, HMC
    t = cfg.get("tempering", {})
    if backend == "cuda":
        rwm_cls, hmc_cls = _cuda_kernels(kind, target)
    elif backend == "numba" and kind in ("rwm", "hmc"):
        from . import fused  # numba only when asked for

        # tempering runs every replica of a batch's chains in one kernel call
        n_chains = cfg.get("chains_per_batch", 8) * max(t.get("n_temps", 1), 1)
        if fused.supports(target, n_chains):
            rwm_cls, hmc_cls = fused.FusedRWM, fused.FusedHMC
    common = dict(step_size=cfg.get("step_size", 0.1), dtype=cfg.get("dtype", "float64"))
    if kind == "rwm":
        base = rwm_cls(target, target_accept=cfg.get("target_accept", 0.234), **common)
    elif kind == "mala":
        m = cfg.get("mala", {})
        base = MALA(target, target_accept=m.get("target_accept", 0.574), **common)
    elif kind == "hmc":
        h = cfg.get("hmc", {})
        base = hmc_cls(
            target,
            target_accept=h.get("target_accept", 0.8),
            n_leapfrog=h.get("n_leapfrog", 10),
            mass_window=h.get("mass_window", 50),
            adapt_mass=h.get("adapt_mass", True),
            **common,
        )
    else:
        raise ValueError(f"unknown sampler kind {kind!r}; use one of {', '.join(KINDS)}")
    if t.get("n_temps", 1) <= 1:
        return base
    return Tempered(
        base,
        n_temps=t["n_temps"],
        beta_min=t.get("beta_min", 0.1),
        ladder=t.get("ladder", "geometric"),
        adapt_swap_rate=t.get("adapt_swap_rate", False),
        target_swap_rate=t.get("target_swap_rate", 0.3),
    )


def _cuda_kernels(kind: str, target):
    """The CUDA sampler classes ``(rwm, hmc)``, after checking they can run ``kind`` on
    ``target`` here (a config error naming the fix if not)."""
    from ..config import ConfigError
    from . import cuda, fused

    if kind not in ("rwm", "hmc") or not fused.evaluates(target):
        what = f"sampler.kind {kind}" if kind not in ("rwm", "hmc") else "this target"
        raise ConfigError(
            f"invalid config: sampler.backend cuda runs rwm and hmc on the MLP target only, and "
            f"{what} has no CUDA kernel; set sampler.backend to numba (or numpy) for it"
        )
    cuda.require()
    return cuda.CudaRWM, cuda.CudaHMC
