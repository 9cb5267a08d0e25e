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
config error, as is a machine without a GPU). ``backend: jax`` evaluates the network with JAX
(:mod:`lossatlas.model.jaxnet`) and runs RWM's transitions as one compiled scan
(:mod:`.jax_rwm`), the numpy kernel's chains to the rounding of U; MALA and HMC take JAX's
gradients in their numpy kernels.
"""

from __future__ import annotations

from lossatlas.sampling.hmc import HMC, HMCInfo, HMCState
from lossatlas.sampling.mala import MALA, MALAInfo, MALAState
from lossatlas.sampling.rwm import RWM, RWMInfo, RWMState
from lossatlas.sampling.tempering import Tempered
from lossatlas.schema import section

KINDS = {"rwm": RWM, "mala": MALA, "hmc": HMC}
BACKENDS = ("numpy", "numba", "cuda", "jax")
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


def build(sampler_settings: dict, target):
    """The kernel described by ``sampler`` settings (see config/README.md), for ``target``.

    Keys left out take the schema's defaults (:func:`lossatlas.schema.section`), and the
    settings are validated. ``tempering.n_temps > 1`` wraps the kernel in parallel tempering.
    ``backend: numba`` picks the fused kernel where one exists for the kind and target and is
    the faster for ``chains_per_batch`` chains (:func:`.fused.supports`: small networks), and
    the numpy kernel otherwise (wide networks, where BLAS wins). ``backend: cuda`` picks the
    CUDA kernels (:mod:`.cuda`) and raises :class:`lossatlas.schema.ConfigError` before any
    work where there are none for the kind or target, or no usable GPU.
    """
    cfg = section("sampler", sampler_settings)
    kind, backend, t = cfg["kind"], cfg["backend"], cfg["tempering"]
    rwm_cls, hmc_cls = RWM, HMC
    if backend == "cuda":
        rwm_cls, hmc_cls = _cuda_kernels(kind, target)
    elif backend == "jax":
        rwm_cls, target = _jax_kernel(target)
    elif backend == "numba" and kind in ("rwm", "hmc"):
        from lossatlas.sampling import fused  # numba only when asked for

        # tempering runs every replica of a batch's chains in one kernel call
        n_chains = cfg["chains_per_batch"] * max(t["n_temps"], 1)
        if fused.supports(target, n_chains):
            rwm_cls, hmc_cls = fused.FusedRWM, fused.FusedHMC
    common = dict(step_size=cfg["step_size"], dtype=cfg["dtype"])
    if kind == "rwm":
        base = rwm_cls(target, target_accept=cfg["target_accept"], **common)
    elif kind == "mala":
        base = MALA(target, target_accept=cfg["mala"]["target_accept"], **common)
    else:  # hmc: the schema admits no other kind
        h = cfg["hmc"]
        base = hmc_cls(
            target,
            target_accept=h["target_accept"],
            n_leapfrog=h["n_leapfrog"],
            mass_window=h["mass_window"],
            adapt_mass=h["adapt_mass"],
            **common,
        )
    if t["n_temps"] <= 1:
        return base
    return Tempered(
        base,
        n_temps=t["n_temps"],
        beta_min=t["beta_min"],
        ladder=t["ladder"],
        adapt_swap_rate=t["adapt_swap_rate"],
        target_swap_rate=t["target_swap_rate"],
    )


def _jax_kernel(target):
    """The compiled RWM of ``backend: jax`` and the JAX twin of ``target`` (an MLP target, or
    a :class:`~lossatlas.model.jaxnet.JaxTarget` already); MALA and HMC run their numpy
    kernels on it, with JAX's gradients."""
    from lossatlas.model import jaxnet
    from lossatlas.schema import ConfigError

    if not jaxnet.available():
        raise ConfigError(
            'invalid config: sampler.backend: jax needs JAX: pip install -e ".[jax]" (or set '
            "sampler.backend to numba)"
        )
    from lossatlas.sampling.jax_rwm import JaxRWM

    return JaxRWM, target if isinstance(target, jaxnet.JaxTarget) else jaxnet.target_of(target)


def _cuda_kernels(kind: str, target):
    """The CUDA sampler classes ``(rwm, hmc)``, after checking they can run ``kind`` on
    ``target`` here (a config error naming the fix if not)."""
    from lossatlas.sampling import cuda, fused
    from lossatlas.schema import ConfigError

    if kind not in ("rwm", "hmc") or not fused.evaluates(target):
        what = f"sampler.kind {kind}" if kind not in ("rwm", "hmc") else "this target"
        raise ConfigError(
            f"invalid config: sampler.backend cuda runs rwm and hmc on the MLP target only, and "
            f"{what} has no CUDA kernel; set sampler.backend to numba (or numpy) for it"
        )
    cuda.require()
    return cuda.CudaRWM, cuda.CudaHMC
