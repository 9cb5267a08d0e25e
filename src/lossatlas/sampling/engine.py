"""Run the chains of an experiment as Dask tasks, one per fixed batch of chains.

A batch is the unit of work, of randomness and of storage: batch ``b`` of experiment ``e``
draws from ``SeedSequence([seed, e.index, b])`` and writes ``chains/batch-000b.h5``, so the
numbers depend on the config only, never on how many workers ran them. A task resumes from
its batch file's checkpoint, so a retried task (e.g. after its worker was killed) continues
where the checkpoint left off and produces the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import json
import logging
import math
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lossatlas import lifecycle, mcmc_stats, model, sampling
from lossatlas._version import __version__
from lossatlas.data import Dataset
from lossatlas.model import spec as spec_of_model
from lossatlas.model import target_for
from lossatlas.model.network import model_layout
from lossatlas.sampling.base import AT_DRAW
from lossatlas.storage import store

__all__ = [
    "BatchFailed",
    "LOG_TOPIC",
    "NoSpace",
    "PROGRESS_TOPIC",
    "batch_specs",
    "experiment_lock",
    "run_batch",
    "run_experiment",
    "settings_for",
]

logger = logging.getLogger(__name__)

PROGRESS_TOPIC = "lossatlas-progress"
LOG_TOPIC = "lossatlas-log"
# A check's verdict may hold, under this key, groups of arrays (name -> variable -> (dims,
# array)) that it measured on the draws: the store keeps those of the check the run stops at.
STORE_GROUPS = "store_groups"
# Retries are for what a rerun can fix (a lost worker, a transient error); a full disk or a
# damaged file fails the same way on every try, so run_batch returns those as "error" instead.
RETRIES = 3


class NoSpace(OSError):
    """The disk of the batch files filled up."""

    def __str__(self) -> str:
        return self.strerror


class BatchFailed(RuntimeError):
    """A batch failed in a way a retry cannot fix; the message says why and what to do."""


# Sampler settings that do not change the numbers of a batch: more draws extend a finished
# run, and the checkpoint interval and the total chain count only change where the run stops
# or how many batches there are; compression changes the bytes on disk, not the numbers.
_NOT_HASHED = ("draws", "checkpoint_every", "n_chains", "compression", "until")


def settings_for(spec: dict) -> dict:
    """Everything that determines a batch's numbers (hashed into its checkpoint)."""
    return {
        "format": store.FORMAT,
        "algorithm": sampling.ALGORITHM_VERSION,
        "dataset": spec["dataset"],
        "model": spec_of_model.key(spec["model"]),
        "target": {k: spec["target"][k] for k in ("box", "beta", "energy")},
        "sampler": {k: v for k, v in spec["sampler"].items() if k not in _NOT_HASHED},
        "seed": spec["seed"],
        "experiment_index": spec["experiment_index"],
        "batch": spec["batch"],
        "chains": list(spec["chains"]),
    }


def batch_specs(
    experiment, dataset: Dataset, out_dir, *, seed: int, model: dict, target: dict, sampler: dict
) -> list[dict]:
    """The plain-data task arguments of every batch of ``experiment``.

    ``model``: ``hidden``, ``activation``, ``loss``; ``target``: ``box``, ``beta``, ``energy``;
    ``sampler``: the validated ``sampler`` settings (see config/README.md).
    """
    s = sampler
    n, per = s["n_chains"], s["chains_per_batch"]
    chains_dir = Path(out_dir) / "chains"
    specs = []
    for b in range(math.ceil(n / per)):
        specs.append(
            {
                "path": str(chains_dir / f"batch-{b:04d}.h5"),
                "experiment": experiment.name,
                "experiment_index": int(experiment.index),
                "batch": b,
                "chains": [b * per, min((b + 1) * per, n)],
                "seed": int(seed),
                "dataset": dataset.arrays(),
                "model": dict(model),
                "target": {k: target[k] for k in ("box", "beta", "energy")},
                "sampler": dict(s),
                "stop_after_blocks": None,
            }
        )
    return specs


def _worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # ValueError: not inside a worker task
        return None


class _Progress:
    """Reports a batch's progress as Dask events when running inside a worker."""

    def __init__(self, spec: dict, n: int, total_steps: int):
        self.worker = _worker()
        self.base = {
            "experiment": spec["experiment"],
            "batch": spec["batch"],
            "n_chains": n,
            "draws_total": spec["sampler"]["draws"],
            "steps_total": total_steps,
        }

    def __call__(self, **msg) -> None:
        if self.worker is not None:
            self.worker.log_event(PROGRESS_TOPIC, {**self.base, **msg, "time": time.time()})


def _stat_dtypes(info) -> dict[str, np.dtype]:
    """Per-draw stats: the retained state's energy (U), mean loss and step size, and every
    per-chain info field averaged over the ``thin`` transitions behind the draw (those of
    :data:`.base.AT_DRAW`, such as HMC's Hamiltonian, at the draw itself)."""
    out = dict.fromkeys(("energy", "mean_loss", "step_size"), np.dtype(np.float64))
    for name in _info_stats(info):
        out[_STAT_NAMES.get(name, name)] = np.dtype(np.float64)
    return out


_STAT_NAMES = {"accept_prob": "acceptance_rate"}


def _info_stats(info) -> list[str]:
    """Info fields stored as stats: per-chain ones not named like a state-derived stat."""
    return [
        name
        for name, value in zip(type(info)._fields, info, strict=True)
        if np.ndim(value) == 1 and name not in ("energy", "mean_loss", "step_size")
    ]


def run_batch(spec: dict) -> dict:
    """Run (or resume) one batch of chains to completion; returns a summary dict.

    ``spec`` comes from :func:`batch_specs`. ``spec["stop_after_blocks"]`` (tests) stops after
    that many checkpoints, leaving a resumable file, as an interrupted run would.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        limits = contextlib.nullcontext()
    else:
        # one BLAS thread: the workers already use one core each
        limits = threadpool_limits(1)
    _one_numba_thread()
    forward = _ForwardWarnings(_worker(), spec)
    lossatlas_log = logging.getLogger("lossatlas")
    lossatlas_log.addHandler(forward)
    try:
        with limits:
            out = _run_batch(spec)
    except (NoSpace, store.Damaged) as e:
        out = {**_identify(spec), "error": str(e)}
    except Exception as e:  # h5py raises a full disk as OSError or RuntimeError
        full = _no_space(e, spec)
        if full is None:
            raise
        out = {**_identify(spec), "error": str(full)}
    finally:
        lossatlas_log.removeHandler(forward)
    return {**out, "pid": os.getpid(), "warnings": forward.messages}


def _one_numba_thread() -> None:
    """Run numba's parallel kernels on one thread in this thread (numba keeps the setting per
    thread): a worker has one core, and a worker thread in the job's process
    (``cluster``'s one local worker) would otherwise fan out over the machine's."""
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(1)


def _identify(spec: dict) -> dict:
    return {"experiment": spec["experiment"], "batch": spec["batch"], "path": spec["path"]}


def _no_space(error: BaseException, spec: dict) -> NoSpace | None:
    """:func:`no_space` if ENOSPC is anywhere in ``error``'s chain (HDF5 reports it only inside
    its message)."""
    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if not any(getattr(x, "errno", None) == errno.ENOSPC or "errno = 28" in str(x) for x in chain):
        return None
    return no_space(spec, 0)


# Room kept free beyond a block's draws for the checkpoint and HDF5's metadata: a write that
# HDF5 itself finds the disk full for leaves a file it cannot close (see BatchFile._abandon).
HEADROOM = 16 << 20


def no_space(spec: dict, draws_done: int) -> NoSpace:
    """The full-disk error of a batch: where, how much it still needs, how much is free."""
    where = Path(spec["path"]).parent
    s = spec["sampler"]
    c0, c1 = spec["chains"]
    n_params = model_layout(Dataset.from_arrays(spec["dataset"]), spec["model"]).p
    need = (c1 - c0) * (s["draws"] - draws_done) * n_params * np.dtype(s["dtype"]).itemsize
    free = shutil.disk_usage(where).free
    return NoSpace(
        errno.ENOSPC,
        f"no space left on {where}: this batch needs about {need / 2**20:.1f} MB more, "
        f"{free / 2**20:.1f} MB are free. Free some space (`lossatlas prune` removes batch "
        "files moved aside by earlier runs) and run the same command: the batch resumes "
        "from its last checkpoint",
    )


class _ForwardWarnings(logging.Handler):
    """Keeps a batch's warnings (a file moved aside or recovered) for the sampling job's log, and
    sends each at once as a Dask event: a worker's own log is elsewhere (its terminal, its SLURM
    output). The summary repeats them, as an event may come after the job has stopped
    listening."""

    def __init__(self, worker, spec: dict):
        super().__init__(logging.WARNING)
        self.worker, self.spec = worker, spec
        self.messages: list[str] = []
        self.thread = threading.get_ident()  # tasks in other threads log their own

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        message = record.getMessage()
        self.messages.append(message)
        if self.worker is not None:
            self.worker.log_event(
                LOG_TOPIC, {**_identify(self.spec), "pid": os.getpid(), "message": message}
            )


def _first_state(spec: dict, sampler, target, n: int, dtype):
    """The batch's chains before any step (uniform in the box, seeded by the master seed,
    the experiment and the batch), its generator, and the statistics its steps record."""
    seq = np.random.SeedSequence([spec["seed"], spec["experiment_index"], spec["batch"]])
    rng = np.random.default_rng(seq)
    position = rng.uniform(-target.box, target.box, size=(n, target.p)).astype(dtype)
    state = sampler.init(position, rng)
    # A step is a pure function of (state, rng): one on a throwaway generator shows the info
    # fields, which fix the file layout before any real step.
    _, probe = sampler.step(state, np.random.default_rng(0), adapt=False)
    return state, rng, _stat_dtypes(probe), _info_stats(probe)


def _draw_block(sampler, target, state, rng, k: int, thin: int, dtype, stat_dtypes, info_names):
    """``k`` draws of every chain, ``thin`` transitions apart: the state after them, the draws
    ``(chain, k, p)`` and their statistics ``(chain, k)``."""
    n, p = len(state.U), target.p
    theta = np.empty((n, k, p), dtype=dtype)
    stats = {name: np.empty((n, k), dtype=dt) for name, dt in stat_dtypes.items()}
    for j in range(k):
        # the thinned transitions in one call (one launch on a GPU), with the same random
        # numbers and info sums as `thin` calls of step
        state, all_sums = sampler.run(state, rng, thin)
        sums = {name: all_sums[name] for name in info_names}
        theta[:, j] = state.position
        stats["energy"][:, j] = state.U
        stats["mean_loss"][:, j] = target.mean_loss(state.U)
        stats["step_size"][:, j] = np.exp(state.log_step_size)
        for name, total in sums.items():
            # a state's value (AT_DRAW) is the draw's own, not a mean over transitions
            value = total if name in AT_DRAW else total / thin
            stats[_STAT_NAMES.get(name, name)][:, j] = value
    return state, theta, stats


def _run_batch(spec: dict) -> dict:
    t0 = time.perf_counter()
    s = spec["sampler"]
    ds = Dataset.from_arrays(spec["dataset"])
    target = model.target_for(ds, **spec["model"], **spec["target"])
    sampler = sampling.build(s, target)
    c0, c1 = spec["chains"]
    n = c1 - c0
    dtype = np.dtype(s["dtype"])
    warmup, draws_total, thin, block = s["warmup"], s["draws"], s["thin"], s["checkpoint_every"]
    steps_total = warmup + draws_total * thin

    state, rng, stat_dtypes, info_names = _first_state(spec, sampler, target, n, dtype)

    bf, ck = store.open_batch(
        spec["path"],
        settings_for(spec),
        state=state,
        stats=stat_dtypes,
        block=block,
        log=logger,
        compression=s["compression"],
    )
    steps, draws, phase = 0, 0, "warmup"
    if ck is not None:
        state = type(state)(**ck.fields)
        rng = ck.rng
        steps, draws, phase = ck.steps_done, ck.draws_done, ck.phase
    resumed_draws, resumed_steps = draws, steps
    progress = _Progress(spec, n, steps_total)
    progress(draws_done=draws, steps_done=steps, resumed_draws=draws, resumed_steps=steps)
    blocks, stop = 0, spec.get("stop_after_blocks")

    def commit(draws_done: int) -> bool:
        nonlocal blocks
        bf.checkpoint(state, rng, draws_done, steps, phase)
        blocks += 1
        progress(draws_done=draws_done, steps_done=steps)
        return stop is not None and blocks >= stop

    stopped = False
    with bf:
        if phase == "warmup":
            every = block * thin  # a warm-up checkpoint costs as much sampling as a draw block
            while steps < warmup and not stopped:
                k = min(every - steps % every, warmup - steps)
                for _ in range(k):
                    state, _ = sampler.step(state, rng, adapt=True)
                steps += k
                if steps < warmup:
                    stopped = commit(0)
            if not stopped:
                state = sampler.end_warmup(state)
                phase = "sampling"
                stopped = commit(0)
        while draws < draws_total and not stopped:
            # blocks end at multiples of `block`, so they fill whole chunks
            k = min(block - draws % block, draws_total - draws)
            state, theta, stats = _draw_block(
                sampler, target, state, rng, k, thin, dtype, stat_dtypes, info_names
            )
            steps += k * thin
            block_bytes = theta.nbytes + sum(a.nbytes for a in stats.values())
            if shutil.disk_usage(bf.path.parent).free < block_bytes + HEADROOM:
                raise no_space(spec, draws)
            draws += k
            bf.append(theta, stats)
            stopped = commit(draws)
    return {
        "experiment": spec["experiment"],
        "batch": spec["batch"],
        "path": spec["path"],
        "n_chains": n,
        "draws_done": min(draws, draws_total),
        "draws_resumed": min(resumed_draws, draws_total),
        "draws_computed": max(0, min(draws, draws_total) - resumed_draws),
        "steps_resumed": resumed_steps,
        "steps_computed": steps - resumed_steps,
        "stopped": stopped,
        "seconds": time.perf_counter() - t0,
    }


def until_boundaries(sampler: dict) -> list[int]:
    """The draw counts at which ``sampler.until`` is checked: every ``checkpoint_every`` draws
    (block boundaries), and ``draws``, the most a chain keeps."""
    block, most = sampler["checkpoint_every"], sampler["draws"]
    return [*range(block, most, block), most]


# After a failed check, the next one is this share of the way to where the measured rate
# meets the target (a stationary chain's: R-hat - 1 falls as 1/n, ESS grows as n). Half, not
# all: early on R-hat can fall faster (the warm-up's transient leaving the chains).
CHECK_SHARE = 0.5


def until_next(verdict: dict, boundaries: list[int]) -> int | None:
    """The boundary ``sampler.until`` checks after ``verdict`` (None: none is left). After a
    pass, the next boundary, so that ``confirm`` passes are at consecutive boundaries. After a
    fail, the first boundary :data:`CHECK_SHARE` of the way to ``verdict["draws_needed"]``
    (the draws the measured rate needs; the next boundary when unknown). A skipped check can
    only make the run stop later than checking every boundary would, never earlier: checks
    cost a pass over every draw so far, and skipping them keeps their total in proportion
    to the draws instead of growing with their square."""
    n = verdict["draws"]
    later = [b for b in boundaries if b > n]
    if not later:
        return None
    need = None if verdict["converged"] else verdict.get("draws_needed")
    if not need:
        return later[0]
    aim = n + CHECK_SHARE * (need - n)
    return next((b for b in later if b >= aim), later[-1])


def until_may_stop(verdicts: list[dict], confirm: int) -> bool:
    """Whether the next check can stop the run: it would, were it to pass."""
    return until_stops([*verdicts, {"converged": True}], confirm)


def until_stops(verdicts: list[dict], confirm: int) -> bool:
    """Whether ``sampler.until`` stops after ``verdicts`` (one per boundary so far): the last
    ``confirm`` of them all converged. A single pass is optional stopping: a verdict that
    hovers around its threshold passes once by luck far more often than twice running."""
    last = verdicts[-int(confirm) :]
    return len(last) == int(confirm) and all(v["converged"] for v in last)


def until_verdict(paths: list[str], n_draws: int, until: dict, on_read=None) -> dict:
    """Whether the first ``n_draws`` draws of the batch files ``paths`` (every chain of an
    experiment) meet ``sampler.until``: U's rank-normalised split R-hat below ``r_hat`` and its
    bulk and tail ESS above ``ess``, computed as the diagnose rule does. Reads the draws'
    energies only (``samples.h5`` is built from verified blocks only, once the run stops).
    ``on_read()`` is called once the batch files are read and closed (every check takes it)."""
    energies = []
    for path in paths:
        with h5py.File(path, "r") as f:
            energies.append(f["sample_stats/energy"][:, :n_draws])
    if on_read is not None:
        on_read()
    row = mcmc_stats.summary_row("U", np.concatenate(energies))
    converged = bool(
        row["r_hat"] < until["r_hat"] and min(row["ess_bulk"], row["ess_tail"]) > until["ess"]
    )
    reading = (
        f"{'converged' if converged else 'not converged'} at {n_draws} draws per chain: "
        f"R-hat(U) {row['r_hat']:.4f} (target < {until['r_hat']:g}), ESS bulk "
        f"{row['ess_bulk']:.0f} / tail {row['ess_tail']:.0f} (target > {until['ess']:g})"
    )
    worst = {"max_r_hat": row["r_hat"]} | {f"min_{k}": row[k] for k in ("ess_bulk", "ess_tail")}
    return {
        "draws": n_draws,
        "converged": converged,
        "reading": reading,
        "U": {k: float(row[k]) for k in ("r_hat", "ess_bulk", "ess_tail")},
        "draws_needed": mcmc_stats.draws_needed(worst, n_draws, until["r_hat"], until["ess"]),
    }


def compile_kernels(dataset: Dataset, *, model: dict, target: dict, sampler: dict, **_) -> bool:
    """Compile the batches' fused kernels in this process (or load them from numba's cache),
    by one warm-up transition and one draw of a single chain: run it before any worker starts,
    so that every worker loads the cached code instead of compiling its own copy. Returns
    whether there was anything to compile (``backend: numba`` with a fused kernel)."""
    if sampler.get("backend") != "numba":  # numpy has nothing to compile; a GPU compiles its own
        return False
    t = target_for(dataset, **model, **target)
    built = sampling.build(sampler, t)
    if not hasattr(getattr(built, "base", built), "arch"):  # numba picked the numpy kernel
        return False
    rng = np.random.default_rng(0)
    x = rng.uniform(-t.box, t.box, size=(1, t.p))
    state, _ = built.step(built.init(x, rng), rng, adapt=True)
    built.run(built.end_warmup(state), rng, 1)
    return True


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# --------------------------------------------------------------------------- experiment lock

# The schema's default: as long as the SLURM profile's sampling job may run.
DEFAULT_LOCK_TIMEOUT = 43200.0


def experiment_lock(
    out_dir, *, lock_timeout: float, progress_interval: float, log: logging.Logger | None = None
):
    """:func:`sampling_lock` on ``out_dir/chains``, waiting up to ``lock_timeout`` seconds and
    saying so every ``progress_interval`` seconds.

    Take it before starting a cluster (then pass ``locked=True`` to :func:`run_experiment`):
    with ``dask.placement: slurm`` a run that waits for the lock would otherwise hold its idle
    worker jobs for the whole wait.
    """
    return lifecycle.sampling_lock(
        Path(out_dir) / "chains",
        timeout=float(lock_timeout),
        interval=float(progress_interval),
        log=log or logger,
    )


def run_experiment(
    experiment,
    dataset: Dataset,
    out_dir,
    client,
    log: logging.Logger | None = None,
    *,
    seed: int,
    model: dict,
    target: dict,
    sampler: dict,
    progress_interval: float,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    locked: bool = False,
    until_check=None,
    store_path=None,
) -> dict[str, Any]:
    """Sample every batch of ``experiment`` holding its sampling lock (:func:`sampling_lock`).

    A run that finds the lock held waits for its holder up to ``lock_timeout`` seconds, then
    resumes from the checkpoints the holder left; see :func:`_run_experiment`. ``locked``: the
    caller already holds it (:func:`experiment_lock`). ``seed``, ``model``, ``target``,
    ``sampler`` as in :func:`batch_specs`. ``until_check(paths, n_draws, on_read=None) -> dict``
    decides ``sampler.until`` (default :func:`until_verdict`, U alone), calling ``on_read()``
    once it has read the batch files, so the batches may go on meanwhile; the store keeps the
    :data:`STORE_GROUPS` of the verdict the run stops at. ``store_path``: where the
    store is written, in ``out_dir`` (default ``samples.h5``).
    """
    log = log or logger
    specs = batch_specs(
        experiment, dataset, out_dir, seed=seed, model=model, target=target, sampler=sampler
    )
    names = model_layout(dataset, model).names()
    lock = (
        contextlib.nullcontext()
        if locked
        else experiment_lock(
            out_dir, lock_timeout=lock_timeout, progress_interval=progress_interval, log=log
        )
    )
    with lock:
        return _run_experiment(
            specs,
            experiment,
            names,
            out_dir,
            client,
            log,
            progress_interval,
            until_check,
            Path(store_path) if store_path else Path(out_dir) / "samples.h5",
        )


class _RoundProgress:
    """What the batches of one round have reported (their progress events), and the line
    that says how far the round has got."""

    def __init__(self, experiment: str, log: logging.Logger):
        self.experiment, self.log = experiment, log
        self.latest: dict[int, dict] = {}
        self.baseline: dict[int, int] = {}
        self.draws = 0  # the draws the batches now run to (sampler.until: a block)

    def start(self, n_draws: int, steps_total: int, draws_total: int) -> None:
        """A new round, to ``n_draws`` draws per chain."""
        self.latest.clear()
        self.baseline.clear()
        self.draws, self.steps_total, self.draws_total = n_draws, steps_total, draws_total
        self.t0 = time.monotonic()
        self.shown, self.waiting = -1, False

    def on_event(self, event) -> None:
        _, msg = event
        # a late event of an earlier sampler.until round is not this round's progress
        if msg.get("experiment") != self.experiment or msg["draws_total"] != self.draws:
            return
        b = msg["batch"]
        if "resumed_steps" in msg and b in self.latest:  # the first event of a second attempt
            self.log.warning(
                "%s batch %04d restarted (its worker was lost, or the task failed and is "
                "retried); resuming from its checkpoint at draw %d",
                self.experiment,
                b,
                msg["resumed_draws"],
            )
        # the first event of a batch says how far its checkpoint had got: not work done now
        self.baseline.setdefault(b, msg.get("resumed_steps", 0) * msg["n_chains"])
        self.latest[b] = msg

    def report(self) -> None:
        """Log draws done, the rate and the ETA, once per new checkpoint."""
        snap = list(self.latest.values())
        done = sum(m["draws_done"] * m["n_chains"] for m in snap)
        steps = sum(m["steps_done"] * m["n_chains"] for m in snap)
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        if steps == sum(self.baseline.values()):  # no checkpoint of this run yet
            if not self.waiting:
                self.waiting = True
                self.log.info(
                    "%s: starting the chains; they warm up until the first checkpoint",
                    self.experiment,
                )
            return
        if steps == self.shown:  # the same line again says nothing
            return
        self.shown = steps
        rate_steps = (steps - sum(self.baseline.values())) / elapsed
        eta = (self.steps_total - steps) / rate_steps if rate_steps > 0 else math.inf
        resumed = sum(m.get("resumed_draws", 0) * m["n_chains"] for m in snap)
        self.log.info(
            "%s: %d/%d draws (%.0f%% of transitions), %.1f draws/s, ETA %s",
            self.experiment,
            done,
            self.draws_total,
            100.0 * steps / self.steps_total if self.steps_total else 100.0,
            max(done - resumed, 0) / elapsed,
            _fmt_eta(eta),
        )


class _WorkerWarnings:
    """Warnings the batch tasks logged in worker processes, each logged here once."""

    def __init__(self, experiment: str, log: logging.Logger):
        self.experiment, self.log = experiment, log
        self.logged: set[tuple[int, str]] = set()

    def warn(self, batch: int, pid: int, message: str) -> None:
        # a task in a thread of this process has logged here already
        if pid != os.getpid() and (batch, message) not in self.logged:
            self.logged.add((batch, message))
            self.log.warning("batch %04d (worker pid %d): %s", batch, pid, message)

    def on_log(self, event) -> None:
        _, msg = event
        if msg.get("experiment") == self.experiment:
            self.warn(msg["batch"], msg["pid"], msg["message"])


def _sample_round(
    client, specs, name: str, n_draws: int, key: str, progress: _RoundProgress, warnings, interval
) -> list[dict]:
    """Every batch of ``specs`` to ``n_draws`` draws on ``client``, saying how far they have
    got every ``interval`` seconds; their summaries. A batch that failed raises
    :class:`BatchFailed` (not retried: a retry would fail the same way)."""
    futures = _start_round(client, specs, name, n_draws, key, progress)
    return _finish_round(client, futures, progress, warnings, interval)


def _start_round(client, specs, name: str, n_draws: int, key: str, progress: _RoundProgress):
    """The futures of :func:`_sample_round`'s batches, submitted."""
    s = specs[0]["sampler"]
    n_chains = s["n_chains"]
    progress.start(n_draws, n_chains * (s["warmup"] + n_draws * s["thin"]), n_chains * n_draws)
    return [
        client.submit(
            run_batch,
            {**spec, "sampler": {**spec["sampler"], "draws": n_draws}},
            pure=False,
            retries=RETRIES,
            key=f"sample-{name}-batch-{spec['batch']:04d}-{n_draws}-{key}",
        )
        for spec in specs
    ]


def _finish_round(client, futures, progress: _RoundProgress, warnings, interval) -> list[dict]:
    """The summaries of a round :func:`_start_round` submitted, once every batch is done."""
    from distributed import wait

    while True:
        try:
            wait(futures, timeout=interval)
            break
        except TimeoutError:
            progress.report()
    summaries = client.gather(futures)
    for x in summaries:
        for message in x["warnings"]:
            warnings.warn(x["batch"], x["pid"], message)
    failed = [x for x in summaries if "error" in x]
    if failed:
        raise BatchFailed(
            "; ".join(f"batch {x['batch']:04d}: {x['error']}" for x in failed)
            + " (not retried: a retry would fail the same way)"
        )
    return summaries


def _write_store(
    specs, store_path: Path, param_names, name: str, n_draws: int, stop: dict, kept: dict
):
    """The store of the batches' first ``n_draws`` draws at ``store_path``, with the data,
    the provenance (``stop``: how ``sampler.until`` stopped, if it did) and the groups the
    stopping check ``kept`` (name -> variable -> (dims, array))."""
    data = specs[0]["dataset"]
    return store.build(
        [spec["path"] for spec in specs],
        store_path,
        param_names,
        n_draws=n_draws,
        attrs={
            **stop,
            "experiment": name,
            # InferenceData's provenance attributes
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "inference_library": "lossatlas",
            "inference_library_version": __version__,
            "sampler": specs[0]["sampler"]["kind"],
        },
        beta=specs[0]["target"]["beta"],
        groups={
            "observed_data": (
                {"Y": (("point", "target"), data["Y"])}
                if "Y" in data
                else {"y": (("point",), data["y"])}
            ),
            "constant_data": {"X": (("point", "feature"), data["X"])},
            **kept,
        },
    )


def _run_experiment(
    specs: list[dict],
    experiment,
    param_names: list[str],
    out_dir,
    client,
    log: logging.Logger,
    progress_interval: float,
    until_check,
    store_path: Path,
) -> dict[str, Any]:
    """Sample every batch of ``specs`` on ``client``, then write the store at ``store_path``.

    Logs draws done / total, draws/s and an ETA every ``progress_interval`` seconds. Returns a
    summary with the draws resumed from checkpoints and those computed. With
    ``sampler.until``, the batches advance from one checked block boundary to the next
    (:func:`until_next`) and stop where ``until_check`` (default :func:`until_verdict`) has said
    converged ``confirm`` times running (:func:`until_stops`).
    """
    s = specs[0]["sampler"]
    name = experiment.name
    try:
        dashboard = client.dashboard_link
    except Exception:  # no dashboard on this scheduler
        dashboard = None
    log.info(
        "%s: %d chains in %d batches, %d draws each%s; dashboard %s",
        name,
        s["n_chains"],
        len(specs),
        s["draws"],
        " at most, until converged" if s.get("until") else "",
        dashboard or "off",
    )
    key = uuid.uuid4().hex[:8]
    progress, warnings = _RoundProgress(name, log), _WorkerWarnings(name, log)
    until = s.get("until")
    check = until_check or functools.partial(until_verdict, until=until)
    t_start = time.monotonic()
    rounds: list[list[dict]] = []
    verdicts: list[dict] = []
    client.subscribe_topic(PROGRESS_TOPIC, progress.on_event)
    client.subscribe_topic(LOG_TOPIC, warnings.on_log)
    paths = [spec["path"] for spec in specs]
    ahead: tuple[int, list] | None = None  # a round started while a check ran, and its draws
    kept: dict = {}  # the groups the last check would keep with the draws (STORE_GROUPS)

    def finish(futures):
        return _finish_round(client, futures, progress, warnings, float(progress_interval))

    def start(n):
        return _start_round(client, specs, name, n, key, progress)

    try:
        boundaries = until_boundaries(s) if until else [s["draws"]]
        n_draws = boundaries[0]
        while n_draws is not None:
            reached = None
            if ahead is not None:
                reached, futures = ahead
                rounds.append(finish(futures))
                ahead = None
            if reached != n_draws:
                rounds.append(finish(start(n_draws)))
            if not until:
                break
            # While a check that cannot stop the run computes, the batches go on to the next
            # boundary, which the run reaches whatever the check says: once the check has read
            # the batch files (HDF5 files are not read while written).
            later = [b for b in boundaries if b > n_draws]
            on_read = {}
            if later and not until_may_stop(verdicts, until["confirm"]):

                def read(n=later[0]):
                    nonlocal ahead
                    ahead = (n, start(n))

                on_read = {"on_read": read}
            verdicts.append(check(paths, n_draws, **on_read))
            kept = verdicts[-1].pop(STORE_GROUPS, None) or {}
            log.info("%s: %s", name, verdicts[-1]["reading"])
            if until_stops(verdicts, until["confirm"]):
                break
            n_draws = until_next(verdicts[-1], boundaries)
    finally:
        client.unsubscribe_topic(PROGRESS_TOPIC)
        client.unsubscribe_topic(LOG_TOPIC)
    seconds = time.monotonic() - t_start
    n_draws = verdicts[-1]["draws"] if until else s["draws"]
    draws_total = s["n_chains"] * n_draws
    # provenance of the stop, kept with the draws
    stop = {"until": json.dumps({**until, "verdicts": verdicts})} if until else {}
    out = _write_store(specs, store_path, param_names, name, n_draws, stop, kept)
    computed = sum(x["draws_computed"] * x["n_chains"] for r in rounds for x in r)
    # what the checkpoints held before this run: with sampler.until a later round also
    # "resumes" the draws an earlier round of this run computed
    resumed = draws_total - computed
    log.info(
        "%s: %d draws in %.1fs, %.1f draws/s (%d resumed from checkpoints, %d computed); wrote %s",
        name,
        draws_total,
        seconds,
        computed / max(seconds, 1e-9),
        resumed,
        computed,
        out,
    )
    return {
        "experiment": name,
        "samples": str(out),
        "n_batches": len(specs),
        "draws_total": draws_total,
        "draws_resumed": resumed,
        "draws_computed": computed,
        "seconds": seconds,
        "batches": rounds[-1],
        **({"until": verdicts[-1]} if until else {}),
    }
