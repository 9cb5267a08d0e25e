"""Shared glue for the rule scripts: logging to the rule's log file (process lifecycle:
lossatlas.lifecycle)."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from lossatlas.lifecycle import exit_finished, exit_with_snakemake, track_peak_rss
from lossatlas.warm_jobs import FORKED_ENV

__all__ = ["exit_finished", "exit_with_snakemake", "setup_logging"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(snakemake, name: str) -> logging.Logger:
    """Send logging, warnings and uncaught exceptions to the rule's log file.

    Snakemake deletes a job's log before it runs the job, so each log holds one run; the
    resume summary in sample.log says what an earlier, interrupted run had left.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers = [logging.FileHandler(snakemake.log[0], mode="a")]
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    log = logging.getLogger(f"lossatlas.{name}")
    forked = os.environ.get(FORKED_ENV)
    log.info(
        "---- %s job for %s started (pid %d%s)",
        name,
        dict(snakemake.wildcards),
        os.getpid(),
        f", forked from the run's warm interpreter, pid {forked}" if forked else "",
    )

    def excepthook(kind, value, tb):
        log.critical("failed", exc_info=(kind, value, tb))
        sys.__excepthook__(kind, value, tb)

    sys.excepthook = excepthook
    track_peak_rss(log)
    return log
