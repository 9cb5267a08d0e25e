"""The CUDA kernels (``backend: cuda``) under numba's CUDA simulator, against the fused CPU
kernels: the same draws bit for bit at a fixed seed, ``run`` equal to as many ``step`` calls,
bit-exact resume, positions inside the walls; and the config errors without a GPU.

The simulator runs in a child process (``NUMBA_ENABLE_CUDASIM`` must be set before numba
loads), once for all checks; the kernels call the fused code, which the simulator runs as
compiled CPU code, so bitwise equality is the expectation there. On a GPU the compiler's
rounding differs (fused multiply-adds), which these tests do not cover.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_engine
from test_samplers import Flat, _assert_states_equal, _copy, check_resume_bit_identical

from lossatlas import model, sampling
from lossatlas.config import ConfigError
from lossatlas.sampling import engine
from lossatlas.sampling.base import accumulate

cuda_module = pytest.importorskip("numba.cuda", reason="numba without its CUDA target")

CHAINS = 6
CASES = {
    "rwm-float64": {"kind": "rwm", "dtype": "float64"},
    "hmc-float64": {"kind": "hmc", "dtype": "float64"},
    "rwm-float32": {"kind": "rwm", "dtype": "float32"},
    "tempered-rwm-float64": {"kind": "rwm", "dtype": "float64", "tempering": {"n_temps": 3}},
}
BOX = 1.0  # small, so that proposals and trajectories cross the walls


def _target():
    rng = np.random.default_rng(0)
    mlp = model.MLP((2, 2, 2, 2), "tanh", "cross_entropy")
    return model.Target(mlp, rng.uniform(-1, 1, (10, 2)), rng.integers(0, 2, 10), box=BOX)


def _sampler(backend, case):
    cfg = {"backend": backend, "step_size": 0.8, "hmc": {"n_leapfrog": 5, "mass_window": 3}}
    return sampling.build({**cfg, **case}, _target())


def _trajectory(backend, case) -> dict[str, np.ndarray]:
    """States and infos of 4 warm-up and 2 sampling steps, then 3 more transitions: by
    ``run`` on the CUDA samplers, by ``step`` (infos accumulated as the engine does)
    otherwise."""
    sampler = _sampler(backend, case)
    rng = np.random.default_rng(3)
    state = sampler.init(rng.uniform(-BOX, BOX, (CHAINS, _target().p)), rng)
    out = {}
    for i in range(6):
        state, info = sampler.step(state, rng, adapt=i < 4)
        if i == 3:
            state = sampler.end_warmup(state)
        out.update(
            {f"{i}-info-{k}": np.asarray(v) for k, v in zip(info._fields, info, strict=True)}
        )
        out[f"{i}-position"] = state.position
    out.update({f"state-{k}": np.asarray(v) for k, v in zip(state._fields, state, strict=True)})
    if "tempering" in case:
        return out
    if backend == "cuda":
        state, sums = sampler.run(state, rng, 3)
    else:
        sums = {}
        for _ in range(3):
            state, info = sampler.step(state, rng)
            accumulate(sums, info)  # sums, and the last Hamiltonian, as the engine keeps them
    out.update({f"run-sum-{k}": v for k, v in sums.items()})
    out.update({f"run-{k}": np.asarray(v) for k, v in zip(state._fields, state, strict=True)})
    return out


def _child(out_dir):
    """In the simulator: every case's trajectory, and the resume check."""
    from lossatlas.sampling import cuda

    assert cuda.simulated() and cuda.unavailable() is None
    for name, case in CASES.items():
        np.savez(Path(out_dir) / f"{name}.npz", **_trajectory("cuda", case))
    x0 = np.random.default_rng(4).uniform(-BOX, BOX, (CHAINS, _target().p))
    for kind in ("rwm", "hmc"):
        sampler = _sampler("cuda", {"kind": kind})
        assert type(sampler) is {"rwm": cuda.CudaRWM, "hmc": cuda.CudaHMC}[kind]
        state = check_resume_bit_identical(sampler, x0)
        before = _copy(state)
        sampler.run(state, np.random.default_rng(1), 2)
        _assert_states_equal(state, before)  # the input state is not modified
    (Path(out_dir) / "resume.json").write_text(json.dumps("ok"))
    for kind in ("rwm", "hmc"):
        _, _, specs = test_engine.setup(_engine_cfg("cuda", kind), Path(out_dir) / kind)
        engine.run_batch(specs[0])


def _engine_cfg(backend, kind):
    return test_engine.make_cfg(backend=backend, kind=kind, n_chains=3, chains_per_batch=3)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cudasim")
    code = f"import test_cuda; test_cuda._child({str(out)!r})"
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_simulated_kernels_match_fused_cpu_bitwise(simulated, name):
    got = dict(np.load(simulated / f"{name}.npz"))
    want = _trajectory("numba", CASES[name])
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    # the draws moved, and stayed inside the walls
    assert not np.array_equal(got["0-position"], got["5-position"])
    for key, value in got.items():
        if key.endswith("position"):
            assert np.all(np.abs(value) <= BOX), key
    if name.startswith("hmc"):
        assert got["run-sum-n_reflections"].sum() > 0  # trajectories did hit the walls


@pytest.mark.parametrize("kind", ["rwm", "hmc"])
def test_simulated_engine_batch_matches_fused_cpu_bitwise(simulated, kind, tmp_path):
    """engine.run_batch thins with one ``run`` launch per draw on CUDA; the batch file holds
    the same draws and statistics as the CPU kernel's, step by step."""
    _, _, specs = test_engine.setup(_engine_cfg("numba", kind), tmp_path)
    engine.run_batch(specs[0])
    got = test_engine.contents(simulated / kind / "chains" / "batch-0000.h5")
    assert got == test_engine.contents(specs[0]["path"])


def test_simulated_resume_is_bit_exact(simulated):
    assert json.loads((simulated / "resume.json").read_text()) == "ok"


def test_no_gpu_is_a_config_error_naming_the_field():
    if cuda_module.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(ConfigError, match=r"sampler\.backend is cuda.*no CUDA GPU.*numba"):
        sampling.build({"kind": "hmc", "backend": "cuda"}, _target())


def test_kinds_and_targets_without_cuda_kernel_are_config_errors():
    with pytest.raises(ConfigError, match=r"sampler\.kind mala has no CUDA kernel"):
        sampling.build({"kind": "mala", "backend": "cuda"}, _target())
    with pytest.raises(ConfigError, match="this target has no CUDA kernel"):
        sampling.build({"kind": "rwm", "backend": "cuda"}, Flat(p=2, box=1.0))
