"""lossatlas from Python, without Snakemake: validate a config and sample one experiment.

    import lossatlas
    store = lossatlas.sample("config/config.yaml", "rotate-120")
    with store:
        print(store.theta.shape, store.stat("mean_loss").min())

The same steps as the workflow's ``dataset`` and ``sample`` rules, so the files and numbers are
the workflow's: a later ``snakemake`` run in the same folder resumes from these batch files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from lossatlas import config as lacfg
from lossatlas import steps
from lossatlas.storage.store import SampleStore

__all__ = ["load_config", "open_samples", "sample"]


def load_config(config: str | os.PathLike | Mapping | None = None) -> dict:
    """A validated config (defaults filled in) from a YAML file, a dict, or None (defaults)."""
    if config is None or isinstance(config, Mapping):
        return lacfg.validate(dict(config or {}))
    return lacfg.load(config)


def sample(
    config: str | os.PathLike | Mapping | None = None,
    experiment: str | None = None,
    *,
    workers: int | None = None,
    log: logging.Logger | None = None,
) -> SampleStore:
    """Sample ``experiment`` (default: the reference, else the first) of ``config`` on the
    config's Dask placement (by default a local cluster of ``workers`` processes, one per core
    when None) and return its store, opened for reading.

    Writes ``<results>/<experiment>/dataset.npz``, the batch files under ``chains/`` and
    ``samples.h5``, as the workflow does; a second call resumes and computes nothing.
    """
    cfg = load_config(config)
    log = log or logging.getLogger("lossatlas.sample")
    exps = lacfg.experiments(cfg)
    name = experiment or lacfg.reference(cfg)
    if name not in exps:
        raise lacfg.ConfigError(
            f"experiment {name!r} is not in the sweep; the config's experiments are "
            f"{', '.join(exps)}"
        )
    exp = steps.experiment_param(exps[name])
    out = Path(cfg["results"]) / name
    out.mkdir(parents=True, exist_ok=True)
    dataset = out / "dataset.npz"
    if not dataset.exists():
        steps.dataset([dataset], steps.settings("dataset", cfg), exp, log)
    threads = workers or os.cpu_count() or 1
    samples = out / "samples.h5"
    s, run = steps.settings("sample", cfg), steps.runtime("sample", cfg)
    steps.sample_chains(dataset, samples, s, run, exp, threads, log)
    return SampleStore(samples)


def open_samples(path: str | os.PathLike, group: str = "posterior"):
    """One group of a ``samples.h5`` as an xarray Dataset backed by dask, chunked like the
    batch files (a virtual dataset reports no chunks, so ``chunks={}`` would read the whole
    array as one piece): a large store opens lazily and reads whole chunks."""
    import xarray as xr

    with SampleStore(path) as store:  # also checks the batch files behind it
        chunks = store.batch_chunks
    return xr.open_dataset(path, group=group, engine="h5netcdf", chunks=chunks)
