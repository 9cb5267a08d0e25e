"""The fused numba kernels (``backend: numba``) against numpy: approximations, energies and
gradients, goodness of fit, bit-exact resume and thread-count independence.

Tolerances: approximations within the stated bounds over their ranges (measured maxima are in
the comments); energies within 1e-12 (float64) / 1e-5 (float32: rounding theta to float32
alone moves the quadratic network's U by 2e-6) of ``max(1, |U|)``, gradients within 1e-12 /
1e-5 of ``max |grad|``; statistical checks are the 4.5-standard-error checks of
test_samplers.py at fixed seeds.
"""

import numba
import numpy as np
import pytest
from numba import njit
from scipy import integrate, stats
from test_samplers import (
    Z,
    _assert_states_equal,
    _copy,
    check_moments,
    check_resume_bit_identical,
    check_run_is_n_steps,
    rhat_ess,
)

from lossatlas import fastmath as fm
from lossatlas import model, sampling
from lossatlas.sampling import fused


@njit(fastmath=fm.FASTMATH, error_model="numpy")
def _apply(code, x, out):
    for i in range(x.size):
        v = x[i]
        if code == 0:
            out[i] = fm.tanh(v)
        elif code == 1:
            out[i] = fm.exp(v)
        elif code == 2:
            out[i] = fm.log(v)
        elif code == 3:
            out[i] = fm.expm1(v)
        else:
            out[i] = fm.log1p_small(v)


def _approx(code, x, dtype):
    x = np.asarray(x, dtype=dtype)
    out = np.empty_like(x)
    _apply(code, x, out)
    return out


# (code, inputs, reference, float32 bound, float64 bound, error relative to |f| (True), absolute
# (False) or relative to max(1, |f|) ("mixed", for log around its zero at 1)
APPROX = {
    # measured: 2.6e-7 / 3.3e-16 absolute
    "tanh": (0, np.linspace(-20, 20, 200001), np.tanh, 4e-7, 1e-15, False),
    # measured: 8.5e-8 / 2.2e-16 relative
    "exp": (1, np.linspace(-80, 80, 200001), np.exp, 2e-7, 5e-16, True),
    # measured: 1.9e-7 / 4.3e-16 relative
    "log": (2, np.exp(np.linspace(-80, 80, 200001)), np.log, 3e-7, 1e-15, "mixed"),
    # measured: 8.8e-6 absolute at expm1 ~ 148 (1e-7 relative) / 2.7e-16 relative
    "expm1": (3, np.linspace(-80, 5, 200001), np.expm1, 2e-7, 1e-15, True),
    # measured: 7.1e-8 / 1.1e-16 absolute on (0, 1]
    "log1p": (4, np.exp(np.linspace(-80, 0, 200001)), np.log1p, 1.5e-7, 5e-16, False),
}


@pytest.mark.parametrize("name", list(APPROX))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_approximation_error(name, dtype):
    code, x, ref, b32, b64, rel = APPROX[name]
    xd = x.astype(dtype)
    got = _approx(code, xd, dtype).astype(np.float64)
    want = ref(xd.astype(np.float64))
    err = np.abs(got - want)
    if rel == "mixed":
        err = err / np.maximum(1, np.abs(want))
    elif rel:
        err = err / np.abs(want)
    bound = b32 if dtype == np.float32 else b64
    kind = {True: "relative", False: "absolute"}.get(rel, rel)
    print(f"{name} {np.dtype(dtype)}: max {kind} error {err.max():.3g}")
    assert err.max() < bound


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_approximations_propagate_nan_and_saturate(dtype):
    special = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    for code in (0, 1, 2, 3):
        assert np.isnan(_approx(code, special[:1], dtype)[0])
    # float32 tanh saturates at 1 - 2.4e-7 (the rational's value at the clamp)
    np.testing.assert_allclose(_approx(0, special[1:], dtype), [1.0, -1.0], rtol=0, atol=3e-7)
    assert _approx(1, special[1:2], dtype)[0] == np.inf
    assert _approx(2, special[1:2], dtype)[0] == np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_counter_normals(dtype):
    # 2000 chains x 18 coordinates x 20 keys: Gaussian moments and KS; exact sign symmetry
    z = np.empty((18, fused.BLOCK), dtype=dtype)
    draws = []
    for key in range(20):
        for c0 in range(0, 2000, fused.BLOCK):
            fused._normals(np.uint64(key), c0, fused.BLOCK, 18, z)
            draws.append(z.astype(np.float64).ravel())
    x = np.concatenate(draws)
    n = x.size
    assert abs(x.mean()) < Z / np.sqrt(n)
    assert abs(x.var() - 1) < Z * np.sqrt(2 / n)
    assert stats.kstest(x, "norm").pvalue > 1e-3
    # same key, same counter: same numbers; another key: others
    fused._normals(np.uint64(3), 0, fused.BLOCK, 18, z)
    a = z.copy()
    fused._normals(np.uint64(3), 0, fused.BLOCK, 18, z)
    np.testing.assert_array_equal(a, z)
    fused._normals(np.uint64(4), 0, fused.BLOCK, 18, z)
    assert not np.any(a == z)


ARCHS = [
    ((2, 2, 2, 2), "tanh", "cross_entropy", "sum"),  # the report's network
    ((3, 5, 4, 3), "relu", "cross_entropy", "mean"),
    ((2, 3, 1), "sigmoid", "squared", "sum"),
    ((2, 4, 3, 2), "quadratic", "cross_entropy", "sum"),
    ((2, 2), "linear", "squared", "sum"),
    ((2, 3, 4), "tanh", "cross_entropy", "sum"),
]


def _mlp_target(sizes, act, loss, energy, seed=0, n=10, box=10.0):
    rng = np.random.default_rng(seed)
    mlp = model.MLP(sizes, act, loss)
    X = rng.uniform(-1, 1, (n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    return model.Target(mlp, X, y, box=box, energy=energy)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"{a[0]}-{a[1]}-{a[2]}")
@pytest.mark.parametrize(
    ("dtype", "tol_u", "tol_g"), [("float64", 1e-12, 1e-12), ("float32", 1e-5, 1e-5)]
)
def test_energy_and_gradient_match_numpy(arch, dtype, tol_u, tol_g):
    target = _mlp_target(*arch)
    # 300 chains: two full blocks and a partial one
    theta = np.random.default_rng(1).uniform(-3, 3, (300, target.p))
    u, g = target.U_and_grad(theta)
    uf, gf = fused.Arch(target, dtype).U_and_grad(theta)
    assert uf.dtype == np.dtype(dtype) and gf.dtype == np.dtype(dtype)
    assert np.max(np.abs(uf - u) / np.maximum(1, np.abs(u))) < tol_u
    assert np.max(np.abs(gf - g)) < tol_g * np.abs(g).max()


def test_optimisers_get_the_compiled_target_only_where_it_is_faster():
    small = _mlp_target((2, 2, 2, 2), "tanh", "cross_entropy", "mean")
    compiled = fused.for_optimisers(small)
    assert isinstance(compiled, fused.CompiledTarget) and compiled.p == small.p
    theta = np.random.default_rng(2).uniform(-3, 3, (5, small.p))
    for rows in (theta, theta[:1], theta.astype(np.float32)):
        u, g = small.U_and_grad(rows)
        uc, gc = compiled.U_and_grad(rows)
        tol = 1e-12 if rows.dtype == np.float64 else 1e-5
        assert uc.dtype == rows.dtype and gc.shape == rows.shape
        assert np.max(np.abs(uc - u) / np.maximum(1, np.abs(u))) < tol
        assert np.max(np.abs(gc - g)) < tol * np.abs(g).max()
        assert np.allclose(compiled.U(rows), u, rtol=tol, atol=0)
    assert compiled.mean_loss(1.0) == small.mean_loss(1.0)
    # 64 -> [16, 8] -> 10 on 30 points is 7e4 flops a point: numpy is faster there
    wide = _mlp_target((64, 16, 8, 10), "tanh", "cross_entropy", "sum", n=30)
    assert fused.for_optimisers(wide) is wide


class LinearGaussian:
    """A linear model ``f(x) = w x + b`` with squared loss against target 1: ``U`` is a
    quadratic in ``(w, b)``, so the density is a Gaussian truncated to the box, with moments
    by quadrature. The wall at ``b = box`` cuts the ``b`` marginal 0.5 sd above its mode."""

    def __init__(self, box=1.2):
        self.mlp = model.MLP((1, 1), "linear", "squared")
        X = np.array([[-1.0], [0.0], [1.0], [2.0]])
        self.target = model.Target(self.mlp, X, np.zeros(4, dtype=int), box=box)

    def moments(self, n=1201):
        L = self.target.box
        g = np.linspace(-L, L, n + 1)
        g = 0.5 * (g[1:] + g[:-1])
        W, B = np.meshgrid(g, g, indexing="ij")
        w = np.exp(-self.target.U(np.stack([W.ravel(), B.ravel()], axis=1))).reshape(W.shape)
        w /= w.sum()
        mean = np.array([(w * W).sum(), (w * B).sum()])
        var = np.array([(w * (W - mean[0]) ** 2).sum(), (w * (B - mean[1]) ** 2).sum()])
        return mean, var


def _run(sampler, x0, seed, warmup, draws):
    rng = np.random.default_rng(seed)
    state = sampler.init(x0, rng)
    for _ in range(warmup):
        state, _ = sampler.step(state, rng, adapt=True)
    state = sampler.end_warmup(state)
    out = np.empty((x0.shape[0], draws, x0.shape[1]))
    us = np.empty((x0.shape[0], draws))
    for t in range(draws):
        state, _ = sampler.step(state, rng, adapt=False)
        out[:, t] = state.position
        us[:, t] = state.U
    return out, us, state


FUSED = {
    "rwm": {"kind": "rwm"},
    "hmc": {"kind": "hmc", "hmc": {"n_leapfrog": 5, "mass_window": 10}},
    "pt-rwm": {"kind": "rwm", "tempering": {"n_temps": 3, "beta_min": 0.2}},
}


def _build(name, target, backend="numba", **kw):
    return sampling.build({"step_size": 0.3, "backend": backend, **FUSED[name], **kw}, target)


@pytest.mark.parametrize("name", list(FUSED))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_truncated_gaussian(name, dtype):
    lg = LinearGaussian()
    sampler = _build(name, lg.target, dtype=dtype)
    base = getattr(sampler, "base", sampler)
    assert isinstance(base, fused.FusedRWM | fused.FusedHMC)
    x0 = np.random.default_rng(20).uniform(-1.2, 1.2, (128, 2))
    draws, _, state = _run(sampler, x0, seed=21, warmup=500, draws=1000)
    assert state.position.dtype == np.dtype(dtype)
    assert np.all(np.abs(draws) <= np.asarray(lg.target.box, dtype=dtype))  # box in the dtype
    mean, var = lg.moments()
    check_moments(draws, mean, var)
    rhat, ess = rhat_ess(draws)
    print(f"{name} {dtype}: R-hat {np.round(rhat, 4)}, bulk ESS {np.round(ess)}")
    assert np.all(rhat < 1.02) and np.all(ess > 2000)


@pytest.mark.parametrize("name", ["rwm", "hmc"])
def test_fused_matches_numpy_on_report_target(name):
    # The report's target (float32 fused against float64 numpy): mean and variance of U over
    # chains started alike, compared with the cross-chain standard errors of both.
    target = _mlp_target((2, 2, 2, 2), "tanh", "cross_entropy", "sum", seed=2)
    x0 = np.random.default_rng(22).uniform(-1, 1, (128, target.p))
    stats_ = []
    for backend, dtype in (("numpy", "float64"), ("numba", "float32")):
        s = _build(name, target, backend=backend, dtype=dtype)
        _, us, _ = _run(s, x0, seed=23, warmup=300, draws=600)
        m = us.mean(axis=1)
        v = us.var(axis=1)
        stats_.append(
            [(m.mean(), m.std(ddof=1) / np.sqrt(len(m))), (v.mean(), v.std(ddof=1) / 11.3)]
        )
    for (a, sa), (b, sb) in zip(*stats_, strict=True):
        print(f"{name}: numpy {a:.3f} +- {sa:.3f}, fused {b:.3f} +- {sb:.3f}")
        assert abs(a - b) < Z * np.hypot(sa, sb)


def test_fused_rwm_folds_huge_steps_exactly():
    # steps 50x the box width fold many times: w is flat and must come out uniform, b must
    # follow exp(-(b - 1)^2) on [-1, 1] (a wrong fold piles mass at the walls)
    mlp = model.MLP((1, 1), "linear", "squared")
    target = model.Target(mlp, np.zeros((1, 1)), np.zeros(1, dtype=int), box=1.0)
    # U = (b - 1)^2 depends on b only; w is uniform on [-1, 1]
    sampler = sampling.build({"kind": "rwm", "step_size": 50.0, "backend": "numba"}, target)
    rng = np.random.default_rng(24)
    state = sampler.init(np.full((4000, 2), 0.999), rng)
    for _ in range(200):  # an independence sampler in effect: converged well before 200
        state, _ = sampler.step(state, rng)
        assert np.all(np.abs(state.position) <= 1.0)
    assert stats.kstest(state.position[:, 0], stats.uniform(-1, 2).cdf).pvalue > 1e-3
    dens = lambda b: np.exp(-((b - 1) ** 2))  # noqa: E731
    norm = integrate.quad(dens, -1, 1)[0]
    cdf = lambda v: np.array([integrate.quad(dens, -1, t)[0] / norm for t in np.atleast_1d(v)])  # noqa: E731
    assert stats.kstest(state.position[:, 1], cdf).pvalue > 1e-3


def test_non_finite_energy_is_rejected():
    # quadratic activations overflow float32 for far proposals: the energy is inf/NaN there
    # and such proposals must be rejected, never accepted as garbage
    target = _mlp_target((2, 4, 4, 2), "quadratic", "cross_entropy", "sum", box=1e9)
    sampler = sampling.build(
        {"kind": "rwm", "step_size": 1e8, "backend": "numba", "dtype": "float32"}, target
    )
    rng = np.random.default_rng(25)
    state = sampler.init(np.random.default_rng(26).uniform(-1, 1, (256, target.p)), rng)
    for _ in range(5):
        state, info = sampler.step(state, rng)
        assert np.all(np.isfinite(state.U))
    assert not info.accepted.all()


@pytest.mark.parametrize("name", list(FUSED))
def test_fused_resume_is_bit_identical_and_step_is_pure(name):
    target = _mlp_target((2, 3, 2), "tanh", "cross_entropy", "sum", seed=3, box=2.0)
    sampler = _build(name, target)
    x0 = np.random.default_rng(8).uniform(-1, 1, (200, target.p))
    mid = check_resume_bit_identical(sampler, x0)
    before = _copy(mid)
    s1, i1 = sampler.step(mid, np.random.default_rng(7), adapt=True)
    s2, i2 = sampler.step(mid, np.random.default_rng(7), adapt=True)
    _assert_states_equal(mid, before)  # the input is not modified
    _assert_states_equal(s1, s2)
    _assert_states_equal(i1, i2)


@pytest.mark.parametrize("name", ["rwm", "hmc"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_run_is_n_steps_bit_for_bit(name, dtype):
    """The multi-step kernel the engine calls per draw: the state, the per-chain info sums and
    the generator afterwards are those of n calls of step(), over two blocks of chains, after a
    warm-up that gave every chain its own step size (and HMC mass)."""
    target = _mlp_target((2, 2, 2, 2), "tanh", "cross_entropy", "sum", seed=5)
    sampler = _build(name, target, dtype=dtype)
    rng = np.random.default_rng(12)
    state = sampler.init(np.random.default_rng(13).uniform(-1, 1, (fused.BLOCK + 5, target.p)))
    for _ in range(30):
        state, _ = sampler.step(state, rng, adapt=True)
    state = sampler.end_warmup(state)
    assert np.unique(state.log_step_size).size > 1
    _assert_states_equal(*check_run_is_n_steps(sampler, state, 14, 9))


@pytest.mark.parametrize("name", ["rwm", "hmc"])
def test_one_block_kernel_gives_the_chains_of_the_parallel_one(name):
    """Up to one block of chains runs without the thread pool: a chain's numbers are those it
    gets as one of the first chains of a bigger batch (random numbers are counted per chain)."""
    target = _mlp_target((2, 2, 2, 2), "tanh", "cross_entropy", "sum", seed=6)
    sampler = _build(name, target, dtype="float32")
    x0 = np.random.default_rng(15).uniform(-1, 1, (fused.BLOCK + 8, target.p))
    few, many = (sampler.init(x) for x in (x0[:8], x0))
    for _ in range(5):  # warm-up steps, then a run: both kernels, both paths
        rng_a, rng_b = np.random.default_rng(16), np.random.default_rng(16)
        few, _ = sampler.step(few, rng_a, adapt=True)
        many, _ = sampler.step(many, rng_b, adapt=True)
    few, _ = sampler.run(sampler.end_warmup(few), np.random.default_rng(17), 20)
    many, _ = sampler.run(sampler.end_warmup(many), np.random.default_rng(17), 20)
    _assert_states_equal(few, type(many)(*(v[:8] for v in many)))


def test_run_keys_are_the_step_keys():
    a, b = np.random.default_rng(8), np.random.default_rng(8)
    np.testing.assert_array_equal(fused.keys(a, 5), [fused.keys(b, 1)[0] for _ in range(5)])
    assert a.bit_generator.state == b.bit_generator.state


@pytest.mark.parametrize("name", ["rwm", "hmc"])
def test_results_do_not_depend_on_thread_count(name):
    target = _mlp_target((2, 2, 2, 2), "tanh", "cross_entropy", "sum", seed=4)
    sampler = _build(name, target, dtype="float32")
    x0 = np.random.default_rng(10).uniform(-1, 1, (3 * fused.BLOCK + 17, target.p))
    threads = numba.get_num_threads()
    results = []
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            rng = np.random.default_rng(11)
            state = sampler.init(x0, rng)
            for _ in range(10):
                state, _ = sampler.step(state, rng, adapt=True)
            results.append(state)
    finally:
        numba.set_num_threads(threads)
    _assert_states_equal(*results)


def test_build_picks_backend():
    target = _mlp_target((2, 2, 2), "tanh", "cross_entropy", "sum")
    assert type(sampling.build({"kind": "rwm"}, target)) is fused.FusedRWM  # the default
    assert type(sampling.build({"kind": "hmc", "backend": "numba"}, target)) is fused.FusedHMC
    assert type(sampling.build({"kind": "rwm", "backend": "numpy"}, target)) is sampling.RWM
    # no fused MALA, and no fused code for non-MLP targets: the numpy kernels
    assert type(sampling.build({"kind": "mala", "backend": "numba"}, target)) is sampling.MALA

    class Quadratic:
        box, beta = 1.0, 1.0

        def U(self, x):
            return (x * x).sum(axis=1)

    assert type(sampling.build({"kind": "rwm", "backend": "numba"}, Quadratic())) is sampling.RWM
    with pytest.raises(ValueError, match="sampler.backend: .opencl. is not one of"):
        sampling.build({"kind": "rwm", "backend": "opencl"}, target)


def test_wide_networks_fall_back_to_numpy():
    """``backend: numba`` keeps the fused kernels where they are the faster (the report's
    target) and uses BLAS for wide networks on many points (the digits scale run), where the
    fused kernel was 80x slower at 8 chains per batch."""
    rng = np.random.default_rng(0)
    digits_like = model.Target(
        model.MLP((64, 384, 192, 10)), rng.standard_normal((1797, 64)), rng.integers(0, 10, 1797)
    )
    report = _mlp_target((2, 2, 2, 2), "tanh", "cross_entropy", "sum", n=10)
    for kind, fused_cls, numpy_cls in [
        ("rwm", fused.FusedRWM, sampling.RWM),
        ("hmc", fused.FusedHMC, sampling.HMC),
    ]:
        cfg = {"kind": kind, "backend": "numba"}
        assert type(sampling.build(cfg, report)) is fused_cls
        assert type(sampling.build(cfg, digits_like)) is numpy_cls
        # even with a full block of chains the BLAS kernels stay
        assert type(sampling.build({**cfg, "chains_per_batch": 4096}, digits_like)) is numpy_cls
    assert fused.supports(report, 8) and not fused.supports(digits_like, 4096)
    # in between the chain count decides: a mid-size net is fused for a block of 128 chains
    # (measured 2x) and numpy for 8 (measured 7x the other way)
    mid = _mlp_target((64, 16, 8, 10), "tanh", "cross_entropy", "sum", n=100)
    assert fused.supports(mid, 128) and not fused.supports(mid, 8)
    assert type(sampling.build({"kind": "rwm", "chains_per_batch": 128}, mid)) is fused.FusedRWM
    tempered = {"kind": "rwm", "chains_per_batch": 16, "tempering": {"n_temps": 8}}
    assert type(sampling.build(tempered, mid).base) is fused.FusedRWM
