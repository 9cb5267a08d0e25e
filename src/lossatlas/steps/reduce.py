"""Steps of the reduce and figure rules: kernel PCA, the good draws, the report's figures."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossatlas import config as lacfg
from lossatlas.steps.arguments import blocks, coordinates
from lossatlas.steps.settings import experiment

READS: dict[str, tuple[str, ...]] = {
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
}


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
    from lossatlas.analysis import reduction
    from lossatlas.data import Dataset

    names = list(names)
    dpi = s["figures"]["dpi"]
    titles = _titles(s, names)
    datasets = {n: Dataset.load(p) for n, p in zip(names, inputs.datasets, strict=True)}
    plots.plot_datasets(datasets, outputs.fig1, titles=titles, dpi=dpi)
    reductions = {n: reduction.load(p) for n, p in zip(names, inputs.reductions, strict=True)}
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
