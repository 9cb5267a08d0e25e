"""RWM and HMC on MLP targets as CUDA kernels (``backend: cuda``).

One GPU thread per chain runs the transitions of :mod:`.fused` for its chain: the kernels call
the very functions the CPU kernels call (:func:`.fused.rwm_block`, :func:`.fused.hmc_block`,
and through them :mod:`lossatlas.fastmath`), which numba compiles for CUDA as device
functions, with a block of one chain (``c0 = chain``, ``n = 1``). So the algorithm, the
counter-based random numbers (SplitMix64 keyed per step, counted by chain and draw) and the
walls are the fused kernels', and a seed gives the same chains on both backends up to
floating-point rounding: bit for bit under numba's CUDA simulator (which runs those
functions as CPU code; tests/test_cuda.py), up to the GPU compiler's rounding (fused
multiply-adds, approximate division) on hardware, where a chain follows the CPU chain until a
Metropolis decision falls within rounding of its threshold.

Device memory: the state of every chain (position, U, gradient, ...; the host layout, chain
first), the scratch of the forward and backward passes (chain as the last, contiguous axis, so
a warp's accesses coalesce) and the data (global memory, read by every thread alike, so served
by the cache).

States, infos and the step-size and mass-matrix adaptation are the fused samplers' (host
numpy arrays), so checkpoints resume bit-exactly as before. ``step`` copies the state to the
GPU and back for every transition; :meth:`CudaRWM.run` does ``n`` transitions without
adaptation in one launch, the state staying on the GPU, which is where the GPU pays;
``engine.run_batch`` uses it for the ``thin`` transitions of every draw (warm-up still steps).

numba's CUDA target comes from the ``numba-cuda`` package (the ``cuda`` extra); numba's own
deprecated ``numba.cuda`` works too. :func:`unavailable` says why kernels cannot run here.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from lossatlas.sampling.fused import (
    DIVERGENCE,
    FusedHMC,
    FusedRWM,
    HMCInfo,
    RWMInfo,
    _beta_vector,
    _jit,
    hmc_scratch,
    hmc_steps,
    rwm_scratch,
    rwm_steps,
    workspace,
)

THREADS = 128  # threads per block
# numba.cuda, imported by kernels(): only a GPU run needs it. A module global, because the
# simulator swaps its stand-in for the module among the kernels' globals.
cuda = None


def unavailable() -> str | None:
    """Why the CUDA kernels cannot run in this process (``None`` if they can); no GPU work."""
    try:
        from numba import cuda
    except ImportError as e:  # pragma: no cover - numba without its CUDA target
        return f"numba's CUDA target cannot be imported ({e})"
    if not cuda.is_available():
        return "no CUDA GPU or driver is visible (numba.cuda.is_available() is False)"
    return None


# ---------------------------------------------------------------------------------------
# one thread: the chain ``ci`` of the arrays, which hold all chains (chain last in scratch)


@_jit
def _ws_of(ws, ci):
    """Chain ``ci``'s columns of an energy workspace (:func:`.fused.workspace`)."""
    H, D, DZ, T, e = ws
    j = slice(ci, ci + 1)
    return (H[:, :, j], D[:, :, j], DZ[:, :, j], T[:, j], e[j])


@_jit
def rwm_chain(ci, keys, pos, U, eps, beta, box, net, th, ub, ws, prob, acc, sums):
    """:func:`.fused.rwm_steps` of chain ``ci`` alone, on its columns of the scratch."""
    j = slice(ci, ci + 1)
    rwm_steps(keys, pos, U, eps, beta, box, net, ci, 1, th[:, j], ub[j], _ws_of(ws, ci), prob,
              acc, sums)  # fmt: skip


@_jit
def hmc_chain(
    ci, keys, pos, U, grad, eps, inv_mass, beta, n_leapfrog, box, net, hs, ws, info, sums
):
    """:func:`.fused.hmc_steps` of chain ``ci`` alone, on its columns of the scratch."""
    x, g, mom, im, eb, ep, ub, kin, h0, hits = hs
    j = slice(ci, ci + 1)
    hs1 = (x[:, j], g[:, j], mom[:, j], im[:, j], eb[j], ep[j], ub[j], kin[j], h0[j], hits[j])
    hmc_steps(keys, pos, U, grad, eps, inv_mass, beta, n_leapfrog, box, net, ci, 1, hs1,
              _ws_of(ws, ci), info, sums)  # fmt: skip


# ---------------------------------------------------------------------------------------
# kernels


def simulated() -> bool:
    """Whether numba's CUDA simulator stands in for the GPU (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


@njit(inline="always")
def _same(a):
    return a


def _simulator_array(a):
    # The simulator hands a kernel its arrays wrapped in its own type, which compiled
    # functions cannot take: give them the numpy array inside.
    return a._item._ary


@functools.cache
def kernels():
    """The CUDA kernels ``(rwm, hmc)``, compiled on first launch for the argument types."""
    global cuda
    from numba import cuda

    raw = _simulator_array if simulated() else _same

    @cuda.jit
    def rwm(keys, pos, U, eps, beta, box, X, y, layers, act, loss, scale, th, ub, H, D, DZ, T, e,
            prob, acc, sums):  # fmt: skip
        ci = cuda.grid(1)
        if ci < pos.shape[0]:
            net = (raw(X), raw(y), raw(layers), act, loss, scale)
            ws = (raw(H), raw(D), raw(DZ), raw(T), raw(e))
            rwm_chain(ci, raw(keys), raw(pos), raw(U), raw(eps), raw(beta), box, net, raw(th),
                      raw(ub), ws, raw(prob), raw(acc), raw(sums))  # fmt: skip

    @cuda.jit
    def hmc(keys, pos, U, grad, eps, inv_mass, beta, n_leapfrog, box, X, y, layers, act, loss,
            scale, x, g, mom, im, eb, ep, ub, kin, h0, hits, H, D, DZ, T, e, prob, acc, n_refl,
            err, ham, sums):  # fmt: skip
        ci = cuda.grid(1)
        if ci < pos.shape[0]:
            net = (raw(X), raw(y), raw(layers), act, loss, scale)
            hs = (raw(x), raw(g), raw(mom), raw(im), raw(eb), raw(ep), raw(ub), raw(kin), raw(h0),
                  raw(hits))  # fmt: skip
            ws = (raw(H), raw(D), raw(DZ), raw(T), raw(e))
            info = (raw(prob), raw(acc), raw(n_refl), raw(err), raw(ham))
            hmc_chain(ci, raw(keys), raw(pos), raw(U), raw(grad), raw(eps), raw(inv_mass),
                      raw(beta), n_leapfrog, box, net, hs, ws, info, raw(sums))  # fmt: skip

    return rwm, hmc


class _Device:
    """The network and data on the GPU, and the kernels' scratch."""

    def __init__(self, arch):
        from numba import cuda

        self.cuda = cuda
        self.arch = arch
        X, y, layers, act, loss, scale = arch.net
        self.net = (cuda.to_device(X), cuda.to_device(y), cuda.to_device(layers), act, loss, scale)
        self._scratch = {}

    def empty(self, shape, dtype):
        return self.cuda.device_array(shape, dtype=dtype)

    def scratch(self, kind, c):
        """``(kind's scratch, energy workspace)`` for ``c`` chains, shaped as the CPU kernels'
        block scratch with ``c`` columns; allocated once per chain count."""
        if (kind, c) not in self._scratch:
            a, dt = self.arch, self.arch.dtype
            own = (rwm_scratch if kind == "rwm" else hmc_scratch)(a.p, 1, dt)
            ws = workspace(a.layers.shape[0], a.maxw, 1, dt)
            # one chain count at a time: the engine keeps one per sampler
            self._scratch = {(kind, c): (self._columns(own, c), self._columns(ws, c))}
        return self._scratch[(kind, c)]

    def _columns(self, template, c):
        """Device arrays shaped as the one-chain host arrays ``template``, for ``c`` chains."""
        return tuple(self.empty((*t.shape[:-1], c), t.dtype) for t in template)

    def launch(self, kernel, c, *args):
        threads = min(THREADS, c)
        kernel[(c + threads - 1) // threads, threads](*args)
        self.cuda.synchronize()


def require() -> None:
    """Raise :class:`lossatlas.schema.ConfigError` if the CUDA kernels cannot run here."""
    why = unavailable()
    if why is not None:
        from lossatlas.schema import ConfigError

        raise ConfigError(
            f"invalid config: sampler.backend is cuda, but {why}. Run on a machine with an "
            "NVIDIA GPU, its driver and the cuda extra (pip install -e '.[cuda]'), or set "
            "sampler.backend to numba (the same kernels on the CPU)"
        )


def _device(sampler):
    require()
    return _Device(sampler.arch)


class CudaRWM(FusedRWM):
    """:class:`.fused.FusedRWM` with the transitions on a CUDA GPU."""

    def __init__(self, target, **kw):
        super().__init__(target, **kw)
        self.device = _device(self)

    def _launch(self, state, keys, beta):
        d, cuda = self.device, self.device.cuda
        x, u, eps = self.inputs(state)
        c = x.shape[0]
        pos, U = cuda.to_device(x), cuda.to_device(u)
        prob, acc = d.empty(c, "f8"), d.empty(c, "?")
        sums = cuda.to_device(np.zeros((len(RWMInfo._fields), c)))
        (th, ub), ws = d.scratch("rwm", c)
        rwm, _ = kernels()
        d.launch(rwm, c, cuda.to_device(keys), pos, U, cuda.to_device(eps),
                 cuda.to_device(_beta_vector(beta, c)), self.arch.box, *d.net, th, ub, *ws, prob,
                 acc, sums)  # fmt: skip
        new = dict(position=pos.copy_to_host(), U=U.copy_to_host())
        return new, RWMInfo(prob.copy_to_host(), acc.copy_to_host()), sums.copy_to_host()


class CudaHMC(FusedHMC):
    """:class:`.fused.FusedHMC` with the trajectories on a CUDA GPU."""

    def __init__(self, target, **kw):
        super().__init__(target, **kw)
        self.device = _device(self)

    def _launch(self, state, keys, beta):
        d, cuda = self.device, self.device.cuda
        x, u, g, inv_m, eps = self.inputs(state)
        c = x.shape[0]
        pos, U, grad = cuda.to_device(x), cuda.to_device(u), cuda.to_device(g)
        info = (
            d.empty(c, "f8"),
            d.empty(c, "?"),
            d.empty(c, "i8"),
            d.empty(c, "f8"),
            d.empty(c, "f8"),
        )
        sums = cuda.to_device(np.zeros((len(HMCInfo._fields), c)))
        hs, ws = d.scratch("hmc", c)
        _, hmc = kernels()
        d.launch(hmc, c, cuda.to_device(keys), pos, U, grad, cuda.to_device(eps),
                 cuda.to_device(inv_m), cuda.to_device(_beta_vector(beta, c)), self.n_leapfrog,
                 self.arch.box, *d.net, *hs, *ws, *info, sums)  # fmt: skip
        new = dict(position=pos.copy_to_host(), U=U.copy_to_host(), grad=grad.copy_to_host())
        prob, acc, n_refl, err, ham = (a.copy_to_host() for a in info)
        info = HMCInfo(prob, acc, n_refl, ~(err < DIVERGENCE), err, ham)
        return new, info, sums.copy_to_host()
