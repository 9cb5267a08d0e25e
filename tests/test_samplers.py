"""Kernels against analytic targets in a box, at fixed seeds with stated tolerances.

Statistical checks use many independent chains: the chain-wise averages are i.i.d., so their
spread across chains gives an honest standard error whatever the autocorrelation within a
chain. Tolerances are 4.5 standard errors (a false alarm about once in 150,000 runs per check;
the seeds are fixed anyway), and each test also asserts that the standard error is small, so a
pass is informative.
"""

import json

import numpy as np
import pytest
from arviz_stats.base import array_stats
from scipy import integrate, stats

from lossatlas import sampling
from lossatlas.sampling.base import AT_DRAW

Z = 4.5


class GaussianBox:
    """``U = sum (x - mu)^2 / (2 sigma^2)`` on ``[-box, box]^p``: a truncated Gaussian."""

    def __init__(self, mu, sigma, box, beta=1.0):
        self.mu = np.asarray(mu, dtype=float)
        self.sigma = np.asarray(sigma, dtype=float)
        self.box, self.beta = float(box), float(beta)

    def U(self, x):
        r = (x - self.mu.astype(x.dtype)) / self.sigma.astype(x.dtype)
        return 0.5 * (r * r).sum(axis=1)

    def U_and_grad(self, x):
        s = self.sigma.astype(x.dtype)
        r = (x - self.mu.astype(x.dtype)) / s
        return 0.5 * (r * r).sum(axis=1), r / s

    def truncnorm(self):
        beta_sd = self.sigma / np.sqrt(self.beta)
        a, b = (-self.box - self.mu) / beta_sd, (self.box - self.mu) / beta_sd
        return stats.truncnorm(a, b, loc=self.mu, scale=beta_sd)


class DoubleWell1D:
    """``U = h (x^2 - 1)^2 + c x`` on ``[-box, box]``: two wells of unequal weight."""

    def __init__(self, h=2.0, c=0.5, box=2.0, beta=1.0):
        self.h, self.c, self.box, self.beta = h, c, float(box), float(beta)

    def U(self, x):
        v = x[:, 0]
        return self.h * (v * v - 1) ** 2 + self.c * v

    def U_and_grad(self, x):
        v = x[:, 0]
        return self.U(x), (4 * self.h * v * (v * v - 1) + self.c)[:, None]

    def cdf(self):
        """CDF by quadrature on a fine grid (trapezoid error ~1e-9 here)."""
        grid = np.linspace(-self.box, self.box, 40001)
        dens = np.exp(-self.beta * self.U(grid[:, None]))
        cum = integrate.cumulative_trapezoid(dens, grid, initial=0.0)
        return lambda v: np.interp(v, grid, cum / cum[-1])


class Flat:
    """``U = 0``: the uniform density on the box."""

    def __init__(self, p, box):
        self.p, self.box, self.beta = p, float(box), 1.0

    def U(self, x):
        return np.zeros(x.shape[0], dtype=x.dtype)

    def U_and_grad(self, x):
        return self.U(x), np.zeros_like(x)


class Bimodal2D:
    """``U = h (a^2 - 1)^2 + c a + 2 (b - a / 2)^2`` on ``[-box, box]^2``: two tilted wells in
    ``a`` (barrier ``h``), ``b`` coupled to ``a``. Marginals by 2-D quadrature."""

    def __init__(self, h, c=0.5, box=2.5, beta=1.0):
        self.h, self.c, self.box, self.beta = h, c, float(box), float(beta)

    def U(self, x):
        a, b = x[:, 0], x[:, 1]
        return self.h * (a * a - 1) ** 2 + self.c * a + 2 * (b - 0.5 * a) ** 2

    def U_and_grad(self, x):
        a, b = x[:, 0], x[:, 1]
        r = b - 0.5 * a
        ga = 4 * self.h * a * (a * a - 1) + self.c - 2 * r
        return self.U(x), np.stack([ga, 4 * r], axis=1)

    def moments(self, n=1201):
        """Mean and variance of (a, b) and P(a > 0), by the midpoint rule on an n x n grid."""
        g = np.linspace(-self.box, self.box, n + 1)
        g = 0.5 * (g[1:] + g[:-1])
        A, B = np.meshgrid(g, g, indexing="ij")
        w = np.exp(-self.beta * self.U(np.stack([A.ravel(), B.ravel()], axis=1)))
        w = (w / w.sum()).reshape(A.shape)
        mean = np.array([(w * A).sum(), (w * B).sum()])
        var = np.array([(w * (A - mean[0]) ** 2).sum(), (w * (B - mean[1]) ** 2).sum()])
        return mean, var, w[g > 0].sum()


def rhat_ess(draws):
    """Rank-normalised split R-hat and bulk ESS per coordinate of draws (C, T, p)."""
    rhat = array_stats.rhat(draws, chain_axis=0, draw_axis=1, method="rank")
    ess = array_stats.ess(draws, chain_axis=0, draw_axis=1, method="bulk")
    return np.atleast_1d(rhat), np.atleast_1d(ess)


def run(sampler, x0, seed, warmup, draws):
    """Warm up, freeze, and return draws (C, T, p) and the final state."""
    rng = np.random.default_rng(seed)
    state = sampler.init(x0, rng)
    for _ in range(warmup):
        state, _ = sampler.step(state, rng, adapt=True)
    state = sampler.end_warmup(state)
    out = np.empty((x0.shape[0], draws, x0.shape[1]))
    for t in range(draws):
        state, _ = sampler.step(state, rng, adapt=False)
        out[:, t] = state.position
    return out, state


def check_moments(draws, mean, var, max_se=0.03):
    """Per-coordinate mean and variance against the truth, with cross-chain standard errors."""
    m_c = draws.mean(axis=1)  # (C, p): i.i.d. over chains
    v_c = ((draws - mean) ** 2).mean(axis=1)  # unbiased for var, given the true mean
    n = draws.shape[0]
    for est, truth in ((m_c, mean), (v_c, var)):
        se = est.std(axis=0, ddof=1) / np.sqrt(n)
        assert np.all(se < max_se * np.maximum(1, np.abs(truth))), se
        err = np.abs(est.mean(axis=0) - truth)
        assert np.all(err < Z * se), (est.mean(axis=0), truth, se)


def _build(kind, target, **kw):
    cfg = {"step_size": 0.3, **SAMPLERS[kind], **kw}
    return sampling.build(cfg, target)


SAMPLERS = {
    "rwm": {"kind": "rwm"},
    "mala": {"kind": "mala"},
    "hmc": {"kind": "hmc", "hmc": {"n_leapfrog": 5, "mass_window": 10}},
    "pt-rwm": {"kind": "rwm", "tempering": {"n_temps": 4, "beta_min": 0.05}},
    "pt-hmc": {
        "kind": "hmc",
        "hmc": {"n_leapfrog": 5, "mass_window": 10},
        "tempering": {"n_temps": 3, "beta_min": 0.1, "adapt_swap_rate": True},
    },
}
KINDS = list(SAMPLERS)


@pytest.mark.parametrize(
    ("kind", "dtype"),
    [(k, "float64") for k in KINDS] + [("rwm", "float32"), ("hmc", "float32")],
)
def test_truncated_gaussian(kind, dtype):
    # mass piles against the wall at 2 in the second coordinate: walls must be exact
    target = GaussianBox(mu=[0.0, 1.5, -1.0], sigma=[1.0, 1.0, 0.5], box=2.0)
    sampler = _build(kind, target, dtype=dtype)
    x0 = np.random.default_rng(0).uniform(-2, 2, (128, 3))
    draws, state = run(sampler, x0, seed=1, warmup=500, draws=1000)
    assert state.position.dtype == np.dtype(dtype)
    tn = target.truncnorm()
    check_moments(draws, tn.mean(), tn.var())
    rhat, ess = rhat_ess(draws)
    print(f"{kind} {dtype}: R-hat {np.round(rhat, 4)}, bulk ESS {np.round(ess)}")
    assert np.all(rhat < 1.02) and np.all(ess > 2000)


@pytest.mark.parametrize("kind", KINDS)
def test_low_barrier_bimodal_marginals(kind):
    # barrier of 1.5 nats: every kernel crosses it; marginals against 2-D quadrature
    target = Bimodal2D(h=1.5)
    mean, var, p_right = target.moments()
    x0 = np.random.default_rng(10).uniform(-2.5, 2.5, (128, 2))
    draws, _ = run(_build(kind, target), x0, seed=11, warmup=500, draws=1000)
    check_moments(draws, mean, var)
    right = (draws[:, :, 0] > 0).mean(axis=1)
    assert abs(right.mean() - p_right) < Z * right.std(ddof=1) / np.sqrt(len(right))
    rhat, ess = rhat_ess(draws)
    print(f"{kind}: R-hat {np.round(rhat, 4)}, bulk ESS {np.round(ess)}")
    # MALA's small steps cross the barrier least often; 1.05 still flags a stuck chain
    assert np.all(rhat < 1.05)


def test_tempering_finds_both_modes_where_rwm_does_not():
    # a 15-nat barrier; half the chains start in each well. Same budget of energy evaluations:
    # 4 replicas x 1500 transitions against 6000 RWM transitions.
    target = Bimodal2D(h=15.0)
    mean, var, p_right = target.moments()
    assert 0.2 < p_right < 0.35  # the tilt makes the wells unequal
    rng = np.random.default_rng(12)
    x0 = np.where(np.arange(128)[:, None] < 64, [-1.0, -0.5], [1.0, 0.5])
    x0 = x0 + 0.1 * rng.standard_normal((128, 2))

    def per_chain_right(draws):
        right = (draws[:, :, 0] > 0).mean(axis=1)
        both = np.mean((right > 0.05) & (right < 0.95))  # chains that visit both wells
        stuck = np.mean((right < 0.01) | (right > 0.99))  # chains that never leave one
        return right, both, stuck

    pt, _ = run(_build("pt-rwm", target), x0, seed=13, warmup=500, draws=1000)
    right, both, _ = per_chain_right(pt)
    se = right.std(ddof=1) / np.sqrt(len(right))
    rhat, ess = rhat_ess(pt)
    print(f"tempered RWM: P(a>0) {right.mean():.4f} +- {se:.4f} (exact {p_right:.4f}), ")
    print(f"  chains visiting both wells {both:.2f}, R-hat {rhat}, bulk ESS {ess}")
    assert both > 0.95
    assert abs(right.mean() - p_right) < Z * se and se < 0.01
    check_moments(pt, mean, var)
    assert np.all(rhat < 1.03)

    rw, _ = run(_build("rwm", target), x0, seed=13, warmup=2000, draws=4000)
    right, both, stuck = per_chain_right(rw)
    rhat, ess = rhat_ess(rw)
    print(f"plain RWM: P(a>0) {right.mean():.4f}, stuck chains {stuck:.2f}, R-hat {rhat}")
    # each chain keeps the well it reached in warm-up, and R-hat flags it
    assert stuck > 0.8
    assert rhat[0] > 1.2


def test_rwm_double_well_ks():
    # The last state of each of 2000 independent chains is one i.i.d. draw (approximately from
    # the target after 1500 transitions), so the KS test needs no autocorrelation correction.
    target = DoubleWell1D()
    sampler = _build("rwm", target, target_accept=0.4)
    x0 = np.random.default_rng(2).uniform(-2, 2, (2000, 1))
    _, state = run(sampler, x0, seed=3, warmup=500, draws=1000)
    res = stats.kstest(state.position[:, 0], target.cdf())
    assert res.pvalue > 1e-3, res
    # the same check rejects a near miss: the double well at a 20% different temperature
    wrong = DoubleWell1D(beta=1.2).cdf()
    assert stats.kstest(state.position[:, 0], wrong).pvalue < 1e-3


def test_rwm_reflection_stays_in_box_and_is_uniform_on_flat_target():
    # steps 50x the box width fold many times; a wrong fold (clipping, one bounce) piles mass
    # at the walls and fails the uniformity test
    target = Flat(p=2, box=1.0)
    sampler = sampling.build({"kind": "rwm", "step_size": 50.0}, target)
    rng = np.random.default_rng(4)
    state = sampler.init(np.full((4000, 2), 0.999), rng)
    for _ in range(3):
        state, info = sampler.step(state, rng, adapt=False)
        assert np.all(np.abs(state.position) <= 1.0)
        assert np.all(info.accepted)
    for j in range(2):
        assert stats.kstest(state.position[:, j], stats.uniform(-1, 2).cdf).pvalue > 1e-3


def test_reflect_fold():
    from lossatlas.sampling._common import reflect

    y = np.array([-1.0, 1.0, 1.5, -1.5, 3.0, 5.0, -7.25, 0.3])
    np.testing.assert_allclose(reflect(y, 1.0), [-1, 1, 0.5, -0.5, -1, 1, 0.75, 0.3])


def _copy(state):
    return type(state)(*(np.array(f, copy=True) for f in state))


def _assert_states_equal(a, b):
    assert type(a) is type(b)
    for name, fa, fb in zip(a._fields, a, b, strict=True):
        np.testing.assert_array_equal(fa, fb, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kernel_stays_in_box_with_huge_steps(kind):
    target = GaussianBox(mu=[0.9, -0.9], sigma=[0.1, 3.0], box=1.0)
    sampler = _build(kind, target, step_size=30.0)
    rng = np.random.default_rng(14)
    state = sampler.init(np.full((64, 2), 0.99), rng)
    for _ in range(5):
        state, _ = sampler.step(state, rng, adapt=False)
        assert np.all(np.abs(state.position) <= 1.0)
        for name in state._fields:
            if name.startswith("rep_position"):
                assert np.all(np.abs(getattr(state, name)) <= 1.0)


def test_hmc_reflections_on_flat_target():
    # zero gradient: trajectories are straight lines folded at the walls; the energy error is
    # exactly zero, every trajectory is accepted, and the folded flow keeps the uniform density
    target = Flat(p=2, box=1.0)
    sampler = sampling.build({"kind": "hmc", "step_size": 0.7, "hmc": {"n_leapfrog": 7}}, target)
    rng = np.random.default_rng(15)
    state = sampler.init(np.full((4000, 2), 0.999), rng)
    for _ in range(10):
        state, info = sampler.step(state, rng, adapt=False)
        assert np.all(info.accepted) and not np.any(info.divergent)
        assert np.all(np.abs(state.position) <= 1.0)
    assert info.n_reflections.mean() > 1
    for j in range(2):
        assert stats.kstest(state.position[:, j], stats.uniform(-1, 2).cdf).pvalue > 1e-3


def test_hmc_adapts_mass_matrix():
    # per-coordinate scales 0.05 and 1 (far from the walls): the adapted inverse mass is the
    # variance, to the sampling error of a 200-draw window (about 20%)
    target = GaussianBox(mu=[0.0, 0.0], sigma=[0.05, 1.0], box=10.0)
    sampler = sampling.build({"kind": "hmc", "hmc": {"mass_window": 50}}, target)
    x0 = np.random.default_rng(16).normal(0, 0.5, (32, 2))
    _, state = run(sampler, x0, seed=17, warmup=350, draws=10)
    ratio = state.inv_mass / np.array([0.05**2, 1.0])
    assert np.all(np.abs(np.median(ratio, axis=0) - 1) < 0.2), ratio


@pytest.mark.parametrize("kind", KINDS)
def test_step_is_pure(kind):
    target = GaussianBox(mu=[0.0, 0.5], sigma=[1.0, 0.3], box=1.0)
    sampler = _build(kind, target)
    state = sampler.init(np.random.default_rng(5).uniform(-1, 1, (16, 2)), np.random.default_rng(6))
    before = _copy(state)
    s1, i1 = sampler.step(state, np.random.default_rng(7), adapt=True)
    s2, i2 = sampler.step(state, np.random.default_rng(7), adapt=True)
    _assert_states_equal(state, before)  # the input is not modified
    _assert_states_equal(s1, s2)
    _assert_states_equal(i1, i2)


def check_resume_bit_identical(sampler, x0):
    """A run checkpointed mid-warm-up (state fields + the RNG state as JSON) and restored ends
    bit-identical to a straight run; returns the restored checkpoint state."""

    def steps(state, rng, n, adapt):
        for _ in range(n):
            state, _ = sampler.step(state, rng, adapt=adapt)
        return state

    rng = np.random.default_rng(9)
    ref = steps(sampler.init(x0, rng), rng, 30, True)
    ref = steps(sampler.end_warmup(steps(ref, rng, 20, True)), rng, 20, False)

    rng = np.random.default_rng(9)
    mid = steps(sampler.init(x0, rng), rng, 30, True)
    saved = {name: np.array(f) for name, f in zip(mid._fields, mid, strict=True)}
    saved_rng = json.dumps(rng.bit_generator.state)
    del mid, rng
    restored = type(ref)(**{name: saved[name] for name in type(ref)._fields})
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(saved_rng)
    out = steps(sampler.end_warmup(steps(_copy(restored), rng, 20, True)), rng, 20, False)
    _assert_states_equal(out, ref)
    return restored


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_resume_is_bit_identical(kind):
    target = GaussianBox(mu=[0.0, 0.5, 1.0], sigma=[1.0, 0.3, 2.0], box=1.5)
    check_resume_bit_identical(
        _build(kind, target), np.random.default_rng(8).uniform(-1, 1, (8, 3))
    )


def test_build_rejects_unknown_kind():
    with pytest.raises(ValueError, match="sampler.kind: .nuts. is not one of"):
        sampling.build({"kind": "nuts"}, Flat(1, 1.0))


@pytest.mark.parametrize("kind", ["rwm", "mala", "hmc", "tempered"])
def test_run_is_n_steps(kind):
    """Every sampler has the multi-step run() the engine calls: bitwise the positions and the
    per-chain info sums of n calls of step() on the same generator."""
    target = GaussianBox([0.3, -0.2, 0.0], [0.5, 1.0, 2.0], box=2.0)
    if kind == "tempered":
        sampler = _build("rwm", target, backend="numpy", tempering={"n_temps": 3})
    else:
        sampler = _build(kind, target, backend="numpy")
    p = 3
    state = sampler.init(np.random.default_rng(1).uniform(-1, 1, (6, p)), np.random.default_rng(2))
    ran, stepped = check_run_is_n_steps(sampler, state, 3, 7)
    np.testing.assert_array_equal(ran.position, stepped.position)


def check_run_is_n_steps(sampler, state, seed: int, n: int):
    """``sampler.run(state, rng, n)`` against ``n`` calls of ``step`` on a generator of the
    same seed: the per-chain info sums (last values for AT_DRAW fields) and the generator
    afterwards are bitwise the same;
    returns both final states."""
    a, b = np.random.default_rng(seed), np.random.default_rng(seed)
    ran, sums = sampler.run(state, a, n)
    stepped, want = state, {}
    for _ in range(n):
        stepped, info = sampler.step(stepped, b, adapt=False)
        for name, value in zip(type(info)._fields, info, strict=True):
            value = np.asarray(value, dtype=np.float64)
            # a state's value (the Hamiltonian at the draw) is the last one's, not a sum
            want[name] = value if name in AT_DRAW else want.get(name, 0.0) + value
    assert sums.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(sums[name], want[name])
    assert a.bit_generator.state == b.bit_generator.state
    return ran, stepped


def test_hmc_stores_the_hamiltonian_and_bfmi_has_its_known_value():
    """A standard Gaussian in d = 8, HMC with identity mass and a trajectory of a quarter
    period (50 leapfrog steps of pi/100: nearly exact, so nearly every proposal is taken).
    Each trajectory rotates (x, p) by pi/2, so the next position is this transition's fresh
    momentum, and the Hamiltonian at draw n is |x_{n-1}|^2/2 + |xi_n|^2/2: consecutive
    energies share one chi^2_d/2 term, correlation 1/2, so E-BFMI = 2 (1 - 1/2) = 1 exactly.
    U alone gives 2 here (consecutive |x_n|^2 are independent), which the old `energy` stat
    (U) reported. The kinetic part H - U is chi^2_d/2 at every draw: mean d/2."""
    d, chains, draws = 8, 400, 60
    target = GaussianBox(mu=np.zeros(d), sigma=np.ones(d), box=50.0)
    hmc = sampling.HMC(target, step_size=np.pi / 100, n_leapfrog=50, adapt_mass=False)
    rng = np.random.default_rng(11)
    state = hmc.init(rng.standard_normal((chains, d)), rng)
    H, U = np.empty((chains, draws)), np.empty((chains, draws))
    for j in range(draws):
        state, sums = hmc.run(state, rng, 1)
        H[:, j], U[:, j] = sums["hamiltonian"], state.U
    assert sums["accepted"].mean() > 0.99
    kinetic = (H - U).mean(axis=1)  # chain means: i.i.d. across chains
    se = kinetic.std(ddof=1) / np.sqrt(chains)
    assert abs(kinetic.mean() - d / 2) < Z * se and se < 0.05
    per_chain = array_stats.bfmi(H)  # arviz-stats, one value per chain
    se = per_chain.std(ddof=1) / np.sqrt(chains)
    assert abs(per_chain.mean() - 1.0) < Z * se and se < 0.03
    assert array_stats.bfmi(U).mean() > 1.6  # what BFMI read off U would have said


def test_tempered_hmc_reports_the_cold_replicas_hamiltonian():
    """With replica exchange the sample's H is at the target's beta: beta U(x) + K of the
    configuration replica 0 holds after the swaps, so H - beta U is a kinetic energy: >= 0,
    and mean d/2 at stationarity."""
    d = 4
    target = GaussianBox(mu=np.zeros(d), sigma=np.ones(d), box=20.0)
    base = sampling.HMC(target, step_size=0.3, n_leapfrog=8, adapt_mass=False)
    pt = sampling.Tempered(base, n_temps=3, beta_min=0.3)
    rng = np.random.default_rng(5)
    state = pt.init(rng.standard_normal((300, d)), rng)
    state, _ = pt.run(state, rng, 30)
    kin = []
    for _ in range(40):
        state, sums = pt.run(state, rng, 1)
        kin.append(sums["hamiltonian"] - target.beta * state.U)
    kin = np.array(kin).T  # (chains, draws)
    assert (kin >= -1e-12).all()
    means = kin.mean(axis=1)
    se = means.std(ddof=1) / np.sqrt(len(means))
    assert abs(means.mean() - d / 2) < Z * se and se < 0.05
