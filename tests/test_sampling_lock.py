"""One sampling run per experiment: a second run_experiment on the same out_dir waits for the
first (chains/.sampling.lock), then resumes everything the first checkpointed."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from test_engine import run_on

from lossatlas import config, lifecycle
from lossatlas.storage import store

WAIT_S = 120  # bound on every wait below
HERE = os.path.dirname(__file__)


def make_cfg(**dask):
    # 2 batches of 2 chains: long enough to stop the first run part-way
    return config.validate(
        {
            "sampler": {
                "n_chains": 4,
                "chains_per_batch": 2,
                "warmup": 100,
                "draws": 100,
                "thin": 10,
                "checkpoint_every": 10,
            },
            "dask": {"progress_interval": 0.2, **dask},
        }
    )


def run(cfg, out_dir, log):
    """run_experiment on a one-worker LocalCluster."""
    return run_on(1, cfg, out_dir, log)[0]


FIRST_RUN = textwrap.dedent(
    """
    import logging, sys
    sys.path.insert(0, {here!r})
    from test_sampling_lock import make_cfg, run
    from pathlib import Path
    if __name__ == "__main__":
        run(make_cfg(), Path({out!r}), logging.getLogger("first"))
    """
)


def samples(out_dir) -> dict[str, bytes]:
    with store.SampleStore(out_dir / "samples.h5") as s:
        out = {"theta": s.theta[()].tobytes()}
        out.update({k: s.stat(k).tobytes() for k in s.stat_names})
    return out


def wait_until(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        time.sleep(0.02)
    return value


class Lines(logging.Handler):
    """Collects a logger's messages; ``seen`` is set once one contains ``mark``."""

    def __init__(self, mark: str):
        super().__init__(logging.INFO)
        self.mark, self.lines, self.seen = mark, [], threading.Event()

    def emit(self, record):
        msg = record.getMessage()
        self.lines.append(msg)
        if self.mark in msg:
            self.seen.set()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "rotate-0"
    summary = run(make_cfg(), out, logging.getLogger("ref"))
    assert summary["draws_computed"] == 400
    return samples(out)


def test_second_run_waits_then_resumes_everything(tmp_path, reference):
    out = tmp_path / "rotate-0"
    chains = out / "chains"
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST_RUN.format(here=HERE, out=str(out))],
        start_new_session=True,  # its own group: its scheduler and workers stop together
    )
    stopped = False
    try:
        # The first run holds the lock and has checkpointed draws: stop it (all of its
        # processes) there, so it is surely mid-run while the second one starts.
        def holding():
            try:
                info = json.loads((chains / lifecycle.LOCK_NAME).read_text() or "{}")
            except (OSError, ValueError):
                return False
            p = store.read_progress(chains / "batch-0000.h5")
            return info.get("pid") == first.pid and p is not None and p[0] >= 1

        assert first.poll() is None
        wait_until(lambda: holding() or first.poll() is not None, "the first run to checkpoint")
        assert first.poll() is None, "the first run ended before it could be stopped"
        os.killpg(first.pid, signal.SIGSTOP)
        stopped = True

        def progress():
            return [store.read_progress(chains / f"batch-{b:04d}.h5") for b in (0, 1)]

        # SIGSTOP lands asynchronously: a worker may finish the checkpoint it was writing.
        # Take the state once two reads a moment apart agree.
        at_stop, previous = progress(), None
        while at_stop != previous:
            time.sleep(0.5)
            previous, at_stop = at_stop, progress()

        log = logging.getLogger("second")
        log.setLevel(logging.INFO)
        lines = Lines("is held by")
        log.addHandler(lines)
        result = {}
        second = threading.Thread(
            target=lambda: result.update(summary=run(make_cfg(), out, log)), daemon=True
        )
        second.start()
        assert lines.seen.wait(WAIT_S), lines.lines
        waiting = next(m for m in lines.lines if "is held by" in m)
        assert f"pid {first.pid} on " in waiting
        # While it waits, the second run has not touched the batch files.
        assert [store.read_progress(chains / f"batch-{b:04d}.h5") for b in (0, 1)] == at_stop
        # It keeps saying so at the progress interval: wait for that before releasing the first.
        wait_until(lambda: any("still waiting" in m for m in lines.lines), "a still-waiting line")

        os.killpg(first.pid, signal.SIGCONT)
        stopped = False
        assert first.wait(timeout=WAIT_S) == 0
        second.join(timeout=WAIT_S)
        assert not second.is_alive()
    finally:
        if stopped:
            os.killpg(first.pid, signal.SIGCONT)
        if first.poll() is None:
            first.kill()
            first.wait()
    summary = result["summary"]
    # The first run finished every batch; the second only rebuilt samples.h5 from them.
    assert summary["draws_resumed"] == summary["draws_total"] == 400
    assert summary["draws_computed"] == 0
    assert samples(out) == reference
    assert any("still waiting" in m for m in lines.lines), lines.lines
    assert any("is free after" in m for m in lines.lines), lines.lines
    # The lock file now names the second run, which held it last.
    assert json.loads((chains / lifecycle.LOCK_NAME).read_text())["pid"] == os.getpid()


def test_held_lock_times_out_with_the_holder_named(tmp_path, caplog):
    out = tmp_path / "rotate-0"
    out.joinpath("chains").mkdir(parents=True)
    path = out / "chains" / lifecycle.LOCK_NAME
    path.write_text(json.dumps({"host": "node7", "pid": 4242, "slurm_job_id": "99"}))
    # Another open file description in this process conflicts like another process would.
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        t0 = time.monotonic()
        with pytest.raises(lifecycle.SamplingLocked, match=r"SLURM job 99, pid 4242 on node7"):
            run(make_cfg(lock_timeout=1), out, logging.getLogger("late"))
        assert time.monotonic() - t0 < 60
    finally:
        os.close(fd)
    # Nothing was sampled while the lock was held.
    assert not list(out.joinpath("chains").glob("batch-*.h5"))
