"""One function per workflow rule: the only code that reads the validated config.

Each step declares in :data:`READS` the config settings its numbers depend on. The rule passes
exactly those as its ``params`` (:func:`settings`), so the rerun trigger and the step's
interface are one thing; a step reading a setting it did not declare fails with a message that
names it. :data:`RUNTIME` lists settings that say where a step runs and change no number (the
Dask placement): they reach the step from the config at run time and never rerun a job.

Below this layer the library (model, samplers, engine, store, analyses, plots) takes plain
arguments and never sees the config.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossatlas import config as lacfg

# what every analysis of the stored draws reads: the network, its coordinates, the read blocks
_DRAWS = ("seed", "coordinates", "model", "reduce.draw_block", "reduce.max_block_mb")
_NETWORK = ("model", "target.box", "target.beta", "target.energy")
READS: dict[str, tuple[str, ...]] = {
    "dataset": ("dataset",),
    # sampler.until's check reads the draws in the diagnose rule's blocks
    "sample": (
        "seed",
        *_NETWORK,
        "sampler",
        "diagnose.param_block",
        "reduce.draw_block",
        "reduce.max_block_mb",
    ),
    "diagnose": ("diagnose", *_NETWORK, "reduce.draw_block", "reduce.max_block_mb", "figures.dpi"),
    "reduce": (
        "seed",
        "coordinates",
        "model",
        "reduce",
        "target.good_threshold",
        "target.energy",
        "figures.dpi",
    ),
    "figures": ("experiments", "target.good_threshold", "figures.dpi"),
    "dataset_figure": ("figures.dpi",),
    "dimension": (
        *_DRAWS,
        "target",
        "landscape.census.dense_max",
        "reduce.kpca.n_components",
        "reduce.kpca.gamma",
        "reduce.pca.n_components",
        "landscape.dimension",
    ),
    "pipeline_null": (
        "seed",
        "coordinates",
        "model",
        "target.box",
        "sampler.n_chains",
        "sampler.draws",
        "reduce.kpca.n_components",
        "reduce.kpca.gamma",
        "landscape.dimension.n_null",
        "landscape.dimension.pipeline_max_draws",
        "landscape.dimension.max_mb",
    ),
    "census": (*_DRAWS, "target", "reduce.pca.n_components", "landscape.census", "figures.dpi"),
    "connect": (
        "seed",
        "model",
        "target",
        "reduce.draw_block",
        "reduce.max_block_mb",
        "landscape.connect",
        "figures.dpi",
    ),
    "cells": (
        "seed",
        "model",
        "target",
        "reduce.draw_block",
        "reduce.max_block_mb",
        "landscape.cells.max_cells",
        "landscape.cells.directions_per_dim",
        "figures.dpi",
    ),
    "critical_points": (
        "seed",
        "dataset",
        *_NETWORK,
        "landscape.band.n_starts",
        "landscape.band.saddle_search",
        "landscape.band.n_heldout",
        "landscape.band.prior_sigma",
    ),
    "band": ("experiments", "figures.dpi"),
    "theory": ("expected", "experiments", *_NETWORK, "landscape.connect"),
    "compare": (
        *_DRAWS,
        "target.box",
        "target.good_threshold",
        "landscape.compare",
        "experiments",
        "figures.dpi",
    ),
    # the report's first page states the settings every result was made with
    "findings": (
        "seed",
        "dataset",
        "experiments",
        "model",
        "target",
        "sampler",
        "coordinates",
        "diagnose",
        "reduce",
        "landscape",
        "figures",
    ),
}
# restore samples again what sample sampled, with the same settings, where sample runs
READS["restore"] = READS["sample"]
RUNTIME: dict[str, tuple[str, ...]] = {
    "sample": ("dask", "results"),
    "restore": ("dask", "results"),
}


class UndeclaredSetting(KeyError):
    """A step read a setting outside its declared ones (:data:`READS`)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _canonical(obj):
    if isinstance(obj, Mapping):
        items = dict(dict.items(obj)) if isinstance(obj, dict) else dict(obj)
        return {k: _canonical(items[k]) for k in sorted(items)}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    return obj


class Settings(dict):
    """The settings one step may read, in the config's order.

    Reading an undeclared key raises :class:`UndeclaredSetting` naming the step and the path.
    ``repr`` sorts the keys: Snakemake compares params by their repr, so reordering a config
    file must not rerun anything. ``reads`` collects the dotted paths of the values read (the
    tests check each step against its declaration with it).
    """

    def __init__(self, values: Mapping, step: str, prefix: str = "", reads: set | None = None):
        self.step, self.prefix = step, prefix
        self.reads = set() if reads is None else reads
        super().__init__(
            (k, Settings(v, step, f"{prefix}{k}.", self.reads) if isinstance(v, Mapping) else v)
            for k, v in values.items()
        )

    def __missing__(self, key):
        raise UndeclaredSetting(
            f"step {self.step!r} read the setting {self.prefix}{key}, which it does not "
            f"declare: add it to lossatlas.steps.READS[{self.step!r}] (the rule's params)"
        )

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if not isinstance(value, Settings):
            self.reads.add(f"{self.prefix}{key}")
        return value

    def __iter__(self):
        # a Python-level __iter__ makes dict(s) and f(**s) go through __getitem__ (recorded)
        return super().__iter__()

    def items(self):
        return [(k, self[k]) for k in self]

    def values(self):
        return [self[k] for k in self]

    def get(self, key, default=None):
        # a declared key absent from the config is a hole in the declaration, not a default
        return self[key]

    def __repr__(self) -> str:
        return repr(_canonical(self))

    def __reduce__(self):
        # Snakemake hands params to scripts pickled: rebuild with the step's name
        return (Settings, (dict(dict.items(self)), self.step, self.prefix))


def _pick(cfg: Mapping, paths: tuple[str, ...]) -> dict:
    """The parts of ``cfg`` at the dotted ``paths``, nested, in the config's order."""
    out: dict = {}
    for key, value in cfg.items():
        below = tuple(p[len(key) + 1 :] for p in paths if p.startswith(f"{key}."))
        if key in paths:
            out[key] = value
        elif below:
            out[key] = _pick(value, below)
    return out


def settings(step: str, cfg: Mapping) -> Settings:
    """The settings of a validated config that ``step`` reads (:data:`READS`)."""
    return Settings(_pick(cfg, READS[step]), step)


def runtime(step: str, cfg: Mapping) -> Settings:
    """The run-time settings of ``step`` (:data:`RUNTIME`): where it runs, not what it computes."""
    return Settings(_pick(cfg, RUNTIME.get(step, ())), step)


# --- settings -> library arguments ----------------------------------------------------------


def experiment_param(e: lacfg.Experiment) -> dict[str, Any]:
    """A rule's ``experiment`` param: name, sweep index (it seeds the chains), transforms (and
    hidden widths, when the sweep varies them)."""
    param = {"name": e.name, "index": e.index, "transforms": [list(t) for t in e.transforms]}
    if e.hidden is not None:
        param["hidden"] = list(e.hidden)
    return param


def experiment(values: Mapping) -> lacfg.Experiment:
    """An experiment from a rule's ``experiment`` param (name, index, transforms, hidden)."""
    transforms = tuple(tuple(t) for t in values["transforms"])
    hidden = tuple(values["hidden"]) if values.get("hidden") is not None else None
    return lacfg.Experiment(
        name=values["name"], index=int(values["index"]), transforms=transforms, hidden=hidden
    )


def settings_of_experiment(step: str, cfg: dict, name: str) -> Settings:
    """:func:`settings` of ``step`` as experiment ``name`` runs it (its own hidden widths)."""
    return settings(step, lacfg.for_experiment(cfg, name))


def sampling_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.sampling.engine.run_experiment` and ``batch_specs``."""
    t = s["target"]
    return {
        "seed": s["seed"],
        "model": dict(s["model"]),
        "target": {"box": t["box"], "beta": t["beta"], "energy": t["energy"]},
        "sampler": _plain(s["sampler"]),
    }


def _with_hidden(s: Mapping, hidden) -> Mapping:
    """Settings ``s`` with ``model.hidden`` replaced (one experiment of an architecture sweep)."""
    return {**s, "model": {**s["model"], "hidden": list(hidden)}}


def _plain(obj):
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def target(s: Mapping, dataset):
    """The :class:`lossatlas.model.Target` of the settings' model and target on ``dataset``."""
    from lossatlas import model

    m, t = s["model"], s["target"]
    return model.target_for(
        dataset,
        hidden=m["hidden"],
        activation=m["activation"],
        loss=m["loss"],
        bias=m["bias"],
        box=t["box"],
        beta=t["beta"],
        energy=t["energy"],
    )


def point_target(s: Mapping, dataset):
    """:func:`target` for the analyses that evaluate it point by point (optimisers, Hessians):
    computed by the fused code where that is faster at one point."""
    from lossatlas.sampling import fused

    return fused.for_optimisers(target(s, dataset))


def sizes(s: Mapping, dataset) -> tuple[int, ...]:
    from lossatlas import model

    return model.layer_sizes(dataset, s["model"]["hidden"])


def coordinates(s: Mapping, dataset):
    """The analysis coordinates' transform of ``coordinates`` (None: raw)."""
    from lossatlas.model import symmetry

    m = s["model"]
    return symmetry.coordinate_transform(
        s["coordinates"], sizes(s, dataset), m["activation"], m["loss"], m["bias"]
    )


def blocks(s: Mapping) -> dict[str, Any]:
    """How many draws one read of the store holds (``reduce.draw_block``, ``max_block_mb``)."""
    return {"draw_block": s["reduce"]["draw_block"], "max_block_mb": s["reduce"]["max_block_mb"]}


def reduce_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.reduce.reduce_draws`."""
    r = s["reduce"]
    return {
        "good_threshold": s["target"]["good_threshold"],
        "seed": s["seed"],
        "kpca": dict(r["kpca"]),
        "n_pca": r["pca"]["n_components"],
        "max_gather_mb": r["pca"]["max_gather_mb"],
        **blocks(s),
    }


def invariant_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.landscape.invariant_diagnostics`."""
    c = s["diagnose"]
    return {
        "param_block": c["param_block"],
        "rhat_max": c["rhat_max"],
        "ess_min": c["ess_min"],
        **blocks(s),
    }


def dimension_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.landscape.dimension_rows`."""
    kpca = {
        "n_kpca": s["reduce"]["kpca"]["n_components"],
        "n_pca": s["reduce"]["pca"]["n_components"],
        "gamma": s["reduce"]["kpca"]["gamma"],
    }
    return {
        "coordinates": s["coordinates"],
        "good_threshold": s["target"]["good_threshold"],
        "box": s["target"]["box"],
        "seed": s["seed"],
        "kpca": kpca,
        **blocks(s),
        **s["landscape"]["dimension"],
    }


def pipeline_null_key(s: Mapping, dataset) -> dict[str, Any]:
    """What the shared uniform pipeline null depends on: its file holds it, and the dimension
    rule uses the file only when its own settings give the same."""
    dc, kpca = s["landscape"]["dimension"], s["reduce"]["kpca"]
    return {
        "sizes": list(sizes(s, dataset)),
        "model": _plain(s["model"]),
        "coordinates": s["coordinates"],
        "box": s["target"]["box"],
        "seed": s["seed"],
        "kpca": {"n_kpca": kpca["n_components"], "gamma": kpca["gamma"]},
        **{k: dc[k] for k in ("n_null", "pipeline_max_draws", "max_mb")},
    }


def laplace_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.landscape.laplace_null`."""
    dc = s["landscape"]["dimension"]
    return {
        "good_threshold": s["target"]["good_threshold"],
        "seed": s["seed"],
        "max_points": dc["max_points"],
        "dense_max": s["landscape"]["census"]["dense_max"],
        "max_mb": dc["max_mb"],
        **blocks(s),
    }


def census_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.landscape.run_census`."""
    return {
        "coordinates_name": s["coordinates"],
        "good_threshold": s["target"]["good_threshold"],
        "seed": s["seed"],
        **blocks(s),
        **s["landscape"]["census"],
    }


def plane_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.landscape.good_plane`."""
    return {
        "n_components": s["reduce"]["pca"]["n_components"],
        "max_mb": s["landscape"]["census"]["max_mb"],
        **blocks(s),
    }


def good_rows_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.landscape.good_rows`."""
    cc = s["landscape"]["compare"]
    return {
        "good_threshold": s["target"]["good_threshold"],
        "max_points": cc["max_points"],
        "max_mb": cc["max_mb"],
        "seed": s["seed"],
        **blocks(s),
    }


def compare_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.landscape.compare_rows`."""
    return {
        "coordinates": s["coordinates"],
        "box": s["target"]["box"],
        "seed": s["seed"],
        **s["landscape"]["compare"],
    }


def _write_json(path, doc) -> None:
    Path(path).write_text(json.dumps(doc, indent=2, default=float) + "\n")


# --- the steps -------------------------------------------------------------------------------


def dataset(output, s: Mapping, exp: Mapping, log: logging.Logger) -> None:
    """Write one experiment's transformed dataset."""
    from lossatlas import data

    e = experiment(exp)
    ds = data.for_experiment(_plain(s["dataset"]), e.transforms)
    ds.save(output)
    log.info(
        "%s: %d points, %d features, transforms %s",
        e.name,
        ds.n_points,
        ds.n_features,
        e.transforms,
    )


def sample(
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
    from lossatlas.data import Dataset
    from lossatlas.sampling import cluster, engine
    from lossatlas.storage import maintenance

    e = experiment(exp)
    ds = Dataset.load(dataset_path)
    out = Path(samples_path)
    store = Path(store_path or out)
    d = _plain(run["dask"])
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
        with cluster.connect(d, threads=threads, log=log) as client:
            aside = maintenance.describe_aside(out.parent.parent)
            if aside:
                log.info(aside)
            check = None
            if s["sampler"]["until"]:
                check = until_check(s, ds, threads, out.parent / ".until-view.h5")
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
    dataset_path,
    samples_path,
    restored_path,
    s: Mapping,
    run: Mapping,
    exp: Mapping,
    threads: int,
    log: logging.Logger,
) -> None:
    """Sample again the batches ``lossatlas verify --repair`` moved aside, under the store the
    analyses read, and check that they are the draws it showed: the energy of every draw equals
    the one ``samples.h5`` recorded when it was built. Then nothing downstream needs redoing.
    Where they differ, ``samples.h5`` is removed, so the next run rebuilds it and everything
    that read it."""
    from lossatlas.storage import maintenance, store

    samples = Path(samples_path)
    view = samples.with_name(".restore-view.h5")
    summary = sample(dataset_path, samples, s, run, exp, threads, log, store_path=view)
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
    _write_json(
        restored_path,
        {
            "experiment": samples.parent.name,
            "moved_aside": moved,
            "draws_computed": summary["draws_computed"],
            "energies_equal": True,
        },
    )


def until_check(s: Mapping, ds, threads: int, view_path):
    """``sampler.until``'s check for :func:`lossatlas.sampling.engine.run_experiment`: at
    ``n_draws`` per chain, the diagnose rule's measures of what the data identify (U, the
    outputs on the data, the canonical parameters) against ``until``'s R-hat and ESS, on a
    view of the batch files' first ``n_draws`` draws at ``view_path`` (verified as
    ``samples.h5`` is, and removed after)."""
    from lossatlas.analysis import diagnostics, landscape
    from lossatlas.model.network import model_layout
    from lossatlas.storage import store

    u = s["sampler"]["until"]
    names = model_layout(ds, s["model"]).names()
    args = {
        "param_block": s["diagnose"]["param_block"],
        "rhat_max": u["r_hat"],
        "ess_min": u["ess"],
        **blocks(s),
    }
    view_path = Path(view_path)
    the_target = target(s, ds)

    def check(paths, n_draws: int) -> dict:
        store.build(paths, view_path, names, n_draws=n_draws)
        try:
            with store.SampleStore(view_path) as view:
                raw = diagnostics.summarize(
                    view.theta, view.potential(), names, args["param_block"], threads
                )
                _, inv = landscape.invariant_diagnostics(
                    view, ds, the_target, raw, workers=threads, **args
                )
        finally:
            view_path.unlink(missing_ok=True)
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
            **{
                space: {k: None if inv[space][k] is None else float(inv[space][k]) for k in worst}
                for space in diagnostics.IDENTIFIABLE
            },
        }

    return check


def diagnose(inputs, outputs, s: Mapping, name: str, threads: int, log: logging.Logger) -> None:
    """Convergence table and checks, the same on canonical parameters and invariant
    quantities, and their figures."""
    from lossatlas import plots
    from lossatlas.analysis import diagnostics, landscape
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    c = s["diagnose"]
    ds = Dataset.load(inputs.dataset)
    with SampleStore(inputs.samples) as store:
        energy = store.potential()
        # Streams theta by parameter blocks; the whole array is never read.
        table, norm, verdict = diagnostics.diagnose(
            store.theta,
            energy,
            store.param_names,
            block=c["param_block"],
            rhat_max=c["rhat_max"],
            ess_min=c["ess_min"],
            alpha=c["normality_alpha"],
            n_batches=c["n_batches"],
            workers=threads,
        )
        # Symmetric copies of one network look like unmixed modes in raw coordinates; canonical
        # parameters and the outputs on the data do not change under the symmetries.
        inv, inv_summary = landscape.invariant_diagnostics(
            store,
            ds,
            target(s, ds),
            table,
            workers=threads,
            tmp_dir=Path(outputs.summary).parent,
            **invariant_arguments(s),
        )
    inv.to_csv(outputs.invariant, index=False)
    Path(outputs.invariant_summary).write_text(json.dumps(inv_summary, indent=2) + "\n")
    verdict = diagnostics.identifiable_verdict(verdict, inv_summary)
    written = diagnostics.write(Path(outputs.summary).parent, table, norm, verdict)
    for key in ("summary", "normality", "convergence"):
        if Path(written[key]) != Path(getattr(outputs, key)):
            raise RuntimeError(
                f"diagnostics.write wrote {written[key]}, the rule expects {getattr(outputs, key)}"
            )

    dpi = s["figures"]["dpi"]
    plots.plot_trace(energy, outputs.trace, name="U", title=name, dpi=dpi)
    plots.plot_rank(energy, outputs.rank, name="U", title=name, dpi=dpi)
    plots.rhat(table, outputs.rhat, rhat_max=c["rhat_max"], title=name, dpi=dpi)
    for space in ("U", "raw parameters", "canonical parameters", "outputs on the data"):
        log.info("%s: %s %s", name, space, inv_summary[space])
    log.info("%s: %s", name, verdict["reading"])


def reduce(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """Kernel PCA of all draws, linear PCA of the good ones (in the analysis coordinates), the
    3-D kernel-PCA figure and the energy histogram with the good cut."""
    from lossatlas import plots
    from lossatlas.analysis import reduce as rd
    from lossatlas.data import Dataset
    from lossatlas.storage import streaming
    from lossatlas.storage.store import SampleStore

    ds = Dataset.load(inputs.dataset)
    with SampleStore(inputs.samples) as store:
        # theta is streamed by draw blocks; energy and mean loss are (chain, draw), small.
        transform = coordinates(s, ds)
        # canonical coordinates are computed one block of draws at a time as reduce reads them
        theta = (
            store.theta
            if transform is None
            else streaming.DrawView(store.theta, transform, **blocks(s))
        )
        result = rd.reduce_draws(
            theta, store.potential(), store.stat("mean_loss"), **reduce_arguments(s)
        )
        result.summary["coordinates"] = s["coordinates"]
    result.save(outputs.reduction)
    Path(outputs.summary).write_text(json.dumps(result.summary, indent=2) + "\n")
    plots.plot_kpca_3d(
        result.embedding,
        result.energy,
        outputs.kpca_3d,
        seed=s["seed"],
        fractions=result.summary["kpca"].get("component_fraction"),
        title=name,
        dpi=s["figures"]["dpi"],
    )
    # the good cut in U: mean loss times the point count (energy: sum), or U itself (mean)
    points = ds.n_points if s["target"]["energy"] == "sum" else 1
    plots.plot_energy_hist(
        result.energy,
        outputs.energy_hist,
        title=name,
        good_below=s["target"]["good_threshold"] * points,
        dpi=s["figures"]["dpi"],
    )
    log.info("%s: kernel PCA %s", name, json.dumps(result.summary["kpca"]))
    log.info("%s: good draws %s", name, json.dumps(result.summary["good"]))


def _titles(s: Mapping, names) -> dict[str, str]:
    from lossatlas import plots

    exps = lacfg.experiments(s)
    return {n: plots.experiment_title(n, exps[n].transforms) for n in names}


def figures(inputs, outputs, s: Mapping, names, log: logging.Logger) -> None:
    """The report's Figure 1 (datasets) and Figure 2 (good minima), one panel each."""
    from lossatlas import plots
    from lossatlas.analysis import reduce as rd
    from lossatlas.data import Dataset

    names = list(names)
    dpi = s["figures"]["dpi"]
    titles = _titles(s, names)
    datasets = {n: Dataset.load(p) for n, p in zip(names, inputs.datasets, strict=True)}
    plots.plot_datasets(datasets, outputs.fig1, titles=titles, dpi=dpi)
    reductions = {n: rd.load(p) for n, p in zip(names, inputs.reductions, strict=True)}
    threshold = s["target"]["good_threshold"]
    plots.plot_good_minima(reductions, outputs.fig2, titles=titles, threshold=threshold, dpi=dpi)
    log.info("wrote %s and %s", outputs.fig1, outputs.fig2)


def dataset_figure(inputs, outputs, s: Mapping, exp: Mapping, log: logging.Logger) -> None:
    """One experiment's dataset, for its section of the report."""
    from lossatlas import plots
    from lossatlas.data import Dataset

    e = experiment(exp)
    title = plots.experiment_title(e.name, e.transforms)
    ds = Dataset.load(inputs.dataset)
    plots.plot_datasets(
        {e.name: ds}, outputs.figure, titles={e.name: title}, dpi=s["figures"]["dpi"]
    )
    log.info("wrote %s", outputs.figure)


def _census_points(inputs) -> tuple[pd.DataFrame, np.ndarray]:
    """The census table and its points' raw coordinates (row ``id``), from the census rule."""
    with np.load(inputs.census_points) as f:
        return pd.read_csv(inputs.census), f["points"]


def pipeline_null(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """The report's pipeline on uniform draws in the box, once for every experiment with the
    network ``name``: its kernel PCA embeddings, the costly half of that null."""
    from lossatlas.analysis import landscape
    from lossatlas.data import Dataset
    from lossatlas.model.layout import ParamLayout

    ds = Dataset.load(inputs.dataset)
    key = pipeline_null_key(s, ds)
    embeddings = landscape.network_pipeline_null(
        ParamLayout(key["sizes"], s["model"]["bias"]).p,
        coordinates(s, ds),
        s["sampler"]["n_chains"] * s["sampler"]["draws"],
        **key,
    )
    np.savez(outputs.null, embeddings=embeddings, key=json.dumps(key, sort_keys=True))
    log.info("network %s: %d replicates of %d draws", key["sizes"], *embeddings.shape[:2])


def _shared_pipeline_null(inputs, s: Mapping, dataset, log) -> np.ndarray | None:
    """The pipeline_null rule's embeddings, when they were made for these settings."""
    if not hasattr(inputs, "pipeline_null"):
        return None
    with np.load(inputs.pipeline_null) as f:
        made_for, embeddings = str(f["key"]), f["embeddings"]
    if made_for != json.dumps(pipeline_null_key(s, dataset), sort_keys=True):
        log.info("%s holds another network's null: computing this one", inputs.pipeline_null)
        return None
    log.info("uniform pipeline null read from %s", inputs.pipeline_null)
    return embeddings


def dimension(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """Dimension statistics of the good draws against null models."""
    from lossatlas.analysis import landscape
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    dc = s["landscape"]["dimension"]
    ds = Dataset.load(inputs.dataset)
    transform = coordinates(s, ds)
    shared = _shared_pipeline_null(inputs, s, ds, log)
    with SampleStore(inputs.samples) as store:
        laplace = landscape.laplace_null(
            store, point_target(s, ds), *_census_points(inputs), transform, **laplace_arguments(s)
        )
        rows, meta = landscape.dimension_rows(
            store, transform, laplace=laplace, pipeline_null=shared, **dimension_arguments(s)
        )
    # the settings sit after the threshold in the JSON, as they always have
    keys = list(meta)
    at = keys.index("threshold") + 1
    meta = {
        **{k: meta[k] for k in keys[:at]},
        "settings": _plain(dc),
        **{k: meta[k] for k in keys[at:]},
    }
    table = pd.DataFrame(rows)
    table.insert(0, "experiment", name)
    table.to_csv(outputs.table, index=False)
    _write_json(outputs.json, {**meta, "experiment": name, "rows": table.to_dict(orient="records")})
    for r in rows:
        log.info("%s %s/%s: %s", name, r["statistic"], r["null"], r["verdict"])


def census(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """Critical points from many starts, classified; their figures."""
    from lossatlas import plots
    from lossatlas.analysis import landscape
    from lossatlas.analysis import reduce as rd
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    cc = s["landscape"]["census"]
    ds = Dataset.load(inputs.dataset)
    transform = coordinates(s, ds)
    with SampleStore(inputs.samples) as store:
        c, table, meta = landscape.run_census(
            store, point_target(s, ds), transform, **census_arguments(s)
        )
        meta["settings"] = _plain(cc)
        reduction = rd.load(inputs.reduction)
        plane = landscape.good_plane(store, transform, reduction, c.points, **plane_arguments(s))
    table.insert(0, "experiment", name)
    table.to_csv(outputs.table, index=False)
    meta["plane"] = (
        "no plane: fewer than 2 good draws"
        if plane is None
        else {"explained_variance_ratio": plane["ratio"], "matches_reduce": plane["matches_reduce"]}
    )
    _write_json(outputs.json, {**meta, "experiment": name, "rows": table.to_dict(orient="records")})
    np.savez(
        outputs.points,
        points=c.points,
        ends=c.ends,
        end_U=c.end_U,
        assignment=c.assignment,
    )
    dpi = s["figures"]["dpi"]
    plots.plot_census_loss_index(table, outputs.loss_index, title=name, dpi=dpi)
    plots.plot_census_plane(plane, table, outputs.plane, title=name, dpi=dpi)
    log.info("%s: %d starts, counts %s", name, meta["n_starts"], meta["counts"])
    log.info("%s: plane %s", name, meta["plane"])


def connect(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """Are the census minima connected? Paths, barriers and the merge tree; and how many
    components of the level set the draws below it touch, at most."""
    from lossatlas import plots
    from lossatlas.analysis import connect, landscape
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    settings = dict(s["landscape"]["connect"])
    knn = {k: settings.pop(k) for k in ("knn_points", "knn_k", "knn_merges", "max_mb")}
    the_target = point_target(s, Dataset.load(inputs.dataset))
    table, meta = landscape.run_connect(
        the_target,
        *_census_points(inputs),
        good_threshold=s["target"]["good_threshold"],
        **settings,
    )
    if knn["knn_points"]:
        budget = connect.dss_budget(settings)
        with SampleStore(inputs.samples) as store:
            meta["from_samples"] = landscape.sample_components(
                the_target, store, level=meta["level"], **knn, seed=s["seed"],
                **blocks(s), dss_budget=budget,
            )  # fmt: skip
    table.insert(0, "experiment", name)
    table.to_csv(outputs.table, index=False)
    _write_json(
        outputs.json, {**meta, "experiment": name, "settings": _plain(s["landscape"]["connect"])}
    )
    dpi = s["figures"]["dpi"]
    plots.plot_connect_tree(meta, outputs.tree, title=name, dpi=dpi)
    plots.plot_connect_profiles(meta, outputs.profiles, title=name, dpi=dpi)
    plots.plot_connect_length(meta, outputs.length, title=name, dpi=dpi)
    sampled = meta.get("from_samples", {})
    log.info(
        "%s: %d minima, %d pairs refined (%d connected at %g, %d modulo symmetry); %s "
        "components at the level among the minima, at most %s among %s draws below it",
        name, len(meta["nodes"]), len(table), int(table["connected"].sum()), meta["level"],
        int(table["sym_connected"].sum()), meta.get("components_at_level"),
        sampled.get("upper_bound"), sampled.get("n_points"),
    )  # fmt: skip


def cells(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """Liu's convex cells: where the draws and census minima lie, each cell's minimum, genuine
    or spurious, how much posterior mass the visited cells hold."""
    from lossatlas import plots
    from lossatlas.analysis import landscape
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    settings = s["landscape"]["cells"]
    with SampleStore(inputs.samples) as store:
        table, meta = landscape.run_cells(
            target(s, Dataset.load(inputs.dataset)),
            store,
            *_census_points(inputs),
            good_threshold=s["target"]["good_threshold"],
            max_cells=settings["max_cells"],
            directions_per_dim=settings["directions_per_dim"],
            seed=s["seed"],
            **blocks(s),
        )
    table.insert(0, "experiment", name)
    table.to_csv(outputs.table, index=False)
    _write_json(outputs.json, {**meta, "experiment": name, "settings": _plain(settings)})
    plots.plot_cells(table, meta, outputs.figure, title=name, dpi=s["figures"]["dpi"])
    log.info(
        "%s: %d draws in %d of 10^%.1f cells; %d examined (%.1f %% of the mass): %d genuine, "
        "%d spurious, %d genuine with z > 0; unseen mass %.3g (draws) / %.3g (chains); "
        "census minima consistent: %s",
        name, meta["draws"], meta["cells_visited"], meta["log10_cells_of_layer"],
        meta["examined"], 100 * meta["mass_examined"], meta["genuine"], meta["spurious"],
        meta["genuine_z_positive"], meta["unseen_mass_good_turing"],
        meta["unseen_mass_by_chains"], meta["census_consistent"],
    )  # fmt: skip


CRITICAL_COLUMNS = [
    "experiment", "p", "start", "method", "U", "mean_loss", "grad_inf", "critical", "index",
    "index_fraction", "heldout_loss",
]  # fmt: skip


def critical_points(inputs, outputs, s: Mapping, exp: Mapping, log: logging.Logger) -> None:
    """One network's critical points from random starts: loss, index, held-out loss."""
    from lossatlas import data
    from lossatlas.analysis import band

    e = experiment(exp)
    settings = s["landscape"]["band"]
    the_target = target(s, data.Dataset.load(inputs.dataset))
    # the starts depend on the master seed and the experiment, never on other experiments
    rng = np.random.default_rng([s["seed"], e.index])
    starts = band.init_starts(the_target.mlp.layout, settings["n_starts"], the_target.box, rng)
    found = band.critical_points(
        band.with_prior(the_target.U_and_grad, settings["prior_sigma"]),
        starts,
        the_target.box,
        saddle_search=settings["saddle_search"],
    )
    found["U"] = the_target.U(found["points"]) if len(found["U"]) else found["U"]
    heldout = data.heldout_for_experiment(_plain(s["dataset"]), e.transforms, settings["n_heldout"])
    if heldout is not None:
        held = target(s, heldout)
        heldout_loss = held.mean_loss(held.U(found["points"])) if len(found["U"]) else []
    else:
        heldout_loss = np.full(len(found["U"]), np.nan)
    n = len(starts)
    table = pd.DataFrame(
        {
            "experiment": e.name,
            "p": the_target.p,
            "start": found["start"],
            "method": found["method"],
            "U": found["U"],
            "mean_loss": the_target.mean_loss(found["U"]),
            "grad_inf": found["grad_inf"],
            "critical": found["critical"],
            "index": found["index"],
            "index_fraction": found["index"] / the_target.p,
            "heldout_loss": heldout_loss,
        },
        columns=CRITICAL_COLUMNS,
    )
    table.to_csv(outputs.table, index=False)
    log.info(
        "%s: p = %d, %d critical points among %d ends from %d starts (index counts %s)",
        e.name, the_target.p, int(found["critical"].sum()), len(table), n,
        np.bincount(found["index"][found["critical"]]).tolist(),
    )  # fmt: skip


def band(inputs, outputs, s: Mapping, names, log: logging.Logger) -> None:
    """Choromanska's band across the width sweep: per network, the 5-95 % range of its
    minima's losses, the held-out range, the rank correlation of index and loss."""
    from lossatlas import plots
    from lossatlas.analysis import band as choromanska

    ends = [pd.read_csv(path) for path in inputs.tables]
    tables = [t[t["critical"]] for t in ends]
    sweep = lacfg.experiments(s)  # the band runs on width sweeps only: each has its widths
    rows = []
    for name, every, t in zip(names, ends, tables, strict=True):
        hidden = sweep[name].hidden
        held = t["heldout_loss"].to_numpy() if t["heldout_loss"].notna().any() else None
        summary = choromanska.summary(
            t["mean_loss"], t["index"], int(every["p"].iloc[0]), heldout=held
        )
        rows.append(
            {"experiment": name, "hidden": "x".join(map(str, hidden)), "n_ends": len(every),
             **summary}
        )  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(outputs.table, index=False)
    _write_json(
        outputs.json,
        {
            "networks": rows,
            "critical": "an end is a critical point when it lies inside the box and its largest "
            "gradient component is at most 1e-8 (1 + |U|); n_ends - n_critical ends stopped "
            "elsewhere (a ReLU network's kinks, where no gradient vanishes)",
            "quantiles": list(choromanska.BAND),
            "meaning": "per network: band_lo/band_hi are the 5 and 95 % quantiles of the mean "
            "loss over critical points of index 0 found from random starts (repeats kept: the "
            "distribution over starts), heldout_* the same for their held-out loss, rank_corr "
            "Spearman's correlation of index/p and loss over every critical point; "
            "Choromanska et al. predict the band narrows as the network grows and the index "
            "grows with the loss",
        },
    )
    plots.plot_band(tables, table, outputs.figure, dpi=s["figures"]["dpi"])
    log.info(
        "band: %s", table[["experiment", "p", "band_lo", "band_hi", "rank_corr"]].to_dict("records")
    )


def theory(inputs, outputs, s: Mapping, names, log: logging.Logger) -> None:
    """The config's ``expected`` checks on every experiment, against the theorems' answers."""
    from lossatlas.analysis import theory as known
    from lossatlas.data import Dataset

    tables = []
    for name, dataset, census, connections in zip(
        names, inputs.datasets, inputs.census, inputs.connect, strict=True
    ):
        table = known.run_checks(
            s["expected"],
            target(_with_hidden(s, lacfg.hidden_of(s, name)), Dataset.load(dataset)),
            census=pd.read_csv(census),
            connections=pd.read_csv(connections),
            settings=_plain(s["landscape"]["connect"]),
        )
        table.insert(0, "experiment", name)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(outputs.table, index=False)
    log.info("%d of %d checks passed", int(table["passed"].sum()), len(table))
    failed = table[~table["passed"]]
    for row in failed.itertuples():
        log.warning("failed: %s %s: predicted %s, measured %s", row.check, row.quantity,
                    row.predicted, row.measured)  # fmt: skip
    # A failed check is a result about this network and data, kept in the table and the
    # findings, not a crash that would delete it; but it must not pass for a green run: the
    # terminal (the job's stderr, which Snakemake shows) says so.
    if len(failed):
        lines = [
            f"lossatlas: {len(failed)} of {len(table)} theory checks FAILED ({outputs.table}; "
            "the findings list them):"
        ]
        lines += [
            f"  {r.experiment} {r.check}: {r.quantity}: predicted {r.predicted}, measured "
            f"{r.measured}"
            for r in failed.itertuples()
        ]
        print("\n".join(lines), file=sys.stderr, flush=True)


def compare(inputs, outputs, s: Mapping, names, log: logging.Logger) -> None:
    """Each experiment's good draws against the reference's, before and after mapping them
    back through the dataset transform."""
    from lossatlas import plots
    from lossatlas.analysis import landscape
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    names = list(names)
    ref_name = lacfg.reference(s)
    exps = lacfg.experiments(s)
    stores = dict(zip(names, inputs.samples, strict=True))
    datasets = dict(zip(names, inputs.datasets, strict=True))
    threshold = s["target"]["good_threshold"]

    def good(name):
        with SampleStore(stores[name]) as store:
            n_good = int((store.stat("mean_loss") < threshold).sum())
            return landscape.good_rows(store, **good_rows_arguments(s)), n_good

    ref, n_ref = good(ref_name)
    rows, full, figure = [], [], {}
    for name in names:
        if name == ref_name:
            continue
        if lacfg.hidden_of(s, name) != lacfg.hidden_of(s, ref_name):
            # draws of networks with other parameter counts live in other spaces
            status = (
                f"skipped: architecture {lacfg.hidden_of(s, name)} differs from the "
                f"reference's {lacfg.hidden_of(s, ref_name)}"
            )
            full.append({"experiment": name, "reference": ref_name, "status": status})
            log.info("%s vs %s: %s", name, ref_name, status)
            continue
        other, n_other = good(name)
        ds = Dataset.load(datasets[name])
        sz, key = sizes(s, ds), coordinates(s, ds)
        r, f = landscape.compare_rows(
            ref,
            other,
            sz,
            key,
            exps[ref_name],
            exps[name],
            (n_ref, n_other),
            **compare_arguments(s),
        )
        rows += r
        full.append(f)
        projection = landscape.compare_projection(ref, other, sz, key, exps[name])
        figure[name] = {"rows": r, "projection": projection}
        for row in r:
            log.info("%s vs %s %s: %s", name, ref_name, row["stage"], row)

    pd.DataFrame(rows).to_csv(outputs.table, index=False)
    _write_json(outputs.json, full)
    plots.plot_compare(figure, outputs.figure, reference=ref_name, dpi=s["figures"]["dpi"])


def findings(inputs, outputs, s: Mapping, names, method_template: str, log) -> None:
    """The report's first page (what every experiment found), the findings in full with the
    method and the settings the results were made with (``findings.json`` keeps them for the
    report)."""
    from types import SimpleNamespace

    import jinja2

    from lossatlas import findings as found_mod

    def listed(files) -> list:
        # one file of a named input may come as a string or as a list of one
        return [files] if isinstance(files, str | Path) else list(files)

    parts = ("convergence", "reduce", "dimension", "census")
    paths = {p: listed(getattr(inputs, p)) for p in parts}
    compare, checks = listed(inputs.compare), listed(inputs.checks)
    found = found_mod.gather(
        names, paths, compare[0] if compare else None, checks[0] if checks else None
    )
    alpha = s["landscape"]["compare"]["alpha"]
    # the template is the one snakemake --report renders before the run has findings
    method = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(method_template)
    text = method.render(snakemake=SimpleNamespace(config=s))
    Path(outputs.page).write_text(found_mod.summary(found, alpha=alpha))
    Path(outputs.html).write_text(found_mod.html(found_mod.details(found, text, alpha=alpha)))
    _write_json(outputs.json, {**found, "config": _plain(s)})
    for e in found["experiments"]:
        log.info("%s: converged %s, %d good draws", e["experiment"], e["converged"], e["n_good"])
