"""Before any job: will the run fit, and can it run here? Memory and disk estimates against the
machine or the stated ``limits``, and the checks that depend on the environment (a GPU for
``backend: cuda``, the Dask scheduler's address and TLS files)."""

from __future__ import annotations

import functools
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lossatlas.config import ConfigError

__all__ = ["Estimate", "check", "check_environment", "check_resources", "estimate"]

# Arrays of a chain's state a kernel holds at once (position, proposal, gradients, momentum,
# HMC's trajectory ends, the mass matrix), each p numbers: an upper bound over rwm, mala, hmc.
STATE_COPIES = 8
# A worker process before any array: Python, NumPy, SciPy, numba's compiled kernels, Dask.
PROCESS_BASE = 400 << 20
# Per chain-draw sample stats (energy, mean loss, step size, acceptance, ...), float64.
STATS_BYTES = 8 * 8


@dataclass(frozen=True)
class Estimate:
    """What a run will need: bytes on disk for the draws, and a sampling worker's memory with
    the part each setting adds."""

    def memory_field(self, limit: int) -> str:
        """The setting to lower first when ``workers`` workers exceed ``limit`` bytes: the
        chains' state when it alone is too much (the block and the data can shrink to
        nothing, the state cannot), else the largest part."""
        parts = self.memory_parts
        if sum(parts.values()) < PROCESS_BASE:  # a bare process already exceeds the limit
            return "limits.memory_mb"
        state = "model.hidden" if "model.hidden" in parts else "sampler.chains_per_batch"
        if (PROCESS_BASE + parts[state]) * self.workers > limit:
            return state
        return max(parts, key=parts.get)

    n_params: int
    disk: int
    worker_memory: int
    memory_parts: dict[str, int]
    dataset_memory: int
    workers: int


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB" if n < 2**30 else f"{n / 2**30:,.1f} GB"


def _parse_size(text: str) -> int | None:
    from dask.utils import parse_bytes

    try:
        return int(parse_bytes(text))
    except (ValueError, TypeError):
        return None


def largest_network(cfg: dict) -> tuple[tuple[int, ...], int]:
    """Widths and parameter count of the run's largest network (a sweep may vary the hidden
    widths): the MLP's layer widths, or the numbers each layer of a convolutional network
    outputs per point (a user's model: its inputs and outputs)."""
    from lossatlas import config as lacfg
    from lossatlas import data
    from lossatlas.model import spec
    from lossatlas.model.layout import ParamLayout

    m = cfg["model"]
    n_features, n_outputs = data.feature_and_class_counts(cfg["dataset"])
    if spec.kind(m) == "conv":
        net = spec.conv_net(m, n_features, n_outputs)
        return (n_features, *(math.prod(b.out_shape) for b in net.blocks)), net.p
    if spec.kind(m) == "python":
        return (n_features, n_outputs), _user_model(m["python"], n_features, n_outputs, m["loss"])
    networks = []
    for name in lacfg.experiments(cfg):
        sizes = (n_features, *lacfg.hidden_of(cfg, name), n_outputs)
        networks.append((ParamLayout(sizes, m["bias"]).p, sizes))
    p, sizes = max(networks)
    return sizes, p


def estimate(cfg: dict) -> Estimate:
    """Disk and memory of the run of a validated config (no data is made)."""
    from lossatlas import config as lacfg
    from lossatlas import data

    ds, s = cfg["dataset"], cfg["sampler"]
    sizes, p = largest_network(cfg)
    n_features = sizes[0]
    item = np.dtype(s["dtype"]).itemsize
    n_points = data.shape_of(ds)[0]
    per_batch = min(s["chains_per_batch"], s["n_chains"])
    chains = per_batch * s["tempering"]["n_temps"]
    parts = {
        "model.hidden": chains * p * item * STATE_COPIES,
        "sampler.checkpoint_every": 2
        * per_batch
        * min(s["checkpoint_every"], s["draws"])
        * p
        * item,
        # every layer's activations and their gradients for all chains, in float64
        "dataset.n_points": 2 * chains * n_points * sum(sizes) * 8,
    }
    if p * item * STATE_COPIES < 2**30:  # no single chain is huge: the batch is too wide
        parts["sampler.chains_per_batch"] = parts.pop("model.hidden")
    n_batches = -(-s["n_chains"] // s["chains_per_batch"])
    dask = cfg["dask"]
    if dask["placement"] == "local":
        workers = dask["n_workers"] or min(n_batches, os.cpu_count() or 1)
    elif dask["placement"] == "slurm":
        workers = dask["slurm"]["processes"]  # those share one job's memory
    else:
        workers = 1
    n_exp = len(lacfg.experiments(cfg))
    return Estimate(
        n_params=p,
        disk=n_exp * s["n_chains"] * s["draws"] * (p * item + STATS_BYTES),
        worker_memory=PROCESS_BASE + sum(parts.values()),
        memory_parts=parts,
        dataset_memory=PROCESS_BASE + 4 * n_points * n_features * 8,
        workers=workers,
    )


def _free_disk(results: Path) -> int:
    where = results.resolve()
    while not where.exists():
        where = where.parent
    return shutil.disk_usage(where).free


def _written(results: Path) -> int:
    """Bytes of batch files already there: a resumed run needs only the rest."""
    return sum(p.stat().st_size for p in results.glob("*/chains/batch-[0-9][0-9][0-9][0-9].h5"))


def check_resources(cfg: dict) -> Estimate:
    """Refuse, with one line naming the field, a run whose memory or disk cannot fit."""
    est = estimate(cfg)
    limits, dask = cfg["limits"], cfg["dask"]
    results = Path(cfg["results"])
    if limits["memory_mb"] is not None:
        memory, source = limits["memory_mb"] << 20, "limits.memory_mb"
        need, what = est.worker_memory * est.workers, f"{est.workers} sampling workers"
    elif dask["placement"] == "slurm" and _parse_size(dask["slurm"]["memory"]):
        memory, source = _parse_size(dask["slurm"]["memory"]), "dask.slurm.memory"
        need, what = est.worker_memory * est.workers, f"{est.workers} workers per job"
    else:
        memory, source = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine"
        local = dask["placement"] == "local"
        need = est.worker_memory * (est.workers if local else 1)
        what = f"{est.workers} sampling workers" if local else "one sampling worker"
    if need > memory:
        field = est.memory_field(memory)
        breakdown = ", ".join(f"{k} {_mb(v)}" for k, v in est.memory_parts.items())
        other = "dask.n_workers" if source == "this machine" else source
        raise ConfigError(
            f"invalid config: {field}: {what} need about {_mb(need)} of memory "
            f"(per worker: {breakdown}, p = {est.n_params:,}), more than the {_mb(memory)} of "
            f"{source}; lower {field}, or change {other}"
        )
    if est.dataset_memory > memory:
        raise ConfigError(
            f"invalid config: dataset.n_points: the dataset needs about "
            f"{_mb(est.dataset_memory)} of memory, more than the {_mb(memory)} of {source}"
        )
    room = (limits["disk_mb"] << 20) if limits["disk_mb"] is not None else _free_disk(results)
    need_disk = est.disk - _written(results)
    if need_disk > room:
        where = "limits.disk_mb" if limits["disk_mb"] is not None else f"free under {results}/"
        raise ConfigError(
            f"invalid config: sampler.draws: the draws need about {_mb(est.disk)} on disk "
            f"(experiments x sampler.n_chains x sampler.draws x p = {est.n_params:,}), "
            f"{_mb(need_disk)} more than written, and {_mb(room)} are {where}; lower "
            "sampler.draws or sampler.n_chains, or make room"
        )
    return est


def check_environment(cfg: dict, *, local: bool) -> None:
    """What the config needs of where it runs: a GPU for ``backend: cuda`` when the jobs run on
    this machine (``local``), a user's model (``model.python``) that imports and fits the data,
    and a usable scheduler address and TLS files for joining one."""
    if cfg["model"]["python"]:
        _check_user_model(cfg)
    if cfg["sampler"]["backend"] == "cuda" and local:
        from lossatlas.sampling import cuda

        why = cuda.unavailable()
        if why:
            raise ConfigError(
                f"invalid config: sampler.backend: cuda cannot run on this machine: {why}; "
                "use backend numba, or run the jobs on a GPU node (--profile slurm with a GPU "
                "partition in dask.slurm)"
            )
    dask = cfg["dask"]
    if dask["placement"] == "address":
        address = dask["address"] if "://" in dask["address"] else "tcp://" + dask["address"]
        _join_check(dask, address, "dask.address")
    elif dask["placement"] == "scheduler_file" and any(dask["tls"].values()):
        _join_check(dask, "tls://", "dask.tls")


def _check_user_model(cfg: dict) -> None:
    """Import ``model.python`` and run it on two inputs of the data's width: every failure is
    one line naming the model (:func:`lossatlas.model.jaxnet.load_model`)."""
    from lossatlas import data

    m = cfg["model"]
    _user_model(m["python"], *data.feature_and_class_counts(cfg["dataset"]), m["loss"])


@functools.cache
def _user_model(spec: str, n_features: int, n_outputs: int, loss: str) -> int:
    """The parameter count of the user's model, loaded and checked once per process (the
    environment check and the estimates both ask); a broken one is a ConfigError."""
    from lossatlas.model import jaxnet

    try:
        return jaxnet.load_model(spec, np.zeros((2, n_features)), n_outputs, loss).p
    except ValueError as e:
        raise ConfigError(f"invalid config: {e}") from None


def _join_check(dask: dict, address: str, field: str) -> None:
    from lossatlas.sampling import cluster

    try:
        cluster.security_for_join(dask, address)
    except cluster.ClusterError as err:
        text = str(err)  # names its dask.tls field itself, or is about the address
        raise ConfigError(
            f"invalid config: {text if text.startswith('dask.') else f'{field}: {text}'}"
        ) from None


def check(cfg: dict, *, local: bool = True) -> Estimate:
    """Every check a validated config gets before its first job."""
    check_environment(cfg, local=local)
    return check_resources(cfg)
