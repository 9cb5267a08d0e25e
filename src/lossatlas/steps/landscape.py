"""Steps of the landscape rules: dimension and its nulls, the census, connect, cells."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from lossatlas.steps.arguments import (
    blocks,
    census_points,
    coordinates,
    point_target,
    sizes,
    target,
)
from lossatlas.steps.settings import DRAWS, plain, write_json

READS: dict[str, tuple[str, ...]] = {
    "dimension": (
        *DRAWS,
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
        "landscape.dimension.max_points",
        "landscape.dimension.k_pca",
        "landscape.dimension.twonn_discard",
        "landscape.dimension.mle_k1",
        "landscape.dimension.mle_k2",
    ),
    "census": (*DRAWS, "target", "reduce.pca.n_components", "landscape.census", "figures.dpi"),
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
}


def dimension_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.dimension_run.dimension_rows`."""
    from lossatlas.analysis.dimension import Pipeline

    kpca = Pipeline(
        n_kpca=s["reduce"]["kpca"]["n_components"],
        n_pca=s["reduce"]["pca"]["n_components"],
        gamma=s["reduce"]["kpca"]["gamma"],
    )
    return {
        "coordinates": s["coordinates"],
        "good_threshold": s["target"]["good_threshold"],
        "box": s["target"]["box"],
        "seed": s["seed"],
        "kpca": kpca,
        **blocks(s),
        **s["landscape"]["dimension"],
    }


# the uniform null's neighbour statistics depend on these too
UNIFORM_KEYS = ("max_points", "k_pca", "twonn_discard", "mle_k1", "mle_k2")


def pipeline_null_key(s: Mapping, dataset) -> dict[str, Any]:
    """What the shared uniform nulls depend on: their file holds it, and the dimension rule
    uses the file only when its own settings give the same."""
    dc, kpca = s["landscape"]["dimension"], s["reduce"]["kpca"]
    return {
        "sizes": list(sizes(s, dataset)),
        # the network fields left at null (the MLP's) keep the key files written before them had
        "model": {k: v for k, v in plain(s["model"]).items() if v is not None},
        "coordinates": s["coordinates"],
        "box": s["target"]["box"],
        "seed": s["seed"],
        "kpca": {"n_kpca": kpca["n_components"], "gamma": kpca["gamma"]},
        **{k: dc[k] for k in ("n_null", "pipeline_max_draws", "max_mb", *UNIFORM_KEYS)},
    }


def laplace_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.dimension_run.laplace_null`."""
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
    """Keyword arguments of :func:`lossatlas.analysis.census.run_census`."""
    return {
        "coordinates_name": s["coordinates"],
        "good_threshold": s["target"]["good_threshold"],
        "seed": s["seed"],
        **blocks(s),
        **s["landscape"]["census"],
    }


def plane_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.census.good_plane`."""
    return {
        "n_components": s["reduce"]["pca"]["n_components"],
        "max_mb": s["landscape"]["census"]["max_mb"],
        **blocks(s),
    }


def pipeline_null(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """The uniform nulls of the dimension table, once for every experiment with the network
    ``name``: the report's pipeline on uniform draws in the box (its kernel PCA embeddings)
    and the neighbour statistics of uniform clouds as large as the good draws' budget."""
    from lossatlas.analysis import dimension_run
    from lossatlas.data import Dataset
    from lossatlas.model.layout import ParamLayout

    ds = Dataset.load(inputs.dataset)
    key = pipeline_null_key(s, ds)
    p, transform = ParamLayout(key["sizes"], s["model"]["bias"]).p, coordinates(s, ds)
    embeddings = dimension_run.network_pipeline_null(
        p, transform, s["sampler"]["n_chains"] * s["sampler"]["draws"], **key
    )
    uniform = dimension_run.network_uniform_null(p, transform, **key)
    clouds = {} if uniform is None else {
        "uniform_m": uniform["m"], **{f"uniform/{k}": v for k, v in uniform["values"].items()}
    }  # fmt: skip
    np.savez(outputs.null, embeddings=embeddings, key=json.dumps(key, sort_keys=True), **clouds)
    log.info("network %s: %d replicates of %d draws", key["sizes"], *embeddings.shape[:2])


def _shared_nulls(inputs, s: Mapping, dataset, log) -> dict[str, Any]:
    """The pipeline_null rule's nulls (``pipeline_null``: embeddings, ``uniform_null``: the
    clouds' statistics), when they were made for these settings; {} when not."""
    if not hasattr(inputs, "pipeline_null"):
        return {}
    with np.load(inputs.pipeline_null) as f:
        made_for, arrays = str(f["key"]), {k: f[k] for k in f.files}
    if made_for != json.dumps(pipeline_null_key(s, dataset), sort_keys=True):
        log.info("%s holds another network's null: computing this one", inputs.pipeline_null)
        return {}
    log.info("uniform nulls read from %s", inputs.pipeline_null)
    values = {k.removeprefix("uniform/"): v for k, v in arrays.items() if k.startswith("uniform/")}
    uniform = {"m": int(arrays["uniform_m"]), "values": values} if "uniform_m" in arrays else None
    return {"pipeline_null": arrays["embeddings"], "uniform_null": uniform}


def dimension(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """Dimension statistics of the good draws against null models."""
    import pandas as pd

    from lossatlas.analysis import dimension_run
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    dc = s["landscape"]["dimension"]
    ds = Dataset.load(inputs.dataset)
    transform = coordinates(s, ds)
    shared = _shared_nulls(inputs, s, ds, log)
    with SampleStore(inputs.samples) as store:
        laplace = dimension_run.laplace_null(
            store, point_target(s, ds), *census_points(inputs), transform, **laplace_arguments(s)
        )
        rows, meta = dimension_run.dimension_rows(
            store, transform, laplace=laplace, **shared, **dimension_arguments(s)
        )
    # the settings sit after the threshold in the JSON, as they always have
    keys = list(meta)
    at = keys.index("threshold") + 1
    meta = {
        **{k: meta[k] for k in keys[:at]},
        "settings": plain(dc),
        **{k: meta[k] for k in keys[at:]},
    }
    table = pd.DataFrame(rows)
    table.insert(0, "experiment", name)
    table.to_csv(outputs.table, index=False)
    write_json(outputs.json, {**meta, "experiment": name, "rows": table.to_dict(orient="records")})
    for r in rows:
        log.info("%s %s/%s: %s", name, r["statistic"], r["null"], r["verdict"])


def census(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """Critical points from many starts, classified; their figures."""
    from lossatlas.analysis import reduction
    from lossatlas.analysis.census import (
        good_plane,
        plot_census_loss_index,
        plot_census_plane,
        run_census,
    )
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    cc = s["landscape"]["census"]
    ds = Dataset.load(inputs.dataset)
    transform = coordinates(s, ds)
    with SampleStore(inputs.samples) as store:
        c, table, meta = run_census(store, point_target(s, ds), transform, **census_arguments(s))
        meta["settings"] = plain(cc)
        reduced = reduction.load(inputs.reduction)
        plane = good_plane(store, transform, reduced, c.points, **plane_arguments(s))
    table.insert(0, "experiment", name)
    table.to_csv(outputs.table, index=False)
    meta["plane"] = (
        "no plane: fewer than 2 good draws"
        if plane is None
        else {"explained_variance_ratio": plane["ratio"], "matches_reduce": plane["matches_reduce"]}
    )
    write_json(outputs.json, {**meta, "experiment": name, "rows": table.to_dict(orient="records")})
    np.savez(
        outputs.points,
        points=c.points,
        ends=c.ends,
        end_U=c.end_U,
        assignment=c.assignment,
    )
    dpi = s["figures"]["dpi"]
    plot_census_loss_index(table, outputs.loss_index, title=name, dpi=dpi)
    plot_census_plane(plane, table, outputs.plane, title=name, dpi=dpi)
    log.info("%s: %d starts, counts %s", name, meta["n_starts"], meta["counts"])
    log.info("%s: plane %s", name, meta["plane"])


def connect(inputs, outputs, s: Mapping, name: str, log: logging.Logger) -> None:
    """Are the census minima connected? Paths, barriers and the merge tree; and how many
    components of the level set the draws below it touch, at most."""
    from lossatlas.analysis import connect
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    settings = dict(s["landscape"]["connect"])
    knn = {k: settings.pop(k) for k in ("knn_points", "knn_k", "knn_merges", "max_mb")}
    the_target = point_target(s, Dataset.load(inputs.dataset))
    table, meta = connect.run_connect(
        the_target,
        *census_points(inputs),
        good_threshold=s["target"]["good_threshold"],
        **settings,
    )
    if knn["knn_points"]:
        budget = connect.dss_budget(settings)
        with SampleStore(inputs.samples) as store:
            meta["from_samples"] = connect.store_components(
                the_target, store, level=meta["level"], **knn, seed=s["seed"],
                **blocks(s), dss_budget=budget,
            )  # fmt: skip
    table.insert(0, "experiment", name)
    table.to_csv(outputs.table, index=False)
    write_json(
        outputs.json, {**meta, "experiment": name, "settings": plain(s["landscape"]["connect"])}
    )
    dpi = s["figures"]["dpi"]
    connect.plot_connect_tree(meta, outputs.tree, title=name, dpi=dpi)
    connect.plot_connect_profiles(meta, outputs.profiles, title=name, dpi=dpi)
    connect.plot_connect_length(meta, outputs.length, title=name, dpi=dpi)
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
    from lossatlas.analysis.cells import plot_cells, run_cells
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    settings = s["landscape"]["cells"]
    with SampleStore(inputs.samples) as store:
        table, meta = run_cells(
            target(s, Dataset.load(inputs.dataset)),
            store,
            *census_points(inputs),
            good_threshold=s["target"]["good_threshold"],
            max_cells=settings["max_cells"],
            directions_per_dim=settings["directions_per_dim"],
            seed=s["seed"],
            **blocks(s),
        )
    table.insert(0, "experiment", name)
    table.to_csv(outputs.table, index=False)
    write_json(outputs.json, {**meta, "experiment": name, "settings": plain(settings)})
    plot_cells(table, meta, outputs.figure, title=name, dpi=s["figures"]["dpi"])
    log.info(
        "%s: %d draws in %d of 10^%.1f cells; %d examined (%.1f %% of the mass): %d genuine, "
        "%d spurious, %d genuine with z > 0; unseen mass %.3g (draws) / %.3g (chains); "
        "census minima consistent: %s",
        name, meta["draws"], meta["cells_visited"], meta["log10_cells_of_layer"],
        meta["examined"], 100 * meta["mass_examined"], meta["genuine"], meta["spurious"],
        meta["genuine_z_positive"], meta["unseen_mass_good_turing"],
        meta["unseen_mass_by_chains"], meta["census_consistent"],
    )  # fmt: skip
