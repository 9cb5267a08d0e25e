"""Batches resume to the same bytes; experiments give the same samples whatever the workers."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import h5py
import numpy as np
import pytest

from lossatlas import config, data, steps
from lossatlas.sampling import engine
from lossatlas.storage import store

WAIT_S = 120  # bound on every poll below


def make_cfg(**sampler):
    s = {
        "n_chains": 4,
        "chains_per_batch": 2,
        "warmup": 40,
        "draws": 30,
        "thin": 2,
        "checkpoint_every": 10,
        "until": None,  # a fixed length unless a test asks for until
    }
    s.update(sampler)
    return config.validate({"sampler": s, "dask": {"progress_interval": 0.01}})


def setup(cfg, out_dir):
    exp = next(iter(config.experiments(cfg).values()))
    ds = data.for_experiment(cfg["dataset"], exp.transforms)
    return exp, ds, engine.batch_specs(exp, ds, out_dir, **steps.sampling_arguments(cfg))


def contents(path) -> dict[str, bytes]:
    """Every draw dataset of a batch file, as bytes."""
    with h5py.File(path, "r") as f:
        out = {"theta": f["posterior/theta"][()].tobytes()}
        out.update({k: v[()].tobytes() for k, v in f["sample_stats"].items()})
    return out


def poll(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S}s waiting for {what}")
        time.sleep(0.005)


@pytest.mark.parametrize("stop", [1, 3, 5], ids=["mid-warmup", "end-warmup", "mid-sampling"])
def test_resume_is_byte_identical(tmp_path, stop):
    cfg = make_cfg(warmup=50)  # warm-up checkpoints after 20 and 40 transitions
    spec = setup(cfg, tmp_path / "ref")[2][0]
    ref = engine.run_batch(spec)
    assert ref["draws_computed"] == 30 and not ref["stopped"]

    spec = setup(cfg, tmp_path / "cut")[2][0]
    first = engine.run_batch({**spec, "stop_after_blocks": stop})
    assert first["stopped"]
    progress = store.read_progress(spec["path"])
    assert progress[2] == ("warmup" if stop < 3 else "sampling")
    second = engine.run_batch(spec)
    assert second["draws_resumed"] == first["draws_done"]
    assert second["draws_resumed"] + second["draws_computed"] == 30
    assert contents(spec["path"]) == contents(ref["path"])


def test_more_draws_extend_a_finished_batch(tmp_path):
    spec = setup(make_cfg(draws=25), tmp_path / "a")[2][0]
    engine.run_batch(spec)
    longer = {**spec, "sampler": {**spec["sampler"], "draws": 40}}
    summary = engine.run_batch(longer)
    assert (summary["draws_resumed"], summary["draws_computed"]) == (25, 15)
    ref = setup(make_cfg(draws=40), tmp_path / "b")[2][0]
    engine.run_batch(ref)
    assert contents(spec["path"]) == contents(ref["path"])


def test_other_settings_start_fresh(tmp_path, caplog):
    spec = setup(make_cfg(), tmp_path / "a")[2][0]
    engine.run_batch({**spec, "stop_after_blocks": 3})
    hotter = {**spec, "target": {**spec["target"], "beta": 0.5}}
    with caplog.at_level(logging.WARNING, logger="lossatlas"):
        summary = engine.run_batch(hotter)
    assert "written under other settings" in caplog.text
    assert summary["draws_resumed"] == 0
    assert list(tmp_path.glob("a/chains/batch-0000.h5.stale-*"))
    ref = setup(make_cfg(), tmp_path / "b")[2][0]
    engine.run_batch({**ref, "target": {**ref["target"], "beta": 0.5}})
    assert contents(spec["path"]) == contents(ref["path"])


KILLED_RUN = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {testdir!r})
    from test_engine import make_cfg, setup
    from lossatlas.sampling import engine
    spec = setup(make_cfg(draws=10**6), {out!r})[2][0]
    engine.run_batch(spec)
    """
)


def test_resume_after_sigkill(tmp_path, caplog):
    """A batch SIGKILLed mid-run (more draws than it could finish) resumes to the same bytes."""
    out = tmp_path / "cut"
    code = KILLED_RUN.format(testdir=os.path.dirname(__file__), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code])
    path = out / "chains" / "batch-0000.h5"
    try:
        poll(lambda: (store.read_progress(path) or (0,))[0] >= 20, "20 committed draws")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
    assert proc.returncode == -signal.SIGKILL
    # draws are not part of the settings, so a run asking for fewer reuses the file
    cfg = make_cfg(draws=200)
    spec = setup(cfg, out)[2][0]
    with caplog.at_level(logging.WARNING, logger="lossatlas"):
        summary = engine.run_batch(spec)
    assert "unclean shutdown" in caplog.text
    assert summary["draws_resumed"] >= 20
    ref = setup(cfg, tmp_path / "ref")[2][0]
    engine.run_batch(ref)
    # the killed run may have committed more than 200 draws: compare the first 200
    with h5py.File(spec["path"], "r") as f, h5py.File(ref["path"], "r") as g:
        a, b = f["posterior/theta"][:, :200], g["posterior/theta"][()]
        assert a.tobytes() == b.tobytes()
        for k in g["sample_stats"]:
            assert f["sample_stats"][k][:, :200].tobytes() == g["sample_stats"][k][()].tobytes()


def test_peak_memory_does_not_grow_with_draws(tmp_path):
    peaks = {}
    for draws in (200, 2000):
        cfg = make_cfg(
            n_chains=8, chains_per_batch=8, warmup=0, draws=draws, thin=1, checkpoint_every=50
        )
        spec = setup(cfg, tmp_path / str(draws))[2][0]
        tracemalloc.start()
        engine.run_batch(spec)
        peaks[draws] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # all 2000 draws of theta alone would take 2000 * 8 * 18 * 8 B = 2.3 MB
    assert peaks[2000] <= peaks[200] + 64 * 1024, peaks


# --------------------------------------------------------------------------- on Dask


@pytest.fixture(scope="module")
def exp_cfg():
    # 4 single-chain batches, long enough that a worker can be killed mid-task
    return make_cfg(n_chains=4, chains_per_batch=1, warmup=100, draws=150, thin=10)


def timing(cfg) -> dict:
    """The sampling lock's wait and the progress interval, from the config's dask section."""
    d = cfg["dask"]
    return {"lock_timeout": d["lock_timeout"], "progress_interval": d["progress_interval"]}


def run_on(cluster_workers, cfg, out_dir, log, during=None, until_check=None):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=cluster_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        exp = next(iter(config.experiments(cfg).values()))
        ds = data.for_experiment(cfg["dataset"], exp.transforms)
        kw = {**steps.sampling_arguments(cfg), **timing(cfg), "until_check": until_check}
        if during is None:
            summary = engine.run_experiment(exp, ds, out_dir, client, log, **kw)
        else:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                fut = pool.submit(engine.run_experiment, exp, ds, out_dir, client, log, **kw)
                during(client, out_dir)
                summary = fut.result(timeout=WAIT_S)
        events = client.get_events(engine.PROGRESS_TOPIC)
    return summary, events


def samples(out_dir) -> dict[str, bytes]:
    with store.SampleStore(out_dir / "samples.h5") as s:
        out = {"theta": s.theta[()].tobytes()}
        out.update({k: s.stat(k).tobytes() for k in s.stat_names})
    return out


@pytest.fixture(scope="module")
def one_worker(exp_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "rotate-0"
    summary, events = run_on(1, exp_cfg, out, logging.getLogger("test.one"))
    return out, summary, events


def test_one_worker_run(one_worker, caplog):
    out, summary, events = one_worker
    assert summary["draws_total"] == 4 * 150 and summary["draws_computed"] == 600
    assert summary["draws_resumed"] == 0
    final = {m["batch"]: m["draws_done"] for _, m in events}
    assert final == {b: 150 for b in range(4)}
    with store.SampleStore(out / "samples.h5") as s:
        assert (s.n_chains, s.n_draws, s.n_params) == (4, 150, 18)
        assert {"energy", "mean_loss", "acceptance_rate", "step_size"} <= set(s.stat_names)


def test_progress_is_logged(exp_cfg, tmp_path, caplog):
    # 200 checkpoints a batch: sampling outlasts many 10 ms intervals, so a progress line
    # shows whatever the machine's load (one checkpoint in a 20-draw run was a race)
    cfg = make_cfg(n_chains=2, chains_per_batch=1, warmup=20, draws=2000, checkpoint_every=10)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        summary, _ = run_on(1, cfg, tmp_path / "e", logging.getLogger("test.progress"))
    assert "dashboard http" in caplog.text
    assert "draws/s, ETA" in caplog.text
    assert "4000 draws in" in caplog.text and summary["draws_computed"] == 4000


def test_two_workers_same_samples(one_worker, exp_cfg, tmp_path):
    out = tmp_path / "rotate-0"
    run_on(2, exp_cfg, out, logging.getLogger("test.two"))
    assert samples(out) == samples(one_worker[0])


def test_a_worker_thread_of_the_job_gives_the_same_samples(one_worker, exp_cfg, tmp_path):
    """One local worker runs as a thread of the job's process (cluster.connect): the same
    draws, bit for bit, as a worker process, and numba's parallel kernels kept to its one
    thread while the caller's setting stays its own."""
    import numba

    from lossatlas.sampling import cluster

    out = tmp_path / "rotate-0"
    exp = next(iter(config.experiments(exp_cfg).values()))
    ds = data.for_experiment(exp_cfg["dataset"], exp.transforms)
    kw = {**steps.sampling_arguments(exp_cfg), **timing(exp_cfg)}
    mine = numba.get_num_threads()
    with cluster.connect(exp_cfg["dask"], threads=1) as client:
        assert set(client.run(os.getpid).values()) == {os.getpid()}
        engine.run_experiment(exp, ds, out, client, logging.getLogger("test.thread"), **kw)
        theirs = client.submit(numba.get_num_threads, pure=False).result()  # the task thread
    assert samples(out) == samples(one_worker[0])
    assert theirs == 1 and numba.get_num_threads() == mine


def test_killed_worker_same_samples(one_worker, exp_cfg, tmp_path, caplog):
    out = tmp_path / "rotate-0"
    killed = {}

    def kill_a_busy_worker(client, out_dir):
        path = out_dir / "chains" / "batch-0000.h5"
        poll(lambda: (store.read_progress(path) or (0,))[0] >= 1, "a committed draw")
        busy = [
            w for w, keys in client.processing().items() if any("batch-0000" in k for k in keys)
        ]
        assert busy, "batch 0 finished before its worker could be killed"
        ((addr, pid),) = client.run(os.getpid, workers=busy).items()
        os.kill(pid, signal.SIGKILL)
        killed[addr] = pid

    with caplog.at_level(logging.WARNING, logger="test.kill"):
        summary, _ = run_on(
            2, exp_cfg, out, logging.getLogger("test.kill"), during=kill_a_busy_worker
        )
    assert killed
    # the job's log says what happened on the workers, not only their terminals
    assert "batch 0000 restarted" in caplog.text
    for message in summary["batches"][0]["warnings"]:  # e.g. the killed writer's file recovered
        assert f"batch 0000 (worker pid {summary['batches'][0]['pid']}): {message}" in caplog.text
    assert samples(out) == samples(one_worker[0])
    assert summary["draws_resumed"] + summary["draws_computed"] == 600
    assert summary["batches"][0]["draws_resumed"] >= 1  # batch 0 went on from its checkpoint


def _until_run(exp_cfg, out, until, workers=1):
    cfg = config.validate({**exp_cfg, "sampler": {**exp_cfg["sampler"], "until": until}})
    return run_on(workers, cfg, out, logging.getLogger("test.until"))[0]


def test_until_stops_where_its_checks_first_pass_twice_running(one_worker, exp_cfg, tmp_path):
    """sampler.until changes where the chains stop, not their numbers: the draws are the
    first ones of the run without it. It checks the boundaries until_next picks from the
    verdicts (replayed here from the verdict at every boundary), stops at the first two
    consecutive boundaries that pass (confirm: 2), and never before checking every boundary
    would have stopped."""
    until = {"r_hat": 1.3, "ess": 10}  # met from 100 of 150 draws on
    out = tmp_path / "rotate-0"
    summary = _until_run(exp_cfg, out, until)
    n = summary["until"]["draws"]
    assert summary["until"]["converged"] and 20 <= n < 150 and n % 10 == 0
    with (
        store.SampleStore(out / "samples.h5") as s,
        store.SampleStore(one_worker[0] / "samples.h5") as full,
    ):
        assert s.n_draws == n
        assert s.theta[()].tobytes() == full.theta[:, :n].tobytes()
        # the full run's batches hold every boundary's draws: its verdicts at each one
        paths = sorted(str(p) for p in (one_worker[0] / "chains").glob("batch-*.h5"))
    every = {m: engine.until_verdict(paths, m, until) for m in range(10, 151, 10)}
    checked, m = [], 10
    while m is not None and not engine.until_stops([every[c] for c in checked + [m]], 2):
        checked.append(m)
        m = engine.until_next(every[m], list(every))
    checked.append(m)
    with h5py.File(out / "samples.h5", "r") as f:
        kept = json.loads(f.attrs["until"])["verdicts"]
    assert [v["draws"] for v in kept] == checked and checked[-1] == n
    assert [v["converged"] for v in kept] == [every[c]["converged"] for c in checked]
    assert checked[-2:] == [n - 10, n] and every[n - 10]["converged"]
    bounds = list(every)
    first_pair = next(b for a, b in zip(bounds, bounds[1:], strict=False)
                      if every[a]["converged"] and every[b]["converged"])  # fmt: skip
    assert n >= first_pair
    assert len(checked) < len(range(10, n + 1, 10))  # it skipped some: the point of until_next
    again = engine.until_verdict(paths, n, until)
    assert again["U"]["r_hat"] == summary["until"]["U"]["r_hat"] < 1.3
    # the batches go on while a check that cannot stop the run computes (until_may_stop),
    # never past the stop: every batch file's checkpoint is at the stop
    assert engine.until_may_stop([every[n - 10]], 2) and not engine.until_may_stop([], 2)
    for path in (out / "chains").glob("batch-*.h5"):
        with h5py.File(path, "r") as f:
            slot = int(f["checkpoint/active"][()])
            assert int(f["checkpoint/draws_done"][slot]) == n, path.name
    assert summary["draws_computed"] == 4 * n
    # the same stop and the same bytes on two workers, and after a batch that ran ahead
    out2 = tmp_path / "two" / "rotate-0"
    exp = next(iter(config.experiments(exp_cfg).values()))
    ds = data.for_experiment(exp_cfg["dataset"], exp.transforms)
    ahead = engine.batch_specs(exp, ds, out2, **steps.sampling_arguments(exp_cfg))[2]
    (out2 / "chains").mkdir(parents=True)
    engine.run_batch({**ahead, "sampler": {**ahead["sampler"], "draws": n + 20}})
    assert _until_run(exp_cfg, out2, until, workers=2)["until"]["draws"] == n
    assert samples(out2) == samples(out)


def test_until_never_met_keeps_every_draw(one_worker, exp_cfg, tmp_path):
    out = tmp_path / "rotate-0"
    summary = _until_run(exp_cfg, out, {"r_hat": 1.000001, "ess": 1e9})
    assert summary["until"]["draws"] == 150 and not summary["until"]["converged"]
    assert "not converged at 150 draws per chain" in summary["until"]["reading"]
    assert samples(out) == samples(one_worker[0])
    with h5py.File(out / "samples.h5", "r") as f:
        kept = json.loads(f.attrs["until"])
    # the target is far off at every check: until_next goes to the last boundary at once
    assert [v["draws"] for v in kept["verdicts"]] == [10, 150]


def test_workflow_until_check_is_the_diagnose_verdict(one_worker, exp_cfg, tmp_path):
    """The sample rule's sampler.until check: at the run's full length it measures what the
    diagnose rule's verdict measures (U, outputs on the data, canonical parameters), and it
    leaves no view behind."""
    from lossatlas.analysis import diagnostics

    out = one_worker[0]
    cfg = config.validate({**exp_cfg, "sampler": {**exp_cfg["sampler"], "until": {}}})
    exp = next(iter(config.experiments(cfg).values()))
    ds = data.for_experiment(cfg["dataset"], exp.transforms)
    view = tmp_path / ".until-view.h5"
    check = steps.until_check(steps.settings("sample", cfg), ds, 1, view)
    paths = sorted(str(p) for p in (out / "chains").glob("batch-*.h5"))
    got = check(paths, 150)
    assert not view.exists()
    s = steps.settings("diagnose", cfg)
    with store.SampleStore(out / "samples.h5") as sample:
        raw = diagnostics.summarize(sample.theta, sample.stat("energy"), sample.param_names)
        _, inv = diagnostics.invariant_diagnostics(
            sample, ds, steps.target(s, ds), raw, **steps.invariant_arguments(s)
        )
    assert got["converged"] == (not diagnostics.identifiable_shortfalls(inv))
    assert got["U"]["max_r_hat"] == pytest.approx(inv["U"]["max_r_hat"], rel=1e-12)
    # U first: where U has not mixed the rest waits; where it has, all three are measured
    lax = {**cfg["sampler"], "until": {"r_hat": 1.5, "ess": 10, "confirm": 2}}
    lax_check = steps.until_check(
        steps.settings("sample", config.validate({**cfg, "sampler": lax})), ds, 1, view
    )
    for verdict, u_passed in ((got, inv["U"]["pass"]), (lax_check(paths, 150), True)):
        for space in diagnostics.IDENTIFIABLE[1:]:
            measured = verdict[space]["max_r_hat"]
            if u_passed:
                assert measured == pytest.approx(inv[space]["max_r_hat"], rel=1e-12), space
            else:
                assert measured is None, space
    early = check(paths, 10)
    assert not early["converged"] and "not converged at 10 draws per chain" in early["reading"]


def test_the_store_keeps_the_stopping_checks_table_for_diagnose(one_worker, exp_cfg, tmp_path):
    """The workflow's sampler.until check keeps with the draws the table it measured where the
    run stopped (U, the canonical parameters, the outputs on the data): the diagnose rule's
    table on that store, number for number, so diagnose reads it instead of measuring the same
    draws again. Of other quantities (another diagnose.output_points) it is not used, and the
    verdicts recorded in the store hold no table. The dimension rule's lag window reads its
    bulk ESS of U, the same bits as arviz-stats gives."""
    from arviz_stats.base import array_stats

    from lossatlas.analysis import diagnostics, draws

    until = {"r_hat": 1.5, "ess": 10, "confirm": 2}
    cfg = config.validate({**exp_cfg, "sampler": {**exp_cfg["sampler"], "until": until}})
    exp = next(iter(config.experiments(cfg).values()))
    ds = data.for_experiment(cfg["dataset"], exp.transforms)
    out = tmp_path / "rotate-0"
    check = steps.until_check(steps.settings("sample", cfg), ds, 1, tmp_path / ".view.h5")
    summary, _ = run_on(1, cfg, out, logging.getLogger("test.kept"), until_check=check)
    assert summary["until"]["converged"] and summary["until"]["draws"] < 150
    assert engine.STORE_GROUPS not in summary["until"]
    s = steps.settings("diagnose", cfg)
    target, args = steps.target(s, ds), steps.table_arguments(s)
    assert args["output_points"] != 3
    with store.SampleStore(out / "samples.h5") as sample:
        kept = diagnostics.kept_invariant_table(sample, ds, target, args["output_points"])
        measured = diagnostics.invariant_table(sample, ds, target, **args)
        assert diagnostics.kept_invariant_table(sample, ds, target, 3) is None
    assert kept.to_csv(index=False) == measured.to_csv(index=False)
    assert set(kept["space"]) == {"energy", "canonical", "outputs"}
    with h5py.File(out / "samples.h5", "r") as f:
        verdicts = json.loads(f.attrs["until"])["verdicts"]
    assert verdicts and all(engine.STORE_GROUPS not in v for v in verdicts)
    # the dimension rule's lag window reads the kept bulk ESS of U: arviz-stats' bit for bit
    with store.SampleStore(out / "samples.h5") as sample:
        energy = np.asarray(sample.potential(), dtype=np.float64)
        computed = float(array_stats.ess(energy, method="bulk", chain_axis=0, draw_axis=1))
        assert draws.kept_energy_ess(sample) == computed
        assert draws.autocorrelation_window(sample)["ess_bulk_U"] == computed
    # a fixed-length run keeps none: diagnose and the lag window measure
    with store.SampleStore(one_worker[0] / "samples.h5") as sample:
        assert diagnostics.kept_invariant_table(sample, ds, target, args["output_points"]) is None
        assert draws.kept_energy_ess(sample) is None
        energy = np.asarray(sample.potential(), dtype=np.float64)
        computed = float(array_stats.ess(energy, method="bulk", chain_axis=0, draw_axis=1))
        assert draws.autocorrelation_window(sample)["ess_bulk_U"] == computed


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_an_hmc_store_shows_the_hamiltonian_as_its_energy(tmp_path, backend):
    """ArviZ's layout on an HMC store: `energy` is the Hamiltonian at each draw (the last of
    the thinned transitions behind it, not their mean), `potential_energy` is U, and lp is
    -beta U; H - beta U is the kinetic energy at the draw, never negative. Both backends."""
    import numpy as np
    from arviz_stats.base import array_stats

    cfg = make_cfg(kind="hmc", backend=backend, thin=3)
    _, _, specs = setup(cfg, tmp_path / "rotate-0")
    for spec in specs:
        engine.run_batch(spec)
    with h5py.File(specs[0]["path"], "r") as f:
        assert "hamiltonian" in f["sample_stats"] and "energy" in f["sample_stats"]
    names = [f"p{i}" for i in range(18)]
    out = store.build([s["path"] for s in specs], tmp_path / "samples.h5", names, beta=1.0)
    with store.SampleStore(out) as s:
        H, U = s.stat("energy"), s.potential()
        assert set(s.stat_names) >= {"energy", "potential_energy", "lp"}
        assert "hamiltonian" not in s.stat_names
        np.testing.assert_array_equal(s.stat("lp"), -U)
    assert (H - U >= -1e-9).all() and not np.array_equal(H, U)
    assert np.isfinite(array_stats.bfmi(H)).all()


def _two_mode_chains(seed: int, switch: float, n_chains=8, n_draws=4000):
    """Chains that sit in one of two separated modes (+1 or -1, noise 0.3) and switch with
    probability ``switch`` per draw: rarely switching chains have not mixed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    start = rng.choice([-1.0, 1.0], (n_chains, 1))
    flips = np.cumsum(rng.random((n_chains, n_draws)) < switch, axis=1)
    return start * (-1.0) ** flips + 0.3 * rng.standard_normal((n_chains, n_draws))


def _verdicts(x, every: int = 200) -> list[dict]:
    """sampler.until's verdict at each boundary (R-hat < 1.01, bulk and tail ESS > 400, as
    the diagnose rule computes them)."""
    from lossatlas import mcmc_stats

    out = []
    for n in range(every, x.shape[1] + 1, every):
        row = mcmc_stats.summary_row("x", x[:, :n])
        out.append(
            {"converged": row["r_hat"] < 1.01 and min(row["ess_bulk"], row["ess_tail"]) > 400}
        )
    return out


def _reversed_stop(verdicts: list[dict], confirm: int) -> tuple[bool, bool]:
    """Whether the rule stops before the full length, and whether a later boundary then fails
    the target (the stop was luck: the verdict reverses)."""
    for i in range(len(verdicts) - 1):
        if engine.until_stops(verdicts[: i + 1], confirm):
            return True, not all(v["converged"] for v in verdicts[i:])
    return False, False


def test_until_rechecks_what_failed_first(one_worker, exp_cfg, tmp_path):
    """After a check that failed, the next one measures only the quantities that failed
    (a recheck costs a few quantities, not every one): while one of them still fails, the
    verdict is the full check's, and its worst R-hat the same; once they pass, every
    quantity is measured again, so a pass is always a full check."""
    from lossatlas.analysis import diagnostics
    from lossatlas.steps.sample import _identifiable

    out = one_worker[0]
    paths = sorted(str(p) for p in (out / "chains").glob("batch-*.h5"))
    base = config.validate({**exp_cfg, "sampler": {**exp_cfg["sampler"], "until": {}}})
    s = steps.settings("diagnose", base)
    exp = next(iter(config.experiments(base).values()))
    ds = data.for_experiment(base["dataset"], exp.transforms)
    with store.SampleStore(out / "samples.h5") as sample:
        table, _ = diagnostics.invariant_diagnostics(
            sample, ds, steps.target(s, ds), None, **steps.invariant_arguments(s)
        )
    r = table.set_index("name")["r_hat"]
    canonical = table[table["space"] == "canonical"].sort_values("r_hat")
    # a threshold U and some canonical parameters meet, and the others do not
    above = canonical["r_hat"][canonical["r_hat"] > r["U"]].to_numpy()
    k = len(above) // 2
    assert k >= 1
    cut = float(above[k - 1] + above[k]) / 2
    until = {"r_hat": cut, "ess": 1, "confirm": 2}
    cfg = config.validate({**base, "sampler": {**base["sampler"], "until": until}})
    view = tmp_path / ".until-view.h5"
    check = steps.until_check(steps.settings("sample", cfg), ds, 1, view)
    full = check(paths, 150)
    again = check(paths, 150)  # the same draws: only what failed is measured
    assert not full["converged"] and not again["converged"]
    worst = canonical["r_hat"].max()
    for verdict in (full, again):
        assert verdict["canonical parameters"]["max_r_hat"] == pytest.approx(worst, rel=1e-12)

    args = {**steps.invariant_arguments(s), "rhat_max": cut, "ess_min": 1}
    args.pop("tmp_dir", None)
    target = steps.target(s, ds)
    with store.SampleStore(out / "samples.h5") as sample:
        inv, failed, measured = _identifiable(sample, ds, target, 1, args, {})
        assert measured["r_hat"].tolist() == table["r_hat"].tolist()
        names = failed["canonical parameters"]
        assert sorted(names) == sorted(canonical["name"][canonical["r_hat"] >= cut])
        # the recheck measures exactly those quantities, with the full check's numbers
        part, spaces = diagnostics.recheck(sample, ds, target, failed, **args)
        assert list(part["name"]) == [n for n in table["name"] if n in set(part["name"])]
        assert set(part["name"]) == {n for group in failed.values() for n in group}
        assert part["r_hat"].tolist() == r[list(part["name"])].tolist()
        recheck, still, partial = _identifiable(sample, ds, target, 1, args, failed)
        assert still == failed and partial is None  # no table of every quantity to keep
        assert recheck["canonical parameters"]["n"] == len(names)
        # quantities that pass now: every quantity is measured again, as at the first check
        passing = {"canonical parameters": list(canonical["name"][:2])}
        again, failed_again, _ = _identifiable(sample, ds, target, 1, args, passing)
        assert (again, failed_again) == (inv, failed)


def test_until_next_skips_towards_the_measured_rate():
    b = list(range(100, 3001, 100))
    fail = {"converged": False, "draws": 200}
    assert engine.until_next({**fail, "draws_needed": 1000}, b) == 600  # half way to 1000
    assert engine.until_next({**fail, "draws_needed": None}, b) == 300  # rate unknown
    assert engine.until_next({**fail, "draws_needed": 250}, b) == 300
    assert engine.until_next({**fail, "draws_needed": 10**6}, b) == 3000  # the cap, no further
    assert engine.until_next({"converged": True, "draws": 200, "draws_needed": 200}, b) == 300
    assert engine.until_next({**fail, "draws": 3000, "draws_needed": 5000}, b) is None


def test_skipped_checks_never_stop_earlier_than_every_boundary():
    """On chains that switch between two modes about once per 100 draws (R-hat hovers around
    the target), the checks until_next picks stop at or after the stop of checking every
    boundary, and at a boundary where that schedule's verdicts pass twice running."""
    from lossatlas import mcmc_stats

    until = {"r_hat": 1.01, "ess": 400}
    stops = []
    for seed in range(6):
        x = _two_mode_chains(seed, 0.01)
        every = {}
        for n in range(200, x.shape[1] + 1, 200):
            row = mcmc_stats.summary_row("x", x[:, :n])
            g = {"max_r_hat": row["r_hat"], "min_ess_bulk": row["ess_bulk"],
                 "min_ess_tail": row["ess_tail"]}  # fmt: skip
            ok = row["r_hat"] < 1.01 and min(row["ess_bulk"], row["ess_tail"]) > 400
            need = mcmc_stats.draws_needed(g, n, until["r_hat"], until["ess"])
            every[n] = {"draws": n, "converged": ok, "draws_needed": need}
        full = [every[n] for n in every]
        first = next((i for i in range(1, len(full)) if engine.until_stops(full[: i + 1], 2)), None)
        checked, n = [], min(every)
        while n is not None:
            checked.append(every[n])
            if engine.until_stops(checked, 2):
                break
            n = engine.until_next(every[n], list(every))
        stop = checked[-1]["draws"]
        if first is not None:
            assert stop >= full[first]["draws"], seed
        if engine.until_stops(checked, 2):
            assert every[stop - 200]["converged"] and every[stop]["converged"]
        stops.append((None if first is None else full[first]["draws"], stop, len(checked)))
    assert any(len(full) > c for *_, c in stops)  # fewer checks than boundaries


@pytest.mark.slow  # no process: 1,200 R-hat/ESS evaluations, about 15 s of computing
def test_until_does_not_stop_on_chains_that_have_not_mixed():
    """Two modes that chains switch between rarely. Below one switch per 200 draws the chains
    have not mixed, and the rule never stops them (20 seeds; the ESS target alone already
    refuses). At one switch per 100 draws R-hat hovers around 1.01: of 40 seeds, stopping at
    the first boundary that passes (confirm: 1) stops early in 10, 6 of them on luck (a later
    boundary fails); confirm: 2 stops early in 6, 3 of them on luck: half the optional
    stopping."""
    for seed in range(20):
        verdicts = _verdicts(_two_mode_chains(seed, 0.004))
        assert not any(v["converged"] for v in verdicts)
        assert _reversed_stop(verdicts, confirm=2) == (False, False)
    early, luck = {1: 0, 2: 0}, {1: 0, 2: 0}
    for seed in range(40):
        verdicts = _verdicts(_two_mode_chains(seed, 0.01))
        for confirm in (1, 2):
            stopped, reversed_ = _reversed_stop(verdicts, confirm)
            early[confirm] += stopped
            luck[confirm] += reversed_
    # measured: early {1: 10, 2: 6}, luck {1: 6, 2: 3}
    assert luck[1] >= 4 and 2 * luck[2] <= luck[1] and early[2] <= early[1], (early, luck)
