"""Steps of the dataset and sample rules: the data, the chains, a repaired store."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lossatlas.steps.arguments import blocks, target
from lossatlas.steps.settings import NETWORK, experiment, plain, write_json

READS: dict[str, tuple[str, ...]] = {
    "dataset": ("dataset",),
    # sampler.until's check reads the draws in the diagnose rule's blocks
    "sample": (
        "seed",
        *NETWORK,
        "sampler",
        "diagnose.param_block",
        "diagnose.output_points",
        "reduce.draw_block",
        "reduce.max_block_mb",
    ),
}
# restore samples again what sample sampled, with the same settings, where sample runs
READS["restore"] = READS["sample"]
RUNTIME: dict[str, tuple[str, ...]] = {
    "sample": ("dask", "results"),
    "restore": ("dask", "results"),
}


def sampling_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.sampling.engine.run_experiment` and ``batch_specs``."""
    t = s["target"]
    return {
        "seed": s["seed"],
        "model": dict(s["model"]),
        "target": {"box": t["box"], "beta": t["beta"], "energy": t["energy"]},
        "sampler": plain(s["sampler"]),
    }


def dataset(outputs, s: Mapping, exp: Mapping, log: logging.Logger) -> None:
    """Write one experiment's transformed dataset (the rule's one output)."""
    from lossatlas import data

    e = experiment(exp)
    ds = data.for_experiment(plain(s["dataset"]), e.transforms)
    ds.save(outputs[0])
    log.info(
        "%s: %d points, %d features, transforms %s",
        e.name,
        ds.n_points,
        ds.n_features,
        e.transforms,
    )


def sample(
    inputs, outputs, s: Mapping, run: Mapping, exp: Mapping, threads: int, log: logging.Logger
) -> dict:
    """Run one experiment's chains (:func:`sample_chains`) into the rule's store."""
    return sample_chains(inputs.dataset, outputs.samples, s, run, exp, threads, log)


def sample_chains(
    dataset_path,
    samples_path,
    s: Mapping,
    run: Mapping,
    exp: Mapping,
    threads: int,
    log: logging.Logger,
    store_path=None,
) -> dict:
    """Run one experiment's chains on Dask, resuming from the batch checkpoints; returns the
    resume summary. ``run``: the :data:`RUNTIME` settings (``dask``, ``results``).
    ``store_path``: where the store is written (default ``samples_path``)."""
    from lossatlas.sampling import cluster

    d = plain(run["dask"])
    # The local workers' server starts first, in the background: its imports (about 1.5 s)
    # overlap this job's until the cluster starts (cluster.prestart). It holds no workers.
    cluster.prestart(d, threads)

    from lossatlas.data import Dataset
    from lossatlas.sampling import engine
    from lossatlas.storage import maintenance

    e = experiment(exp)
    ds = Dataset.load(dataset_path)
    out = Path(samples_path)
    store = Path(store_path or out)
    # Worker job logs stay with this run's other logs unless the config names a folder.
    d["slurm"]["log_directory"] = (
        d["slurm"]["log_directory"] or f"{run['results']}/logs/dask-workers"
    )
    timing = {"lock_timeout": d["lock_timeout"], "progress_interval": d["progress_interval"]}
    args = sampling_arguments(s)
    # The lock first: a run waiting for another one's lock holds no workers (SLURM jobs)
    # meanwhile. connect() logs the cluster size and the dashboard address.
    with engine.experiment_lock(out.parent, log=log, **timing):
        t0 = time.perf_counter()
        if engine.compile_kernels(ds, **args):
            log.info(
                "sampling kernels compiled (or loaded from numba's cache) in %.1f s, once, "
                "before the workers start: they load them from the cache",
                time.perf_counter() - t0,
            )
        # before the cluster, while its workers' server is still importing
        check = None
        if s["sampler"]["until"]:
            check = until_check(s, ds, threads, out.parent / ".until-view.h5")
        with cluster.connect(d, threads=threads, log=log) as client:
            aside = maintenance.describe_aside(out.parent.parent)
            if aside:
                log.info(aside)
            summary = engine.run_experiment(
                e,
                ds,
                out.parent,
                client,
                log,
                locked=True,
                until_check=check,
                store_path=store,
                **timing,
                **args,
            )
    log.info(
        "resume summary: resumed=%d computed=%d total=%d draws over %d batches",
        summary["draws_resumed"],
        summary["draws_computed"],
        summary["draws_total"],
        summary["n_batches"],
    )
    for b in summary["batches"]:
        log.info("resume summary: %s", b)
    if not store.exists():
        raise FileNotFoundError(f"engine.run_experiment did not write {store}")
    return summary


def restore(
    inputs, outputs, s: Mapping, run: Mapping, exp: Mapping, threads: int, log: logging.Logger
) -> None:
    """Sample again the batches ``lossatlas verify --repair`` moved aside, under the store the
    analyses read, and check that they are the draws it showed: the energy of every draw equals
    the one ``samples.h5`` recorded when it was built. Then nothing downstream needs redoing.
    Where they differ, ``samples.h5`` is removed, so the next run rebuilds it and everything
    that read it."""
    from lossatlas.storage import maintenance, store

    samples = Path(inputs.samples)
    view = samples.with_name(".restore-view.h5")
    summary = sample_chains(inputs.dataset, samples, s, run, exp, threads, log, store_path=view)
    try:
        differs = store.energies_differ(view, samples)
    finally:
        view.unlink(missing_ok=True)
    moved = maintenance.clear_pending_restore(samples.parent)
    if differs:
        samples.unlink()
        raise RuntimeError(
            f"{samples.parent.name}: the batches sampled again are not the draws "
            f"{samples} showed ({differs}); it was removed: run the same command again to "
            "rebuild it and everything that read it"
        )
    log.info(
        "%s: %s sampled again (%d draws computed); every draw's energy equals the one %s "
        "recorded, so nothing that read it is redone",
        samples.parent.name,
        ", ".join(moved) or "no batch",
        summary["draws_computed"],
        samples.name,
    )
    write_json(
        outputs.restored,
        {
            "experiment": samples.parent.name,
            "moved_aside": moved,
            "draws_computed": summary["draws_computed"],
            "energies_equal": True,
        },
    )


@dataclass(frozen=True)
class _Held:
    """A store's draws read into memory (the :class:`~lossatlas.storage.store.SampleStore`
    attributes the checks read): the batch files behind it may then be written."""

    theta: np.ndarray
    param_names: list[str]
    energy: np.ndarray

    @classmethod
    def of(cls, view, max_mb: float) -> _Held | None:
        """``view``'s draws, or None where they take more than ``max_mb`` MiB."""
        if view.theta.size * 8 > max_mb * 2**20:
            return None
        theta = np.asarray(view.theta[()], dtype=np.float64)
        return cls(theta, list(view.param_names), view.potential())

    def potential(self) -> np.ndarray:
        return self.energy


def _identifiable(view, ds, the_target, threads: int, args: dict, failed: dict):
    """(summary, failing, table): what :func:`until_check` judges, as the diagnose rule
    measures it, the quantities that miss the targets (:func:`diagnostics.failing_quantities`)
    and, where every quantity was measured, their table (else None).

    U first, alone: the verdict fails with it, so the outputs and canonical parameters wait
    until U passes. Then, where an earlier check named ``failed`` quantities, those alone
    (:func:`diagnostics.recheck`): while one still fails the run has not converged, whatever
    the rest say. Otherwise, or once they pass, U, the canonical parameters and the outputs
    on the data (not the raw parameters, which it does not judge). A pass is always a check
    of every quantity; a fail is the same fail the full check gives."""
    from lossatlas.analysis import diagnostics

    rhat_max, ess_min = args["rhat_max"], args["ess_min"]
    energy_only = np.empty((*view.theta.shape[:2], 0))
    u = diagnostics.summarize(energy_only, view.potential(), [], args["param_block"])
    inv = {"thresholds": {"r_hat_max": rhat_max, "ess_min": ess_min}}
    inv["U"] = diagnostics.space_verdict(u, rhat_max, ess_min)
    if not inv["U"]["pass"]:
        waiting = {"n": 0, "pass": True, "note": "checked once U passes"}
        return {**inv, "outputs on the data": waiting, "canonical parameters": waiting}, {}, None
    if failed:
        table, spaces = diagnostics.recheck(view, ds, the_target, failed, workers=threads, **args)
        still = diagnostics.failing_quantities(table, rhat_max, ess_min)
        if still:
            names = ", ".join(n for group in still.values() for n in group)
            waiting = {"n": 0, "pass": True, "note": f"checked once {names} pass"}
            rest = {k: spaces.get(k, waiting) for k in diagnostics.IDENTIFIABLE[1:]}
            return {**inv, **rest}, still, None
    table, inv = diagnostics.invariant_diagnostics(
        view, ds, the_target, None, workers=threads, **args
    )
    return inv, diagnostics.failing_quantities(table, rhat_max, ess_min), table


def _draws_needed(inv: dict, n_draws: int, until: Mapping) -> int | None:
    """The draws per chain at which every space checked (U alone until it passes) would meet
    ``until`` at its measured rate; None where one of them cannot say."""
    from lossatlas.mcmc_stats import most_draws_needed

    checked = [g for g in inv.values() if isinstance(g, dict) and "max_r_hat" in g]
    return most_draws_needed(checked, n_draws, until["r_hat"], until["ess"])


def until_check(s: Mapping, ds, threads: int, view_path):
    """``sampler.until``'s check for :func:`lossatlas.sampling.engine.run_experiment`: at
    ``n_draws`` per chain, the diagnose rule's measures of what the data identify (U, the
    outputs on the data, the canonical parameters) against ``until``'s R-hat and ESS, on a
    view of the batch files' first ``n_draws`` draws at ``view_path`` (verified as
    ``samples.h5`` is, and removed after)."""
    from lossatlas.analysis import diagnostics
    from lossatlas.model.network import model_layout
    from lossatlas.sampling import engine
    from lossatlas.storage import store

    u = s["sampler"]["until"]
    names = model_layout(ds, s["model"]).names()
    args = {
        "param_block": s["diagnose"]["param_block"],
        "output_points": s["diagnose"]["output_points"],
        "rhat_max": u["r_hat"],
        "ess_min": u["ess"],
        **blocks(s),
    }
    view_path = Path(view_path)
    the_target = target(s, ds)
    failed: dict = {}  # the quantities the last check found short of the targets

    def check(paths, n_draws: int, on_read=None) -> dict:
        nonlocal failed
        store.build(paths, view_path, names, n_draws=n_draws)
        try:
            with store.SampleStore(view_path) as view:
                held = _Held.of(view, args["max_block_mb"]) if on_read is not None else None
                if held is None:
                    inv, failed, table = _identifiable(view, ds, the_target, threads, args, failed)
        finally:
            view_path.unlink(missing_ok=True)
        if held is not None:
            # the draws are in memory and the view is closed: the batches may go on meanwhile
            on_read()
            inv, failed, table = _identifiable(held, ds, the_target, threads, args, failed)
        short = diagnostics.identifiable_shortfalls(inv)
        reading = (
            f"not converged at {n_draws} draws per chain: {'; '.join(short)}"
            if short
            else f"converged at {n_draws} draws per chain: U, the outputs on the data and the "
            f"canonical parameters all have R-hat < {u['r_hat']:g} and ESS > {u['ess']:g}"
        )
        worst = ("max_r_hat", "min_ess_bulk", "min_ess_tail")
        return {
            "draws": n_draws,
            "converged": not short,
            "reading": reading,
            "draws_needed": _draws_needed(inv, n_draws, u),
            **{
                space: {k: None if inv[space].get(k) is None else float(inv[space][k])
                        for k in worst}
                for space in diagnostics.IDENTIFIABLE
            },
            # the diagnose rule reads the table of the check the run stops at from the store
            # instead of measuring the same draws again
            **({} if table is None else {
                engine.STORE_GROUPS: {diagnostics.UNTIL_GROUP: diagnostics.table_group(table)}
            }),
        }  # fmt: skip

    return check
