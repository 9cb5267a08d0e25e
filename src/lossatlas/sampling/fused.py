"""RWM and HMC on MLP targets as fused numba kernels (``backend: numba``).

One compiled call does a whole transition of every chain: proposal, forward pass (and
backpropagation for HMC), energy, and the accept/reject. Chains sit on the innermost,
contiguous axis of block-local scratch arrays (blocks of ``BLOCK`` chains, ``prange`` over
blocks), so LLVM vectorises every loop across chains; the transcendental functions come from
:mod:`lossatlas.fastmath` for the same reason.

Same contract as the numpy kernels: the states are :class:`~.rwm.RWMState` and
:class:`~.hmc.HMCState`, the step size and mass-matrix adaptation are the numpy code's, and
``step`` is a pure function of ``(state, rng)``. The random numbers of a transition are
SplitMix64 outputs keyed by one 64-bit word drawn from ``rng`` and counted by (chain, draw),
so a checkpoint (state fields + ``rng`` state) resumes bit-exactly, and the result does not
depend on the number of threads (blocks are fixed; each chain's numbers are its own).
The streams differ from the numpy backend's, so the two backends give different (equally
valid) chains for one seed.

Supported: :class:`lossatlas.model.Target` with any depth/width, every activation and loss
of :mod:`lossatlas.model`, float32 and float64. Anything else (other targets, MALA) uses the
numpy kernels, and so do networks too wide for the chain batch, where BLAS is faster;
:func:`supports` says which.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lossatlas import fastmath as fm
from lossatlas.model.network import ACTIVATIONS, LABEL_LOSSES, Target
from lossatlas.sampling._common import DA_GAMMA, DA_KAPPA, DA_T0, da_init
from lossatlas.sampling.hmc import DIVERGENCE, HMC, HMCInfo
from lossatlas.sampling.rwm import RWM, RWMInfo

BLOCK = 128  # chains per block: fixed, so results never depend on the thread count
_ACT = {name: i for i, name in enumerate(ACTIVATIONS)}  # tanh relu sigmoid linear quadratic
_LOSS = {name: i for i, name in enumerate(LABEL_LOSSES)}  # cross_entropy squared

# nogil: a worker thread in the sampling job's process (one local worker) leaves the job's
# other threads (the Dask event loop, sampler.until's check) running while it samples
_jit = njit(fastmath=fm.FASTMATH, cache=True, error_model="numpy", nogil=True)
_pjit = njit(fastmath=fm.FASTMATH, cache=True, error_model="numpy", parallel=True, nogil=True)
_inl = njit(fastmath=fm.FASTMATH, cache=True, error_model="numpy", inline="always")


# The fused kernels win on small networks (no per-call overhead, SIMD across chains) and lose
# to BLAS gemm on wide ones. Measured crossover (energy evaluations/s, one thread each,
# benchmarks/bench_grad.py --crossover) in multiply-adds x 2 per chain-energy: ~1.3e4 at 8
# chains, ~1.5e5 at 32, ~8e6 at 128, i.e. about FUSED_FLOPS_AT_8 * (chains / 8)^2; beyond one
# block of chains the fused rate per chain stops growing. 64 -> [384, 192] -> 10 on 1797 points
# (3.6e8) was 80x slower fused; the report's 2 -> [2, 2] -> 2 on 10 points (240) 5-14x faster.
FUSED_FLOPS_AT_8 = 1.5e4


def energy_flops(target) -> float:
    """Floating-point operations of one chain's energy: 2 per multiply-add of the layers."""
    return 2.0 * target.X.shape[0] * target.mlp.layout.flops_per_point()


def max_fused_flops(n_chains: int) -> float:
    """Largest per-chain energy cost at which the fused kernel beats numpy for ``n_chains``."""
    c = min(max(int(n_chains), 1), BLOCK)
    return FUSED_FLOPS_AT_8 * (c / 8) ** 2


def evaluates(target) -> bool:
    """Whether the fused code (CPU or CUDA) can evaluate this target: an MLP target."""
    mlp = getattr(target, "mlp", None)
    return (
        mlp is not None
        and hasattr(mlp, "layout")
        and getattr(mlp, "activation", None) in _ACT
        and getattr(mlp, "loss", None) in _LOSS
        and mlp.layout.has_all_biases
        and getattr(target, "energy", None) in ("sum", "mean")
        and hasattr(target, "X")
        and hasattr(target, "y")
    )


def supports(target, n_chains: int = 8) -> bool:
    """Whether the fused kernels evaluate this target, and faster than the numpy kernels for a
    batch of ``n_chains`` (else the numpy kernels are used)."""
    return evaluates(target) and energy_flops(target) <= max_fused_flops(n_chains)


class Arch:
    """A target's network as plain arrays for the kernels."""

    def __init__(self, target, dtype):
        mlp = target.mlp
        self.dtype = np.dtype(dtype)
        self.p = mlp.p
        self.layers = mlp.layout.table()
        self.maxw = int(max(mlp.sizes))
        self.act = _ACT[mlp.activation]
        self.loss = _LOSS[mlp.loss]
        n = target.X.shape[0]
        self.scale = 1.0 / n if target.energy == "mean" else 1.0
        self.X = np.ascontiguousarray(target.X, dtype=self.dtype)
        self.y = np.ascontiguousarray(target.y, dtype=np.int64)
        self.box = self.dtype.type(target.box)

    @property
    def net(self):
        """The network and data as the kernels take them: ``(X, y, layers, act, loss, scale)``."""
        return (self.X, self.y, self.layers, self.act, self.loss, self.scale)

    def U_and_grad(self, theta, want_grad=True):
        """Energy ``(C,)`` (and gradient ``(C, p)``) by the fused code, in ``self.dtype``."""
        theta = np.ascontiguousarray(theta, dtype=self.dtype)
        u = np.empty(theta.shape[0], dtype=self.dtype)
        g = np.empty_like(theta) if want_grad else np.empty((0, self.p), self.dtype)
        kernel = _energy_kernel if theta.shape[0] > BLOCK else _energy_one_block
        kernel(theta, want_grad, self.net, self.maxw, u, g)
        return u, (g if want_grad else None)


# One point's energy and gradient (an optimiser's call): the fused code's one compiled call
# beats numpy's ~30 array calls up to about this many flops per chain (one thread, float64:
# 12 against 65 us at 240 flops, 327 against 76 us at 12,800; measured at 1, 2 and 8 points).
POINT_FLOPS = 2e3


class CompiledTarget(Target):
    """``target`` with ``U`` and ``U_and_grad`` computed by the fused code (the same function,
    other rounding: fastmath transcendentals and fused multiply-adds)."""

    def __init__(self, target):
        self.__dict__.update(target.__dict__)
        self._arch = {}

    def _fused(self, theta):
        theta, _ = self._inputs(theta)
        arch = self._arch.get(theta.dtype)
        if arch is None:
            arch = self._arch[theta.dtype] = Arch(self, theta.dtype)
        return arch, theta

    def U(self, theta):
        arch, theta = self._fused(theta)
        return arch.U_and_grad(theta, want_grad=False)[0]

    def U_and_grad(self, theta):
        arch, theta = self._fused(theta)
        return arch.U_and_grad(theta)


def for_optimisers(target):
    """``target``, as a :class:`CompiledTarget` where the fused code evaluates single points
    faster (:data:`POINT_FLOPS`): the analyses call U and its gradient point by point."""
    if evaluates(target) and energy_flops(target) <= POINT_FLOPS:
        return CompiledTarget(target)
    return target


# ---------------------------------------------------------------------------------------
# block pieces: arrays (rows, BLOCK) with the chains of one block along the last axis


@_jit
def _fold(v, box):
    """Mirror ``v`` into ``[-box, box]``: ``(position, crossed an odd number of walls,
    number of wall crossings)``. Same fold as ``_common.reflect``."""
    two = box + box
    s = v + box
    k = fm.floor(s / two)
    r = min(max(s - k * two, fm.like(box, 0)), two)
    odd = k - fm.like(box, 2) * fm.floor(k * fm.like(box, 0.5)) != fm.like(box, 0)
    return (box - r if odd else r - box), odd, abs(k)


@_jit
def _activate(act, row, drow, n, want_d):
    """``row = act(row)`` in place; ``drow = act'`` (from the pre-activation) if ``want_d``.
    The branch sits outside the chain loops, so each loop is straight-line and vectorises."""
    one = fm.like(row[0], 1)
    half = fm.like(row[0], 0.5)
    if act == 0:  # tanh
        for c in range(n):
            a = fm.tanh(row[c])
            row[c] = a
            if want_d:
                drow[c] = one - a * a
    elif act == 1:  # relu
        for c in range(n):
            z = row[c]
            if want_d:
                drow[c] = one if z > 0 else fm.like(z, 0)
            row[c] = max(z, fm.like(z, 0))
    elif act == 2:  # sigmoid, in numpy's tanh form
        for c in range(n):
            a = half * (one + fm.tanh(half * row[c]))
            row[c] = a
            if want_d:
                drow[c] = a * (one - a)
    elif act == 3:  # linear
        if want_d:
            for c in range(n):
                drow[c] = one
    else:  # quadratic
        for c in range(n):
            z = row[c]
            if want_d:
                drow[c] = z + z
            row[c] = z * z


@_jit
def _block_forward(th, n, xk, layers, act, H, D, want_d):
    """Forward pass of one input point ``xk`` for the block's chains: ``H[l]`` holds the
    outputs of layer ``l`` (``H[n_layers - 1]`` the logits), ``D[l]`` the activation slopes."""
    n_layers = layers.shape[0]
    for li in range(n_layers):
        w0, b0, n_out, n_in = layers[li, 0], layers[li, 1], layers[li, 2], layers[li, 3]
        for o in range(n_out):
            row = H[li, o]
            brow = th[b0 + o]
            for c in range(n):
                row[c] = brow[c]
            for j in range(n_in):
                wrow = th[w0 + o * n_in + j]
                if li == 0:
                    xv = xk[j]
                    for c in range(n):
                        row[c] += wrow[c] * xv
                else:
                    hin = H[li - 1, j]
                    for c in range(n):
                        row[c] += wrow[c] * hin[c]
            if li < n_layers - 1:
                _activate(act, row, D[li, o], n, want_d)


@_jit
def _block_loss(lo, k, yk, loss, scale, n, out, dlo, T, want_d):
    """Add ``scale * loss`` of logits ``lo (k, B)`` against label ``yk`` to ``out`` (float64);
    ``dlo`` gets ``scale * dloss/dlogits`` if ``want_d``. ``T (2, B)`` is scratch."""
    one = fm.like(lo[0, 0], 1)
    sc = fm.like(lo[0, 0], scale)
    if loss == 1:  # squared
        for cl in range(k):
            t = one if cl == yk else fm.like(one, 0)
            for c in range(n):
                r = lo[cl, c] - t
                out[c] += scale * np.float64(r * r)
                if want_d:
                    dlo[cl, c] = sc * (r + r)
    elif k == 2:
        # softplus of the logit margin: one exp and one log per point
        oy, ot = lo[yk], lo[1 - yk]
        for c in range(n):
            d = ot[c] - oy[c]
            t = fm.exp(-abs(d))
            out[c] += scale * np.float64(max(d, fm.like(d, 0)) + fm.log1p_small(t))
            if want_d:
                s = (one if d >= 0 else t) / (one + t)  # sigmoid(d)
                dlo[1 - yk, c] = sc * s
                dlo[yk, c] = -sc * s
    else:
        m, s = T[0], T[1]
        for c in range(n):
            m[c] = lo[0, c]
        for cl in range(1, k):
            for c in range(n):
                m[c] = max(m[c], lo[cl, c])
        for c in range(n):
            s[c] = fm.like(one, 0)
        for cl in range(k):
            for c in range(n):
                e = fm.exp(lo[cl, c] - m[c])
                s[c] += e
                if want_d:
                    dlo[cl, c] = e
        oy = lo[yk]
        for c in range(n):
            out[c] += scale * np.float64(m[c] + fm.log(s[c]) - oy[c])
        if want_d:
            for cl in range(k):
                for c in range(n):
                    dlo[cl, c] = sc * (dlo[cl, c] / s[c] - (one if cl == yk else fm.like(one, 0)))


@_jit
def workspace(n_layers, maxw, width, dt):
    """Scratch of :func:`_block_energy` for ``width`` chains: ``(H, D, DZ, T, out)``."""
    return (
        np.empty((n_layers, maxw, width), dt),
        np.empty((n_layers, maxw, width), dt),
        np.empty((2, maxw, width), dt),
        np.empty((2, width), dt),
        np.empty(width),
    )


@_jit
def _block_energy(th, n, net, ws, G, want_grad):
    """Energy (float64, into ``ws[4]``) and, if ``want_grad``, its gradient (into ``G``) of the
    block's chains ``th (p, B)`` (columns ``[0, n)``); ``ws`` from :func:`workspace`."""
    X, y, layers, act, loss, scale = net
    H, D, DZ, T, out = ws
    n_layers = layers.shape[0]
    k = layers[n_layers - 1, 2]
    for c in range(n):
        out[c] = 0.0
    if want_grad:
        for i in range(th.shape[0]):
            for c in range(n):
                G[i, c] = fm.like(th[0, 0], 0)
    for pt in range(X.shape[0]):
        xk = X[pt]
        _block_forward(th, n, xk, layers, act, H, D, want_grad)
        _block_loss(H[n_layers - 1], k, y[pt], loss, scale, n, out, DZ[0], T, want_grad)
        if not want_grad:
            continue
        cur = 0
        for li in range(n_layers - 1, -1, -1):
            w0, b0, n_out, n_in = layers[li, 0], layers[li, 1], layers[li, 2], layers[li, 3]
            dz = DZ[cur]
            if li < n_layers - 1:
                for o in range(n_out):
                    zr, dr = dz[o], D[li, o]
                    for c in range(n):
                        zr[c] *= dr[c]
            for o in range(n_out):
                zr = dz[o]
                gb = G[b0 + o]
                for c in range(n):
                    gb[c] += zr[c]
                for j in range(n_in):
                    gw = G[w0 + o * n_in + j]
                    if li == 0:
                        xv = xk[j]
                        for c in range(n):
                            gw[c] += zr[c] * xv
                    else:
                        hin = H[li - 1, j]
                        for c in range(n):
                            gw[c] += zr[c] * hin[c]
            if li > 0:
                nxt = DZ[1 - cur]
                for j in range(n_in):
                    hr = nxt[j]
                    for c in range(n):
                        hr[c] = fm.like(th[0, 0], 0)
                    for o in range(n_out):
                        wrow = th[w0 + o * n_in + j]
                        zr = dz[o]
                        for c in range(n):
                            hr[c] += wrow[c] * zr[c]
                cur = 1 - cur


@_jit
def _load(src, c0, n, dst):
    """``dst[:, :n] = src[c0:c0 + n].T``: rows of a ``(C, p)`` array into a block."""
    for j in range(src.shape[1]):
        for c in range(n):
            dst[j, c] = src[c0 + c, j]


@_jit
def _store(src, c0, n, dst):
    for j in range(dst.shape[1]):
        for c in range(n):
            dst[c0 + c, j] = src[j, c]


# ---------------------------------------------------------------------------------------
# kernels over all chains


@_inl
def _energy_block(theta, blk, want_grad, net, maxw, u_out, g_out):
    C, p = theta.shape
    c0 = blk * BLOCK
    n = min(BLOCK, C - c0)
    th = np.empty((p, BLOCK), theta.dtype)
    G = np.empty((p, BLOCK), theta.dtype)
    ws = workspace(net[2].shape[0], maxw, BLOCK, theta.dtype)
    e = ws[4]
    _load(theta, c0, n, th)
    _block_energy(th, n, net, ws, G, want_grad)
    for c in range(n):
        u_out[c0 + c] = e[c]
    if want_grad:
        _store(G, c0, n, g_out)


@_pjit
def _energy_kernel(theta, want_grad, net, maxw, u_out, g_out):
    for blk in prange((theta.shape[0] + BLOCK - 1) // BLOCK):
        _energy_block(theta, blk, want_grad, net, maxw, u_out, g_out)


@_jit
def _energy_one_block(theta, want_grad, net, maxw, u_out, g_out):
    """:func:`_energy_kernel` for at most ``BLOCK`` points, without waking the thread pool
    (an optimiser calls it point by point)."""
    _energy_block(theta, 0, want_grad, net, maxw, u_out, g_out)


@_jit
def _accept(key, ci, stride, lr):
    """Metropolis decision for chain ``ci`` with log ratio ``lr``: ``(accept_prob, accepted)``;
    NaN rejects. The uniform is the chain's last random word of the step."""
    lr = -np.inf if lr != lr else lr
    prob = fm.exp64(min(lr, 0.0))
    r = fm.counter_u64(key, np.uint64(ci) * np.uint64(stride) + np.uint64(stride - 1))
    u = np.float64(np.int64(r >> np.uint64(11))) * (1.0 / 9007199254740992.0)  # [0, 1)
    return prob, u < prob


@_jit
def _normals(key, c0, n, p, Z):
    """Standard normals ``Z (p, B)`` of chains ``c0 .. c0 + n``: words ``2j, 2j + 1`` of a
    chain give coordinates ``2j, 2j + 1``. (Straight loops without a branch on the pair:
    a branch there keeps LLVM from vectorising.)"""
    stride = np.uint64(2 * ((p + 1) // 2) + 1)
    like_x = Z[0, 0]
    for j in range(p // 2):
        off = np.uint64(2 * j)
        for c in range(n):
            base = np.uint64(c0 + c) * stride + off
            z0, z1 = fm.normal_pair(
                fm.counter_u64(key, base), fm.counter_u64(key, base + np.uint64(1)), like_x
            )
            Z[2 * j, c] = z0
            Z[2 * j + 1, c] = z1
    if p % 2:
        off = np.uint64(p - 1)
        for c in range(n):
            base = np.uint64(c0 + c) * stride + off
            z0, _ = fm.normal_pair(
                fm.counter_u64(key, base), fm.counter_u64(key, base + np.uint64(1)), like_x
            )
            Z[p - 1, c] = z0


@_jit
def rwm_block(pos, U, eps, beta, key, box, net, c0, n, th, ub, ws, new_pos, new_U, prob, acc):
    """One RWM transition of chains ``c0 .. c0 + n`` of ``pos (C, p)``, with block scratch
    ``th (p, B)``, ``ub (B,)`` and ``ws``. The CPU kernel calls it per block of ``BLOCK``
    chains, the CUDA kernel per chain (``n = 1``). ``new_pos`` may be ``pos`` (in place)."""
    p = pos.shape[1]
    stride = 2 * ((p + 1) // 2) + 1
    e = ws[4]
    _normals(key, c0, n, p, th)
    for j in range(p):
        row = th[j]
        for c in range(n):
            row[c] = _fold(pos[c0 + c, j] + eps[c0 + c] * row[c], box)[0]
    _block_energy(th, n, net, ws, th, False)
    for c in range(n):
        ub[c] = e[c]  # rounded to the state's dtype, as the numpy target returns it
    for c in range(n):
        ci = c0 + c
        lr = -beta[ci] * (np.float64(ub[c]) - np.float64(U[ci]))
        pr, a = _accept(key, ci, stride, lr)
        prob[ci] = pr
        acc[ci] = a
        new_U[ci] = ub[c] if a else U[ci]
    for j in range(p):
        row = th[j]
        for c in range(n):
            ci = c0 + c
            new_pos[ci, j] = row[c] if acc[ci] else pos[ci, j]


@_jit
def rwm_scratch(p, width, dt):
    """Scratch of :func:`rwm_block` for ``width`` chains: ``(th (p, B), ub (B,))``."""
    return np.empty((p, width), dt), np.empty(width, dt)


@_jit
def rwm_steps(keys, pos, U, eps, beta, box, net, c0, n, th, ub, ws, prob, acc, sums):
    """``len(keys)`` RWM transitions of chains ``c0 .. c0 + n`` of ``pos`` and ``U``, in
    place; adds each transition's infos to ``sums (2, C)``, in order, as ``run_steps`` does."""
    for s in range(keys.shape[0]):
        rwm_block(pos, U, eps, beta, keys[s], box, net, c0, n, th, ub, ws, pos, U, prob, acc)
        for c in range(n):
            ci = c0 + c
            sums[0, ci] += prob[ci]
            sums[1, ci] += 1.0 if acc[ci] else 0.0


@_pjit
def _rwm_kernel(keys, pos, U, eps, beta, box, net, maxw, prob, acc, sums):
    C, p = pos.shape
    for blk in prange((C + BLOCK - 1) // BLOCK):
        c0 = blk * BLOCK
        n = min(BLOCK, C - c0)
        th, ub = rwm_scratch(p, BLOCK, pos.dtype)
        ws = workspace(net[2].shape[0], maxw, BLOCK, pos.dtype)
        rwm_steps(keys, pos, U, eps, beta, box, net, c0, n, th, ub, ws, prob, acc, sums)


@_jit
def _rwm_one_block(keys, pos, U, eps, beta, box, net, maxw, prob, acc, sums):
    """:func:`_rwm_kernel` for at most ``BLOCK`` chains: the same numbers, without waking the
    thread pool, which costs more than a transition of a few chains."""
    th, ub = rwm_scratch(pos.shape[1], BLOCK, pos.dtype)
    ws = workspace(net[2].shape[0], maxw, BLOCK, pos.dtype)
    rwm_steps(keys, pos, U, eps, beta, box, net, 0, pos.shape[0], th, ub, ws, prob, acc, sums)


@_jit
def hmc_scratch(p, width, dt):
    """Scratch of :func:`hmc_block` for ``width`` chains:
    ``(x, g, mom, im (p, B), eb, ep, ub (B,), kin, h0 (B,) float64, hits (B,) int64)``."""
    return (
        np.empty((p, width), dt),
        np.empty((p, width), dt),
        np.empty((p, width), dt),
        np.empty((p, width), dt),
        np.empty(width, dt),
        np.empty(width, dt),
        np.empty(width, dt),
        np.empty(width),
        np.empty(width),
        np.empty(width, np.int64),
    )


@_jit
def hmc_block(pos, U, grad, eps, inv_mass, beta, n_leapfrog, key, box, net, c0, n, hs, ws, out):
    """One HMC trajectory of chains ``c0 .. c0 + n`` (see :func:`rwm_block`), scratch ``hs``
    from :func:`hmc_scratch`; ``out = (new_pos, new_U, new_grad, prob, acc, n_refl, err,
    ham)``, ``ham`` the Hamiltonian at the state the trajectory ends in."""
    x, g, mom, im, eb, ep, ub, kin, h0, hits = hs
    new_pos, new_U, new_grad, prob, acc, n_refl, err, ham = out
    e = ws[4]
    p = pos.shape[1]
    stride = 2 * ((p + 1) // 2) + 1
    _load(pos, c0, n, x)
    _load(grad, c0, n, g)
    _load(inv_mass, c0, n, im)
    _normals(key, c0, n, p, mom)
    half = fm.like(box, 0.5)
    for c in range(n):
        ep[c] = eps[c0 + c]
        eb[c] = eps[c0 + c] * beta[c0 + c]
        kin[c] = 0.0
        hits[c] = 0
    for j in range(p):
        mr, ir, gr = mom[j], im[j], g[j]
        for c in range(n):
            m = mr[c] / fm.sqrt(ir[c])
            kin[c] += np.float64(m * m * ir[c])
            mr[c] = m - half * eb[c] * gr[c]
    for c in range(n):
        h0[c] = beta[c0 + c] * np.float64(U[c0 + c]) + 0.5 * kin[c]
    for i in range(n_leapfrog):
        for j in range(p):
            xr, mr, ir = x[j], mom[j], im[j]
            for c in range(n):
                v, odd, k = _fold(xr[c] + ep[c] * ir[c] * mr[c], box)
                xr[c] = v
                mr[c] = -mr[c] if odd else mr[c]
                hits[c] += np.int64(min(k, fm.like(box, 2.0**40)))
        _block_energy(x, n, net, ws, g, True)
        f = half if i == n_leapfrog - 1 else fm.like(box, 1)
        for j in range(p):
            mr, gr = mom[j], g[j]
            for c in range(n):
                mr[c] -= f * eb[c] * gr[c]
    for c in range(n):
        ub[c] = e[c]
        kin[c] = 0.0
    for j in range(p):
        mr, ir = mom[j], im[j]
        for c in range(n):
            kin[c] += np.float64(mr[c] * mr[c] * ir[c])
    for c in range(n):
        ci = c0 + c
        d = beta[ci] * np.float64(ub[c]) + 0.5 * kin[c] - h0[c]
        err[ci] = d
        pr, a = _accept(key, ci, stride, -d)
        prob[ci] = pr
        acc[ci] = a
        n_refl[ci] = hits[c]
        new_U[ci] = ub[c] if a else U[ci]
        ham[ci] = h0[c] + d if a else h0[c]
    for j in range(p):
        xr, gr = x[j], g[j]
        for c in range(n):
            ci = c0 + c
            a = acc[ci]
            new_pos[ci, j] = xr[c] if a else pos[ci, j]
            new_grad[ci, j] = gr[c] if a else grad[ci, j]


@_jit
def hmc_steps(keys, pos, U, grad, eps, inv_mass, beta, n_leapfrog, box, net, c0, n, hs, ws, info,
              sums):  # fmt: skip
    """``len(keys)`` HMC trajectories of chains ``c0 .. c0 + n`` in place (see
    :func:`rwm_steps`); ``info = (prob, acc, n_refl, err, ham)`` of the last, ``sums (6, C)``
    (the Hamiltonian's row holds the last value: :data:`.base.AT_DRAW`)."""
    prob, acc, n_refl, err, ham = info
    out = (pos, U, grad, prob, acc, n_refl, err, ham)
    for s in range(keys.shape[0]):
        hmc_block(pos, U, grad, eps, inv_mass, beta, n_leapfrog, keys[s], box, net, c0, n, hs,
                  ws, out)  # fmt: skip
        for c in range(n):
            ci = c0 + c
            sums[0, ci] += prob[ci]
            sums[1, ci] += 1.0 if acc[ci] else 0.0
            sums[2, ci] += np.float64(n_refl[ci])
            sums[3, ci] += 0.0 if err[ci] < DIVERGENCE else 1.0
            sums[4, ci] += err[ci]
            sums[5, ci] = ham[ci]


@_pjit
def _hmc_kernel(keys, pos, U, grad, eps, inv_mass, beta, n_leapfrog, box, net, maxw, info, sums):
    C, p = pos.shape
    for blk in prange((C + BLOCK - 1) // BLOCK):
        c0 = blk * BLOCK
        n = min(BLOCK, C - c0)
        hs = hmc_scratch(p, BLOCK, pos.dtype)
        ws = workspace(net[2].shape[0], maxw, BLOCK, pos.dtype)
        hmc_steps(keys, pos, U, grad, eps, inv_mass, beta, n_leapfrog, box, net, c0, n, hs, ws,
                  info, sums)  # fmt: skip


@_jit
def _hmc_one_block(keys, pos, U, grad, eps, inv_mass, beta, n_leapfrog, box, net, maxw, info,
                   sums):  # fmt: skip
    """:func:`_hmc_kernel` for at most ``BLOCK`` chains (see :func:`_rwm_one_block`)."""
    hs = hmc_scratch(pos.shape[1], BLOCK, pos.dtype)
    ws = workspace(net[2].shape[0], maxw, BLOCK, pos.dtype)
    hmc_steps(keys, pos, U, grad, eps, inv_mass, beta, n_leapfrog, box, net, 0, pos.shape[0], hs,
              ws, info, sums)  # fmt: skip


@_jit
def _da_kernel(prob, target, log_max, count, h_bar, mu, avg, o_log_eps, o_avg, o_h_bar, o_count):
    """``_common.da_update`` in one pass (the numpy version's dozen array operations cost a
    quarter of a warm-up step at 4096 chains); ``t^-kappa`` via the polynomial exp/log."""
    for c in range(prob.shape[0]):
        a = prob[c] if prob[c] == prob[c] else 0.0
        t = count[c] + 1
        tf = np.float64(t)
        eta = 1.0 / (tf + DA_T0)
        hb = (1 - eta) * h_bar[c] + eta * (target - a)
        le = min(mu[c] - np.sqrt(tf) / DA_GAMMA * hb, log_max)
        w = fm.exp64(-DA_KAPPA * fm.log64(tf))
        o_log_eps[c] = le
        o_avg[c] = w * le + (1 - w) * avg[c]
        o_h_bar[c] = hb
        o_count[c] = t


def da_update(state, accept_prob, target_accept, max_step):
    """Dual averaging of the log step size per chain, as ``_common.da_update``."""
    out = dict(
        log_step_size=np.empty_like(state.da_h_bar),
        da_log_step_avg=np.empty_like(state.da_h_bar),
        da_h_bar=np.empty_like(state.da_h_bar),
        da_count=np.empty_like(state.da_count),
    )
    _da_kernel(
        np.ascontiguousarray(accept_prob, dtype=np.float64), float(target_accept),
        float(np.log(max_step)), state.da_count, state.da_h_bar, state.da_mu,
        state.da_log_step_avg, *out.values(),
    )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------
# samplers


def _beta_vector(beta, c):
    if np.ndim(beta) == 0:
        return np.full(c, beta, dtype=np.float64)
    return np.ascontiguousarray(np.broadcast_to(np.asarray(beta, dtype=np.float64), (c,)))


def keys(rng: np.random.Generator, n: int) -> np.ndarray:
    """The random keys of ``n`` transitions: one 64-bit word each, the same words (and the same
    generator state after) whether drawn one by one or ``n`` at once."""
    return rng.integers(0, 2**64, size=n, dtype=np.uint64)


def _tune_step(sampler, state, info):
    """The warm-up's dual-averaging update after a transition with ``info``."""
    return da_update(state, info.accept_prob, sampler.target_accept, 100 * sampler.target.box)


class _Fused:
    """``move``, ``run`` and ``step_at`` of the fused samplers over their ``_launch(state,
    keys, beta) -> (new fields, info of the last transition, sums (n_info, C))``, which does
    ``len(keys)`` transitions without adaptation in one compiled call."""

    def move(self, state, key, beta):
        """The transition with random key ``key``, without adaptation: (new fields, info)."""
        new, info, _ = self._launch(state, np.array([key], dtype=np.uint64), beta)
        return new, info

    def run(self, state, rng, n_steps, beta=None):
        """``n_steps`` transitions without adaptation in one call, bit for bit as ``n_steps``
        calls of ``step(state, rng, adapt=False)``: ``(state, sums)``, ``sums`` the per-chain
        float64 sums over the transitions of every info field."""
        beta = self.target.beta if beta is None else beta
        new, _, sums = self._launch(state, keys(rng, int(n_steps)), beta)
        return state._replace(**new), dict(zip(self.info_cls._fields, sums, strict=True))

    def _adapt(self, state, new, info):
        new.update(_tune_step(self, state, info))

    def step_at(self, state, rng, adapt, beta):
        new, info = self.move(state, keys(rng, 1)[0], beta)
        if adapt:
            self._adapt(state, new, info)
        return state._replace(**new), info


class FusedRWM(_Fused, RWM):
    """:class:`~.rwm.RWM` with the transitions in one fused kernel (MLP targets only)."""

    def __init__(self, target, step_size=0.1, target_accept=0.234, dtype="float64"):
        super().__init__(target, step_size, target_accept, dtype)
        self.arch = Arch(target, self.dtype)

    def init(self, position, rng=None):
        x = self._position(position)
        u, _ = self.arch.U_and_grad(x, want_grad=False)
        return self.state_cls(position=x, U=u, **da_init(self.step_size, x.shape[0]))

    def inputs(self, state):
        """The kernel's inputs: position, U and step size, in the sampler's dtype."""
        dt = self.dtype
        x = np.ascontiguousarray(state.position, dtype=dt)
        return x, np.ascontiguousarray(state.U, dtype=dt), np.exp(state.log_step_size).astype(dt)

    def _launch(self, state, keys, beta):
        x, u, eps = self.inputs(state)
        c = x.shape[0]
        pos, U = x.copy(), u.copy()  # the kernel works in place
        prob, acc = np.empty(c), np.empty(c, dtype=bool)
        sums = np.zeros((len(RWMInfo._fields), c))
        a = self.arch
        kernel = _rwm_kernel if c > BLOCK else _rwm_one_block
        kernel(keys, pos, U, eps, _beta_vector(beta, c), a.box, a.net, a.maxw, prob, acc, sums)
        return dict(position=pos, U=U), RWMInfo(prob, acc), sums


class FusedHMC(_Fused, HMC):
    """:class:`~.hmc.HMC` with each trajectory in one fused kernel (MLP targets only); the
    adaptation is the numpy code's."""

    def __init__(self, target, **kw):
        super().__init__(target, **kw)
        self.arch = Arch(target, self.dtype)

    def _U_and_grad(self, x):
        return self.arch.U_and_grad(x)

    def inputs(self, state):
        """The kernel's inputs: position, U, gradient, inverse mass (in the sampler's dtype)
        and step size (float64)."""
        x, u, g, inv_m = (
            np.ascontiguousarray(v, dtype=self.dtype)
            for v in (state.position, state.U, state.grad, state.inv_mass)
        )
        return x, u, g, inv_m, np.exp(state.log_step_size)

    def _launch(self, state, keys, beta):
        x, u, g, inv_m, eps = self.inputs(state)
        c = x.shape[0]
        pos, U, grad = x.copy(), u.copy(), g.copy()  # the kernel works in place
        info = (
            np.empty(c),
            np.empty(c, dtype=bool),
            np.empty(c, dtype=np.int64),
            np.empty(c),
            np.empty(c),
        )
        sums = np.zeros((len(HMCInfo._fields), c))
        a = self.arch
        kernel = _hmc_kernel if c > BLOCK else _hmc_one_block
        kernel(
            keys, pos, U, grad, eps, inv_m, _beta_vector(beta, c), self.n_leapfrog, a.box, a.net,
            a.maxw, info, sums,
        )  # fmt: skip
        prob, acc, n_refl, err, ham = info
        new = dict(position=pos, U=U, grad=grad)
        return new, HMCInfo(prob, acc, n_refl, ~(err < DIVERGENCE), err, ham), sums

    def _adapt(self, state, new, info):
        super()._adapt(state, new, info)
        if self.adapt_mass:
            new.update(self._mass_update(state, new))
