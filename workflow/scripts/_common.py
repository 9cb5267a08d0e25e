"""Shared glue for the rule scripts: logging to the rule's log file and the experiment lookup."""

from __future__ import annotations

import atexit
import logging
import os
import resource
import signal
import sys
import threading
import warnings

from lossatlas import config as lacfg

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(snakemake, name: str) -> logging.Logger:
    """Send logging, warnings and uncaught exceptions to the rule's log file.

    The log is appended to: after an interrupted job, its rerun's log still shows what the
    interrupted attempt did and where it stopped.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers = [logging.FileHandler(snakemake.log[0], mode="a")]
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    log = logging.getLogger(f"lossatlas.{name}")
    log.info("---- %s job for %s started (pid %d)", name, dict(snakemake.wildcards), os.getpid())

    def excepthook(kind, value, tb):
        log.critical("failed", exc_info=(kind, value, tb))
        sys.__excepthook__(kind, value, tb)

    sys.excepthook = excepthook
    track_peak_rss(log)
    return log


def track_peak_rss(log: logging.Logger, interval: float = 0.25) -> None:
    """Log the job's peak memory when it exits: the summed RSS of its process tree (Dask
    workers, diagnostic pools), sampled every ``interval`` seconds, and the job process's own
    kernel-recorded peak.

    Snakemake's ``benchmark:`` samples the tree only every 30 s after a job's first 30 s, so a
    short peak between two samples is missed; ``benchmarks/rule_memory.py`` reads both.
    """
    import psutil

    me = psutil.Process()
    peak = [0]

    def tree_rss() -> int:
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def sample():
        while True:
            peak[0] = max(peak[0], tree_rss())
            threading.Event().wait(interval)

    def report():
        peak[0] = max(peak[0], tree_rss())
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        log.info(
            "peak RSS: %.0f MB process tree (sampled every %g s), %.0f MB job process",
            peak[0] / 2**20,
            interval,
            own,
        )

    threading.Thread(target=sample, name="peak-rss", daemon=True).start()
    atexit.register(report)


def experiment(cfg: dict, name: str) -> lacfg.Experiment:
    return lacfg.experiments(cfg)[name]


def _snakemake_ancestor():
    """The nearest ancestor process running snakemake, else the parent."""
    import psutil

    me = psutil.Process()
    for proc in me.parents():
        try:
            if any("snakemake" in part for part in proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    return me.parent()


def exit_with_snakemake(log: logging.Logger, interval: float = 0.2) -> None:
    """Stop this job, and its Dask workers, as soon as its snakemake is gone or it is signalled.

    A SIGKILLed snakemake cannot stop its jobs: the job (under its `bash -c`) would be adopted
    by init and keep writing the batch files while the rerun starts on them. The direct parent
    is that bash, which survives, so the watch is on the snakemake ancestor itself. Dask worker
    processes exit when this process does (their parent-alive pipe closes), but they are
    killed first so that none writes on after the watch fires.
    """
    import psutil

    watched = _snakemake_ancestor()
    if watched is None:
        return
    log.info("exiting if snakemake (pid %d) exits", watched.pid)

    def stop(code: int):
        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
        logging.shutdown()
        os._exit(code)

    def watch():
        while True:
            # is_running() also compares the start time, so a reused pid does not fool it.
            if not watched.is_running() or watched.status() == psutil.STATUS_ZOMBIE:
                break
            threading.Event().wait(interval)
        log.error("snakemake (pid %d) is gone; stopping this job and its workers", watched.pid)
        stop(1)

    def on_signal(signum, frame):
        # A graceful cluster shutdown lets running tasks sample on for seconds after Ctrl-C;
        # the batch files are consistent at any kill (SWMR, double-buffered checkpoints), so
        # the workers are killed at once and the rerun resumes from their last checkpoint.
        log.error("%s received; stopping this job and its workers", signal.Signals(signum).name)
        stop(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    threading.Thread(target=watch, name="exit-with-snakemake", daemon=True).start()
