"""Streaming diagnostics against arviz-stats in memory, and the convergence checks' power."""

import json

import h5py
import numpy as np
import pytest
from arviz_stats.base import array_stats

from lossatlas.analysis import diagnostics as dg

N_CHAINS, N_DRAWS, P = 4, 200, 7


def _ar1(rng, shape, phi=0.5):
    """AR(1) chains along axis 1: autocorrelated, so ESS differs from the draw count."""
    e = rng.normal(size=shape)
    x = np.empty(shape)
    x[:, 0] = e[:, 0]
    for t in range(1, shape[1]):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


@pytest.fixture(scope="module")
def draws():
    rng = np.random.default_rng(11)
    theta = _ar1(rng, (N_CHAINS, N_DRAWS, P)) * np.arange(1, P + 1) + np.arange(P)
    energy = _ar1(rng, (N_CHAINS, N_DRAWS)) ** 2
    return theta, energy


def _reference(x):
    """In-memory arviz-stats on the whole (chain, draw, k) array."""
    return {
        "r_hat": array_stats.rhat(x, chain_axis=0, draw_axis=1, method="rank"),
        "ess_bulk": array_stats.ess(x, chain_axis=0, draw_axis=1, method="bulk"),
        "ess_tail": array_stats.ess(x, chain_axis=0, draw_axis=1, method="tail", prob=0.05),
        "mcse_mean": array_stats.mcse(x, chain_axis=0, draw_axis=1, method="mean"),
        "mean": x.mean(axis=(0, 1)),
        "sd": x.reshape(-1, x.shape[2]).std(axis=0, ddof=1),
    }


@pytest.mark.parametrize("block", [1, 3, 7, 256])  # 3 does not divide p = 7
@pytest.mark.parametrize("backend", ["numpy", "h5py"])
def test_streaming_matches_in_memory(draws, tmp_path, block, backend):
    theta, energy = draws
    if backend == "h5py":
        f = h5py.File(tmp_path / "s.h5", "w")
        src = f.create_dataset("theta", data=theta, chunks=(N_CHAINS, 50, 2))
        e_src = f.create_dataset("energy", data=energy)
    else:
        f, src, e_src = None, theta, energy
    try:
        table = dg.summarize(src, e_src, [f"p{j}" for j in range(P)], block=block)
    finally:
        if f is not None:
            f.close()
    assert list(table["name"]) == ["U"] + [f"p{j}" for j in range(P)]
    ref_p = _reference(theta)
    ref_u = _reference(energy[:, :, None])
    for col, ref in ref_p.items():
        np.testing.assert_allclose(table[col].to_numpy()[1:], ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(table[col].to_numpy()[:1], ref_u[col], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ranked_values", [None, 1])  # the default; one quantity at a time
@pytest.mark.parametrize("n_chains", [1, 2, 8])
@pytest.mark.parametrize("n_draws", [5, 8, 9, 125, 300])
def test_shared_rank_normalisation_gives_arviz_stats_bits(
    n_chains, n_draws, ranked_values, monkeypatch
):
    """R-hat and bulk ESS from one rank normalisation equal arviz-stats' own, bit for bit:
    ties (rounded values, a wall), a constant, a NaN and an infinite quantity, odd and short
    chains, one chain; whether the quantities are ranked together or one by one."""
    from lossatlas import mcmc_stats
    from lossatlas.mcmc_stats import rank_rhat_and_bulk_ess

    if ranked_values is not None:
        monkeypatch.setattr(mcmc_stats, "RANKED_VALUES", ranked_values)

    rng = np.random.default_rng(n_chains * 1000 + n_draws)
    x = _ar1(rng, (n_chains, n_draws, 8))
    x[:, :, 1] = np.round(x[:, :, 1], 1)  # many ties
    x[:, :, 2] = np.clip(x[:, :, 2], -0.3, 10.0)  # a third of the draws tied at a wall
    x[:, :, 3] = 2.5  # never moves
    x[0, 1, 4] = np.nan
    x[-1, -1, 5] = np.inf
    x[:, :, 6] = x[:, :, 6] * 1e-300  # subnormal scale, no ties
    xt = np.ascontiguousarray(np.moveaxis(x, 2, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rhat, ess = rank_rhat_and_bulk_ess(xt)
        ref_rhat = array_stats.rhat(xt, chain_axis=-2, draw_axis=-1, method="rank")
        ref_ess = array_stats.ess(xt, chain_axis=-2, draw_axis=-1, method="bulk")
    np.testing.assert_array_equal(rhat, ref_rhat)
    np.testing.assert_array_equal(ess, ref_ess)


def test_rhat_flags_shifted_chains_and_passes_iid():
    rng = np.random.default_rng(3)
    iid = rng.normal(size=(4, 2000, 3))
    shifted = iid.copy()
    shifted[0] += 2.0  # one chain two sd away
    t_iid = dg.summarize(iid, iid[:, :, 0])
    t_bad = dg.summarize(shifted, shifted[:, :, 0])
    assert (t_iid["r_hat"] < 1.01).all()
    assert (t_bad["r_hat"] > 1.1).all()
    v_ok = dg.verdict(t_iid)
    v_bad = dg.verdict(t_bad)
    assert v_ok["pass"] and not v_bad["pass"]
    assert v_bad["params"]["max_r_hat"] > 1.1 and v_bad["params"]["n_fail"] == 3
    json.dumps(v_ok)


def test_low_ess_fails_verdict():
    rng = np.random.default_rng(4)
    sticky = _ar1(rng, (4, 500, 2), phi=0.99)  # ESS far below 400
    table = dg.summarize(sticky, sticky[:, :, 0])
    v = dg.verdict(table)
    assert v["params"]["min_ess_bulk"] < 400 and not v["pass"]


def test_gaussianity_rejects_bimodal_chain_means_accepts_gaussian():
    rng = np.random.default_rng(5)
    n_chains = 40
    gauss = rng.normal(size=(n_chains, 400, 1))
    bimodal = gauss + np.where(np.arange(n_chains) % 2 == 0, -3.0, 3.0)[:, None, None]
    ok = dg.normality(gauss, gauss[:, :, 0])
    bad = dg.normality(bimodal, bimodal[:, :, 0])
    assert (ok["chain_means_p"] > 0.05).all() and (ok["verdict"] == "gaussian").all()
    assert (bad["chain_means_p"] < 1e-3).all() and (bad["verdict"] == "non-gaussian").all()


def test_batch_means_give_power_with_few_chains():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 400, 1)) + np.array([-3.0, -3.0, 3.0, 3.0])[:, None, None]
    table = dg.normality(x, x[:, :, 0], n_batches=20)
    assert (table["batch_means_n"] == 80).all()
    assert (table["batch_means_p"] < 1e-3).all()
    # Two chains cannot be tested at all by Shapiro-Wilk on chain means.
    two = dg.normality(x[:2], x[:2, :, 0])
    assert two["chain_means_p"].isna().all() and two["chain_means_reject"].isna().all()


def test_constant_quantity_is_untestable_and_fails(tmp_path):
    rng = np.random.default_rng(7)
    theta = rng.normal(size=(4, 100, 2))
    theta[:, :, 1] = 0.5  # a parameter that never moved
    table, norm, v = dg.diagnose(theta, theta[:, :, 0], ["a", "b"])
    assert norm.loc[norm["name"] == "b", "verdict"].item() == "untestable"
    assert not v["params"]["pass"] and v["params"]["n_nonfinite"] >= 1
    paths = dg.write(tmp_path, table, norm, v)
    assert json.loads(paths["convergence"].read_text())["pass"] is False
    assert paths["summary"].read_text().startswith("name,kind,mean")


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="disagree"):
        dg.summarize(np.zeros((2, 10, 3)), np.zeros((2, 9)))
    with pytest.raises(ValueError, match="names"):
        dg.summarize(np.zeros((2, 10, 3)), np.zeros((2, 10)), ["a"])


def test_long_diagnose_logs_progress_with_eta(monkeypatch, caplog):
    x = np.random.default_rng(3).normal(size=(4, 50, 40))
    monkeypatch.setattr(dg, "PROGRESS_EVERY", 0.0)
    with caplog.at_level("INFO", logger="lossatlas.analysis.diagnostics"):
        table, _, _ = dg.diagnose(x, x[:, :, 0], block=8)
    lines = [r.getMessage() for r in caplog.records if "quantities diagnosed" in r.message]
    # U, then 5 blocks of 8: a line after every block but the last
    assert [ln.split()[0] for ln in lines] == ["1/41", "9/41", "17/41", "25/41", "33/41"], lines
    assert all("ETA" in ln for ln in lines) and len(table) == 41


def _group(max_r_hat, ess=1000.0, name="w[0]"):
    ok = max_r_hat < 1.01 and ess > 400
    return {
        "n": 10,
        "max_r_hat": max_r_hat,
        "max_r_hat_name": name,
        "min_ess_bulk": ess,
        "min_ess_tail": ess,
        "n_nonfinite": 0,
        "n_fail": 0 if ok else 1,
        "pass": ok,
    }


def _invariant(u=1.001, outputs=1.002, canonical=1.003, raw=1.004):
    return {
        "thresholds": {"r_hat_max": 1.01, "ess_min": 400},
        "U": _group(u, name="U"),
        "outputs on the data": _group(outputs, name="p[0, 0]"),
        "canonical parameters": _group(canonical),
        "raw parameters": _group(raw),
    }


def test_headline_verdict_is_about_what_the_data_identify():
    """Chains in different symmetric copies: raw R-hat 1.02 fails, the identifiable spaces
    pass, so the run is converged and says why the raw parameters do not mix."""
    summary = {"energy": _group(1.001, name="U"), "params": _group(1.02), "pass": False}
    v = dg.identifiable_verdict(summary, _invariant(raw=1.02))
    assert v["pass"] is True and v["pass_raw_parameters"] is False
    assert v["reading"].startswith("converged in what the data identify")
    assert "raw: R-hat 1.02 (w[0])" in v["reading"] and "symmetric copies" in v["reading"]
    assert set(v["identifiable"]) == {"U", "outputs on the data", "canonical parameters"}


def test_headline_verdict_names_what_did_not_mix():
    summary = {"energy": _group(1.001, name="U"), "params": _group(1.001), "pass": True}
    v = dg.identifiable_verdict(summary, _invariant(outputs=1.2))
    assert v["pass"] is False and v["pass_raw_parameters"] is True
    assert v["reading"].startswith("not converged: outputs on the data: R-hat 1.2 (p[0, 0])")
    low_ess = _invariant()
    low_ess["U"] = _group(1.001, ess=120.0, name="U")
    v = dg.identifiable_verdict(summary, low_ess)
    assert not v["pass"] and "U: ess bulk 120, ess tail 120" in v["reading"]
    all_ok = dg.identifiable_verdict(summary, _invariant())
    assert all_ok["pass"] and all_ok["reading"].startswith("converged: U, the outputs")


def test_a_run_that_did_not_converge_is_told_how_many_draws_it_needs():
    """ESS grows with the draws and R-hat - 1 falls with them: 100 draws with bulk ESS 200
    need 200 for 400; R-hat 1.03 needs 3 times the draws for 1.01; the larger wins."""
    ok = {"min_ess_tail": 1e4}
    assert dg.draws_needed({"max_r_hat": 1.001, "min_ess_bulk": 200.0, **ok}, 100,
                                    1.01, 400) == 200  # fmt: skip
    assert dg.draws_needed({"max_r_hat": 1.03, "min_ess_bulk": 1e4, **ok}, 100,
                                    1.01, 400) == 300  # fmt: skip
    assert dg.draws_needed({"max_r_hat": None, "min_ess_bulk": 10.0}, 100, 1.01, 400) is None
    spaces = {
        "U": {"pass": True, "max_r_hat": 1.001, "min_ess_bulk": 900.0, "min_ess_tail": 900.0},
        "outputs on the data": {
            "pass": True,
            "max_r_hat": 1.002,
            "min_ess_bulk": 800.0,
            "min_ess_tail": 700.0,
        },  # fmt: skip
        "canonical parameters": {
            "pass": False,
            "max_r_hat": 1.011,
            "max_r_hat_name": "b3[0]",
            "min_ess_bulk": 2550.0,
            "min_ess_tail": 2600.0,
        },  # fmt: skip
    }
    invariant = {**spaces, "thresholds": {"r_hat_max": 1.01, "ess_min": 400.0}}
    summary = {"params": {"pass": False}, "n_draws": 625, "n_chains": 32}
    reading = dg.identifiable_verdict(summary, invariant)["reading"]
    assert reading.startswith("not converged: canonical parameters: R-hat 1.011 (b3[0])")
    assert "about 688 draws per chain (now 625)" in reading and "sampler.draws to 688" in reading


def test_outputs_are_judged_on_evenly_spread_data_points():
    from lossatlas.analysis import draws

    assert draws.spread_points(10, 100) is None and draws.spread_points(10, None) is None
    picked = draws.spread_points(1000, 100)
    assert len(picked) == 100 and picked[0] == 0 and picked[-1] == 999
    assert np.all(np.diff(picked) >= 10)
