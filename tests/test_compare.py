import numpy as np
import pytest

from lossatlas import data
from lossatlas.analysis import compare
from lossatlas.model import symmetry
from lossatlas.model.layout import ParamLayout

SIZES = (2, 2, 2, 2)


@pytest.mark.parametrize("method", ["energy", "mmd"])
def test_same_distribution_is_not_rejected(method):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    r = compare.two_sample_test(X, Y, method, n_perm=500, seed=0)
    assert r["pvalue"] > 0.05
    assert (r["n_x"], r["n_y"]) == (200, 200)


@pytest.mark.parametrize("method", ["energy", "mmd"])
def test_shift_is_detected(method):
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    Y[:, 0] += 0.5
    r = compare.two_sample_test(X, Y, method, n_perm=500, seed=0)
    assert r["pvalue"] < 0.01


def test_energy_statistic_value():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(30, 3)), rng.normal(1, 1, size=(40, 3))

    def mean_dist(A, B):
        return np.linalg.norm(A[:, None] - B[None], axis=-1).mean()

    expected = 2 * mean_dist(X, Y) - mean_dist(X, X) - mean_dist(Y, Y)
    got = compare.two_sample_test(X, Y, "energy", n_perm=9)["statistic"]
    assert got == pytest.approx(expected, rel=1e-12)


def test_pca_angles():
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(500, 2)) * [3, 2]
    plane = np.c_[Z, 0.01 * rng.normal(size=(500, 3))]
    np.testing.assert_allclose(compare.pca_angles(plane, plane, 2), 0, atol=1e-6)
    other = plane[:, [0, 2, 1, 3, 4]]  # the second axis swapped for an orthogonal one
    angles = compare.pca_angles(plane, other, 2)
    assert angles.max() == pytest.approx(90, abs=1) and angles.min() < 1


@pytest.mark.parametrize(
    "transforms",
    [[("rotate", 120)], [("rotate", 240)], [("shear", 2.0), ("translate", 1.0)]],
)
def test_mapping_back_recovers_the_reference_cloud(transforms):
    rng = np.random.default_rng(4)
    ref = rng.normal(0, 2, size=(300, 18))
    ref[:, :6] *= [3, 0.3, 1, 1, 0.5, 2]  # anisotropic first layer: rotation is visible
    A, t, _ = data.experiment_affine(transforms, 2)
    other = ParamLayout(SIZES).map_first_layer(ref, A, t)  # W1 -> W1 A^{-1}, b1 -> b1 - W1 A^{-1} t
    mapped, info = compare.map_back(other, SIZES, transforms, box=10.0)
    np.testing.assert_allclose(mapped, ref, atol=1e-12)
    assert info["exact"]
    # a box that holds both clouds: nothing is cut, so the mapped cloud is the reference's
    r = compare.compare_clouds(ref, other, SIZES, transforms, box=100.0, n_perm=200, seed=0)
    assert r["common_box"]["ref_dropped_fraction"] == r["common_box"]["other_dropped_fraction"] == 0
    assert r["before"]["pvalue"] < 0.01
    assert r["after"]["pvalue"] == 1.0 and r["after"]["statistic"] == pytest.approx(0, abs=1e-12)
    assert r["after"]["max_angle"] == pytest.approx(0, abs=1e-5)


def test_compare_in_canonical_coordinates():
    # the other experiment's chains landed on symmetric copies: only canonical coordinates agree
    rng = np.random.default_rng(5)
    ref = rng.normal(size=18) + 0.2 * rng.normal(size=(200, 18))  # one mode, no symmetry
    R = data.rotation_matrix(120)
    copies = symmetry.random_transform(ref, SIZES, "tanh", "cross_entropy", rng)
    other = ParamLayout(SIZES).map_first_layer(copies, R)
    transforms = [("rotate", 120)]
    raw = compare.compare_clouds(ref, other, SIZES, transforms, n_perm=200)
    assert raw["after"]["pvalue"] < 0.01

    def key(t):
        return symmetry.canonicalize(t, SIZES, "tanh", "cross_entropy")

    can = compare.compare_clouds(ref, other, SIZES, transforms, key=key, n_perm=200)
    assert can["after"]["pvalue"] == 1.0


def test_label_noise_is_not_exact():
    _, info = compare.map_back(np.zeros((3, 18)), SIZES, [("label_noise", 0.1)], box=10.0)
    assert not info["exact"] and info["frac_outside_box"] == 0


def ar1_chains(rng, n_chains, n_draws, p, rho=0.95, shift=0.0):
    """Chains of an AR(1) walk whose stationary law is N(shift, I): (draws, chain ids)."""
    x = np.empty((n_chains, n_draws, p))
    x[:, 0] = rng.normal(size=(n_chains, p))
    for t in range(1, n_draws):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=(n_chains, p))
    return (x + shift).reshape(-1, p), np.repeat(np.arange(n_chains), n_draws)


def test_whole_chain_permutations_are_calibrated_and_draw_permutations_are_not():
    """Two experiments sampling one target with different seeds, 8 autocorrelated chains of 40
    draws each: at alpha = 0.05 the whole-chain test rejects in about 5 % of 40 seeds (at most
    4 of 40 here; P(>= 5 | 5 %) = 0.14 for a calibrated test), permuting draws in most of them."""
    chains, draws = [], []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        (X, gx), (Y, gy) = ar1_chains(rng, 8, 40, 3), ar1_chains(rng, 8, 40, 3)
        kw = {"n_perm": 199, "seed": seed}
        chains.append(compare.two_sample_test(X, Y, groups_x=gx, groups_y=gy, **kw)["pvalue"])
        draws.append(compare.two_sample_test(X, Y, **kw)["pvalue"])
    assert np.mean(np.array(chains) <= 0.05) <= 4 / 40
    assert np.mean(np.array(draws) <= 0.05) >= 0.5


def test_whole_chain_test_still_sees_a_shift():
    rng = np.random.default_rng(7)
    (X, gx), (Y, gy) = ar1_chains(rng, 8, 40, 3), ar1_chains(rng, 8, 40, 3, shift=1.0)
    r = compare.two_sample_test(X, Y, n_perm=199, groups_x=gx, groups_y=gy)
    assert r["pvalue"] <= 0.01 and r["verdict"].startswith("differ")
    assert (r["chains_x"], r["chains_y"]) == (8, 8)


def test_few_chains_cannot_decide_and_all_arrangements_are_used():
    rng = np.random.default_rng(8)
    (X, gx), (Y, gy) = ar1_chains(rng, 2, 30, 3), ar1_chains(rng, 2, 30, 3, shift=5.0)
    r = compare.two_sample_test(X, Y, n_perm=999, groups_x=gx, groups_y=gy)
    # C(4, 2) = 6 ways to split four chains: p >= 1/6 whatever the data
    assert r["permutations"] == "all" and r["smallest_pvalue"] == pytest.approx(1 / 6)
    assert r["verdict"].startswith("cannot be decided with 2 + 2 chains")


def test_common_box_removes_the_difference_the_box_makes():
    """Both experiments sample one density, tilted towards a corner of the first layer's
    weights, each on its own box; mapped back, the other experiment's draws fill M(B), not B.
    Compared everywhere they differ by design; on B ∩ M(B) both follow the same density and
    must agree."""
    rng = np.random.default_rng(9)
    transforms = [("rotate", 45)]
    probe = rng.uniform(-1, 1, size=(10, 18))
    moved = np.abs(compare.map_back(probe, SIZES, transforms)[0] - probe).max(0) > 1e-9

    def draws(n, to_reference):
        # rejection sampling of exp(2 * sum of the moved reference coordinates) on the box
        out = []
        while sum(map(len, out)) < n:
            theta = rng.uniform(-1, 1, size=(4 * n, 18))
            theta[:, ~moved] = 0.0
            u = to_reference(theta)[:, moved].sum(1)
            out.append(theta[rng.uniform(size=len(theta)) < np.exp(2.0 * (u - u.max()))])
        return np.vstack(out)[:n]

    ref = draws(1500, lambda t: t)
    other = draws(1500, lambda t: compare.map_back(t, SIZES, transforms)[0])
    mapped, _ = compare.map_back(other, SIZES, transforms)
    whole = compare.two_sample_test(ref, mapped, n_perm=199, max_points=1500)
    assert whole["pvalue"] <= 0.01
    r = compare.compare_clouds(
        ref, other, SIZES, transforms, box=1.0, n_perm=199, max_points=1500, n_boot=10
    )
    box = r["common_box"]
    assert 0.2 < box["ref_dropped_fraction"] < 0.9 and 0.2 < box["other_dropped_fraction"] < 0.9
    assert r["after"]["pvalue"] > 0.05, r["after"]


def test_angles_are_calibrated_by_split_halves():
    rng = np.random.default_rng(10)
    scale = np.r_[3.0, 2.0, np.full(4, 0.3)]
    (X, gx), (Y, gy) = ar1_chains(rng, 8, 50, 6), ar1_chains(rng, 8, 50, 6)
    same = compare.angle_check(X * scale, Y * scale, 2, groups_x=gx, groups_y=gy, n_boot=50)
    assert same["angle_verdict"].startswith("within"), same
    lo, hi = same["max_angle_interval"]
    assert lo <= same["max_angle"] <= hi
    turned = Y * scale[[0, 2, 1, 3, 4, 5]]  # the second axis swapped for a weak one
    other = compare.angle_check(X * scale, turned, 2, groups_x=gx, groups_y=gy, n_boot=50)
    assert other["angle_verdict"].startswith("beyond") and other["max_angle"] > 60


def test_wide_clouds_take_angles_from_the_gram_matrix():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(20, 300)) * np.r_[5.0, 3.0, np.ones(298)]
    Y = rng.normal(size=(25, 300)) * np.r_[5.0, 3.0, np.ones(298)]
    ang = compare._Angles(np.vstack([X, Y]), 2)
    assert ang.G is not None
    i, j = np.arange(20), 20 + np.arange(25)
    assert ang.max_angle(i, j) == pytest.approx(compare.pca_angles(X, Y, 2).max(), abs=1e-6)


@pytest.mark.slow  # no process: 40 runs of the sampler, a minute of computing
def test_two_runs_of_one_target_are_not_told_apart_by_the_chain_test():
    """Calibration on the real sampler: the report's network sampled twice with different seeds
    (8 RWM chains each, from uniform starts, far from mixed), compared draw for draw. Both runs
    draw their chains from one law, so whole chains are exchangeable: the chain test rejects at
    5 % in at most 3 of 20 seed pairs (P(>= 4 | 5 %) = 0.016); permuting draws, which treats
    each chain's draws as independent, rejects in most of them."""
    from lossatlas import config, data, model, sampling

    cfg = config.validate({})
    ds = data.generate(cfg["dataset"])
    m, t = cfg["model"], cfg["target"]
    target = model.target_for(
        ds, hidden=m["hidden"], activation=m["activation"], loss=m["loss"], box=t["box"],
        beta=t["beta"], energy=t["energy"],
    )  # fmt: skip
    sampler = sampling.build({"kind": "rwm", "backend": "numpy"}, target)

    def run(seed, n_chains=8, warmup=400, draws=60, thin=5):
        rng = np.random.default_rng(seed)
        state = sampler.init(rng.uniform(-t["box"], t["box"], size=(n_chains, target.p)), rng)
        for _ in range(warmup):
            state, _ = sampler.step(state, rng, adapt=True)
        state = sampler.end_warmup(state)
        out = np.empty((n_chains, draws, target.p))
        for d in range(draws):
            for _ in range(thin):
                state, _ = sampler.step(state, rng)
            out[:, d] = state.position
        return out.reshape(-1, target.p), np.repeat(np.arange(n_chains), draws)

    by_chain, by_draw = [], []
    for seed in range(20):
        (X, gx), (Y, gy) = run([seed, 0]), run([seed, 1])
        kw = {"n_perm": 199, "seed": seed}
        by_chain.append(compare.two_sample_test(X, Y, groups_x=gx, groups_y=gy, **kw)["pvalue"])
        by_draw.append(compare.two_sample_test(X, Y, **kw)["pvalue"])
    assert sum(p <= 0.05 for p in by_chain) <= 3, by_chain
    assert sum(p <= 0.05 for p in by_draw) >= 10, by_draw
