"""backend: jax: the compiled RWM runs the numpy kernel's chains, batches resume to the same
bytes, and a config that asks for it where it cannot run says so before any work."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")  # the optional extra: pip install -e ".[jax]"

from lossatlas import config, data, sampling, steps  # noqa: E402
from lossatlas.model import jaxnet, target_for  # noqa: E402
from lossatlas.sampling import engine  # noqa: E402
from lossatlas.schema import ConfigError  # noqa: E402


def _target():
    cfg = config.validate({})
    exp = next(iter(config.experiments(cfg).values()))
    ds = data.for_experiment(cfg["dataset"], exp.transforms)
    return target_for(ds, **cfg["model"], **steps.sampling_arguments(cfg)["target"])


def test_compiled_rwm_runs_the_numpy_kernels_transitions():
    """Known answer: from one tuned state and one seed, 2,000 compiled transitions (runs of
    100) give the numpy RWM's positions to 1e-9 and exactly its acceptance counts: the same
    random numbers in the same order, U equal to rounding. (Under the warm-up's adaptation,
    dual averaging amplifies those roundings, so whole runs agree in distribution, not draw
    for draw: the next test compares them.)"""
    target = _target()
    kernels = {
        b: sampling.build({"kind": "rwm", "backend": b, "step_size": 0.3}, target)
        for b in ("numpy", "jax")
    }
    assert type(kernels["jax"]).__name__ == "JaxRWM"
    rng = np.random.default_rng(11)
    tuned = kernels["numpy"].init(rng.uniform(-10, 10, size=(8, target.p)), rng)
    for _ in range(300):
        tuned, _ = kernels["numpy"].step(tuned, rng, adapt=True)
    tuned = kernels["numpy"].end_warmup(tuned)
    chains = {}
    for backend, kernel in kernels.items():
        state, accepted, rng = tuned, np.zeros(8), np.random.default_rng(12)
        for _ in range(20):
            state, sums = kernel.run(state, rng, 100)
            accepted += sums["accepted"]
        chains[backend] = (state, accepted)
    (s_np, a_np), (s_jax, a_jax) = chains["numpy"], chains["jax"]
    np.testing.assert_array_equal(a_jax, a_np)
    assert 0 < a_np.sum() < 8 * 2000
    np.testing.assert_allclose(s_jax.position, s_np.position, atol=1e-9)
    np.testing.assert_allclose(s_jax.U, s_np.U, rtol=1e-12)


def test_jax_backend_samples_the_numba_backends_distribution():
    """The report's target: the mean and variance of U along 128 chains started alike, run
    by the compiled JAX RWM (float64) and by numba's fused kernel (float32, its own random
    stream), agree within Z cross-chain standard errors (as tests/test_fused.py compares the
    fused kernel with numpy's)."""
    from test_fused import Z, _mlp_target

    target = _mlp_target((2, 2, 2, 2), "tanh", "cross_entropy", "sum", seed=2)
    x0 = np.random.default_rng(22).uniform(-1, 1, (128, target.p))
    moments = []
    for backend, dtype in (("numba", "float32"), ("jax", "float64")):
        kernel = sampling.build(
            {"kind": "rwm", "backend": backend, "dtype": dtype, "step_size": 0.3}, target
        )
        rng = np.random.default_rng(23)
        state = kernel.init(x0, rng)
        for _ in range(300):
            state, _ = kernel.step(state, rng, adapt=True)
        state = kernel.end_warmup(state)
        us = np.empty((128, 600))
        for t in range(600):
            state, _ = kernel.run(state, rng, 5)
            us[:, t] = state.U
        m, v = us.mean(axis=1), us.var(axis=1)
        se = (m.std(ddof=1) / np.sqrt(len(m)), v.std(ddof=1) / np.sqrt(len(v)))
        moments.append([(m.mean(), se[0]), (v.mean(), se[1])])
    for (a, sa), (b, sb) in zip(*moments, strict=True):
        assert abs(a - b) < Z * np.hypot(sa, sb), (a, sa, b, sb)


# HMC's trajectories (10 leapfrog steps, reflecting walls) amplify rounding far faster than
# MALA's single step: its chains stay numpy's, draw for draw, for fewer transitions
N_EXACT = {"mala": 200, "hmc": 50}


@pytest.mark.parametrize("kind", ["mala", "hmc"])
def test_mala_and_hmc_take_jax_gradients_in_their_numpy_kernels(kind):
    """MALA and HMC under backend: jax are the numpy kernels on the JAX target: fixed-step
    transitions from one state give numpy's chains to 1e-8, the gradients being equal to
    rounding."""
    target = _target()
    out = {}
    for backend in ("numpy", "jax"):
        kernel = sampling.build({"kind": kind, "backend": backend, "step_size": 0.05}, target)
        assert type(kernel.target).__name__ == {"numpy": "Target", "jax": "JaxTarget"}[backend]
        rng = np.random.default_rng(4)
        state = kernel.end_warmup(kernel.init(rng.uniform(-3, 3, size=(4, target.p)), rng))
        out[backend] = kernel.run(state, rng, N_EXACT[kind])
    np.testing.assert_allclose(out["jax"][0].position, out["numpy"][0].position, atol=1e-8)
    np.testing.assert_array_equal(out["jax"][1]["accepted"], out["numpy"][1]["accepted"])


def test_tempering_wraps_the_jax_kernel():
    target = _target()
    kernel = sampling.build(
        {"kind": "rwm", "backend": "jax", "tempering": {"n_temps": 3, "beta_min": 0.2}}, target
    )
    assert type(kernel.base).__name__ == "JaxRWM"
    rng = np.random.default_rng(0)
    state = kernel.init(rng.uniform(-10, 10, size=(2, target.p)), rng)
    state, sums = kernel.run(state, rng, 20)
    assert np.all(np.isfinite(state.U)) and np.all(np.abs(state.position) <= target.box)


def test_a_long_run_is_split_without_changing_it(monkeypatch):
    """A run longer than one call's noise budget goes in several compiled calls: the same
    chains and sums as one call."""
    from lossatlas.sampling import jax_rwm

    target = jaxnet.target_of(_target())
    kernel = jax_rwm.JaxRWM(target, step_size=0.5)
    rng = np.random.default_rng(3)
    start = kernel.init(rng.uniform(-10, 10, size=(4, target.p)), rng)
    one = kernel.run(start, np.random.default_rng(5), 250)
    monkeypatch.setattr(jax_rwm, "NOISE_MB", 8 * 4 * 19 * 30 / 2**20)  # 30 transitions a call
    split = kernel.run(start, np.random.default_rng(5), 250)
    np.testing.assert_array_equal(split[0].position, one[0].position)
    np.testing.assert_array_equal(split[1]["accepted"], one[1]["accepted"])


@pytest.mark.parametrize("stop", [1, 4], ids=["mid-warmup", "mid-sampling"])
def test_a_jax_batch_resumes_to_the_same_bytes(tmp_path, stop):
    cfg = config.validate(
        {
            "sampler": {
                "backend": "jax", "n_chains": 4, "chains_per_batch": 2, "warmup": 50,
                "draws": 30, "thin": 5, "checkpoint_every": 10, "until": None,
            }
        }
    )  # fmt: skip
    exp = next(iter(config.experiments(cfg).values()))
    ds = data.for_experiment(cfg["dataset"], exp.transforms)

    def spec(where):
        return engine.batch_specs(exp, ds, tmp_path / where, **steps.sampling_arguments(cfg))[0]

    from test_engine import contents

    ref = engine.run_batch(spec("ref"))
    cut = spec("cut")
    assert engine.run_batch({**cut, "stop_after_blocks": stop})["stopped"]
    again = engine.run_batch(cut)
    assert again["draws_resumed"] > 0 or stop == 1
    assert contents(cut["path"]) == contents(ref["path"])


def test_backend_jax_needs_every_bias():
    with pytest.raises(ConfigError, match="sampler.backend: jax runs networks with every bias"):
        config.validate({"sampler": {"backend": "jax"}, "model": {"bias": "hidden"}})


def test_backend_jax_without_jax_says_how_to_install_it(monkeypatch):
    """Mocked: JAX is installed here, so its absence is simulated (find_spec finds nothing)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[jax\]"'):
        config.validate({"sampler": {"backend": "jax"}})
