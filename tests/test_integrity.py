"""Damaged batch files are detected within seconds, moved aside, and only their batch is redone:
the rerun's draws are byte-identical to an undamaged run's, after a kill and after a complete
run. Real HDF5 files, damaged on disk the way a crash or a bad disk would."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO
from test_engine import contents, make_cfg, setup

from lossatlas import cli, lifecycle
from lossatlas.sampling import engine
from lossatlas.storage import integrity, maintenance, store

SECONDS_PER_CASE = 30  # generous: a case takes about 1 s; HDF5's SWMR retries took minutes


def test_lookup3_known_answers():
    # the test vectors printed by the driver of Jenkins' lookup3.c
    assert integrity.lookup3(b"") == 0xDEADBEEF
    assert integrity.lookup3(b"Four score and seven years ago") == 0x17770551
    assert integrity.lookup3(b"Four score and seven years ago", 1) == 0xCD628161


# a batch that commits 4 checkpoints (2 in warm-up, then 10 and 20 draws), then dies holding
# the file open for writing, as a SIGKILLed worker leaves it
KILLED_AFTER_4_CHECKPOINTS = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {testdir!r})
    from test_engine import make_cfg, setup
    from lossatlas.sampling import engine
    from lossatlas.storage import store
    store.BatchFile.close = lambda self: os.kill(os.getpid(), signal.SIGKILL)
    spec = setup(make_cfg(), {out!r})[2][0]
    engine.run_batch({{**spec, "stop_after_blocks": 4}})
    """
)


def killed_batch(out) -> dict:
    code = KILLED_AFTER_4_CHECKPOINTS.format(testdir=os.path.dirname(__file__), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    spec = setup(make_cfg(), out)[2][0]
    assert integrity.check_superblock(spec["path"]) != 0  # still marked open for write
    return spec


def data_offsets(path) -> list[int]:
    """File offsets of the first and the last chunk of committed draws."""
    with h5py.File(path, "r", swmr=True) as f:
        theta = f["posterior/theta"]
        n = theta.id.get_num_chunks()
        return [theta.id.get_chunk_info(i).byte_offset for i in (0, n - 1)]


def truncate(path, fraction):
    size = os.path.getsize(path)
    os.truncate(path, int(size * fraction))


def scribble(path, offset, n=4096, seed=0):
    size = os.path.getsize(path)
    offset = min(offset, size - 1)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.random.default_rng(seed).bytes(min(n, size - offset)))


# (name, damage(path), detected after a complete run): truncations at several offsets, random
# bytes over metadata (the root group and object headers near the start, the active checkpoint
# in the middle), over committed draws, and over the checksum table's rows for blocks never
# written (75 %: space nothing reads, so missing it is harmless). README.md states the count.
DAMAGE = [
    ("truncate-10%", lambda p: truncate(p, 0.1), True),
    ("truncate-50%", lambda p: truncate(p, 0.5), True),
    ("truncate-99%", lambda p: truncate(p, 0.99), True),
    ("bytes-at-600", lambda p: scribble(p, 600, 512), True),
    ("bytes-at-40%", lambda p: scribble(p, int(os.path.getsize(p) * 0.4)), True),
    ("bytes-at-75%", lambda p: scribble(p, int(os.path.getsize(p) * 0.75), 512), False),
    ("bytes-in-first-draws", lambda p: scribble(p, data_offsets(p)[0] + 8, 64), True),
    ("bytes-in-last-draws", lambda p: scribble(p, data_offsets(p)[1] + 8, 64), True),
]


def test_readme_states_what_is_detected():
    detected = sum(d[2] for d in DAMAGE)
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"{detected} of the {len(DAMAGE)} kinds of damage the tests make" in readme


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    spec = setup(make_cfg(), tmp_path_factory.mktemp("ref"))[2][0]
    engine.run_batch(spec)
    return contents(spec["path"])


def rerun(spec, caplog) -> tuple[dict, float]:
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="lossatlas"):
        summary = engine.run_batch(spec)
    return summary, time.monotonic() - t0


@pytest.mark.parametrize("name, damage, _", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damage_after_a_kill(tmp_path, reference, caplog, name, damage, _):
    spec = killed_batch(tmp_path)
    damage(spec["path"])
    summary, seconds = rerun(spec, caplog)
    assert seconds < SECONDS_PER_CASE
    assert contents(spec["path"]) == reference
    assert summary["draws_done"] == 30
    aside = list(tmp_path.glob("chains/batch-0000.h5.damaged*"))
    if "is damaged" in caplog.text:  # detected: named, moved aside, redone from what verified
        assert len(aside) == 1 and aside[0].name in caplog.text
    else:  # only bytes nothing reads were hit (e.g. the retired checkpoint slot)
        assert not name.startswith(("truncate", "bytes-in"))
        assert "unclean shutdown" in caplog.text


@pytest.mark.parametrize("name, damage, expected", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damage_after_a_complete_run(tmp_path, reference, caplog, name, damage, expected):
    spec = setup(make_cfg(), tmp_path)[2][0]
    engine.run_batch(spec)
    damage(spec["path"])
    found = maintenance.verify(tmp_path.parent)
    detected = any(c.status == "damaged" for c in found)
    assert detected == expected
    if detected:  # never silently used: the store refuses to build over it
        with pytest.raises(store.Damaged, match="batch-0000.h5"):
            store.build([spec["path"]], tmp_path / "samples.h5", [f"p{i}" for i in range(18)])
    else:  # and the store built over it shows the undamaged draws
        store.build([spec["path"]], tmp_path / "samples.h5", [f"p{i}" for i in range(18)])
        assert contents(spec["path"])["theta"] == reference["theta"]
    summary, seconds = rerun(spec, caplog)  # what a forced rerun of sampling does
    assert seconds < SECONDS_PER_CASE
    assert contents(spec["path"]) == reference
    assert ("is damaged" in caplog.text) == detected
    # redone from the last verified checkpoint: the retired slot, 10 draws back, or scratch
    assert summary["draws_computed"] in ((10, 30) if detected else (0,))


def test_damaged_checkpoint_resumes_from_the_previous_one(tmp_path, reference, caplog):
    spec = killed_batch(tmp_path)
    with h5py.File(spec["path"], "r", swmr=True) as f:
        ck = f["checkpoint"]
        active = int(ck["active"][()])
        offset = ck["log_step_size"].id.get_offset()
        row = ck["log_step_size"][0].nbytes
    scribble(spec["path"], offset + active * row, 8)
    summary, _ = rerun(spec, caplog)
    assert f"checkpoint slot {active} (the active one) does not match its checksum" in caplog.text
    assert "resuming from its last verified checkpoint (10 draws)" in caplog.text
    assert summary["draws_resumed"] == 10
    assert contents(spec["path"]) == reference


def test_samples_store_reverifies_a_changed_batch(tmp_path, reference):
    spec = setup(make_cfg(), tmp_path / "rotate-0")[2][0]
    engine.run_batch(spec)
    samples = tmp_path / "rotate-0" / "samples.h5"
    store.build([spec["path"]], samples, [f"p{i}" for i in range(18)])
    with store.SampleStore(samples) as s:  # unchanged since build: no re-read
        assert s.n_draws == 30
    scribble(spec["path"], data_offsets(spec["path"])[1] + 8, 64)
    with pytest.raises(store.Damaged, match="draws 20-30 fail verification.*verify --repair"):
        store.SampleStore(samples)


def test_verify_command_repairs_and_the_rerun_redoes_only_the_damaged_batch(
    tmp_path, capsys, caplog
):
    specs = setup(make_cfg(), tmp_path / "rotate-0")[2]
    for spec in specs:
        engine.run_batch(spec)
    before = [contents(s["path"]) for s in specs]
    samples = tmp_path / "rotate-0" / "samples.h5"
    samples.write_bytes(b"stands in for the store")
    assert cli.main(["verify", str(tmp_path)]) == 0
    truncate(specs[1]["path"], 0.5)
    assert cli.main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "damaged  " in out and "batch-0001.h5: truncated" in out
    assert cli.main(["verify", "--repair", str(tmp_path)]) == 0
    # the store stays for the analyses that read it; the workflow's restore job is told which
    # batches to sample again and check against it
    assert samples.exists()
    assert maintenance.pending_restores(tmp_path, ["rotate-0", "rotate-1"]) == ["rotate-0"]
    assert json.loads((tmp_path / "rotate-0" / "chains" / maintenance.PENDING).read_text()) == {
        "moved_aside": ["batch-0001.h5"]
    }
    assert "batch-0001.h5.damaged" in capsys.readouterr().out
    summaries = [rerun(s, caplog)[0] for s in specs]
    assert [s["draws_computed"] for s in summaries] == [0, 30]
    assert [contents(s["path"]) for s in specs] == before
    assert "1 batch files moved aside" in maintenance.describe_aside(tmp_path)
    assert cli.main(["prune", str(tmp_path)]) == 0
    assert maintenance.aside_files(tmp_path) == []
    assert maintenance.describe_aside(tmp_path) is None


def test_the_sampling_log_names_a_damaged_batch(tmp_path, caplog):
    from test_engine import run_on

    cfg = make_cfg()
    out = tmp_path / "rotate-0"
    spec = setup(cfg, out)[2][0]
    engine.run_batch({**spec, "stop_after_blocks": 4})
    scribble(spec["path"], data_offsets(spec["path"])[0] + 8, 64)
    with caplog.at_level(logging.WARNING, logger="test.damaged"):
        summary, _ = run_on(1, cfg, out, logging.getLogger("test.damaged"))
    assert "batch 0000 (worker pid" in caplog.text
    assert "is damaged: draws 0-10 fail verification" in caplog.text
    assert summary["batches"][0]["draws_computed"] == 30


def _mount_tmpfs(where, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0  # fmt: skip


def test_full_disk_says_so_and_releases_the_lock(tmp_path):
    """A real full file system (a 256 KB tmpfs; needs root, else skipped)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "256k"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        spec = setup(make_cfg(draws=3000), disk)[2][0]
        first = engine.run_batch(spec)
        assert first["error"].startswith(f"no space left on {disk / 'chains'}: ")
        assert "needs about" in first["error"] and "lossatlas prune" in first["error"]
        # released on the error path: the next try meets the disk, not a held lock
        lock = f"{spec['path']}.lock"
        fd = os.open(lock, os.O_RDWR)
        try:
            assert lifecycle.try_flock(fd, lock)
        finally:
            os.close(fd)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_verify_reports_a_killed_writers_file_as_interrupted(tmp_path):
    spec = killed_batch(tmp_path / "rotate-0")
    (check,) = maintenance.verify(tmp_path)
    assert (check.path, check.status) == (Path(spec["path"]), "interrupted")
    assert integrity.check_superblock(spec["path"]) != 0  # verify changed nothing


def test_a_torn_inactive_slot_is_a_normal_kill_not_damage(tmp_path, reference, caplog):
    """A writer killed inside checkpoint() leaves the slot it was writing torn; the active one
    still verifies, so the file is recovered, not moved aside."""
    spec = killed_batch(tmp_path)
    with h5py.File(spec["path"], "r", swmr=True) as f:
        ck = f["checkpoint"]
        inactive = 1 - int(ck["active"][()])
        offset = ck["log_step_size"].id.get_offset()
        row = ck["log_step_size"][0].nbytes
    scribble(spec["path"], offset + inactive * row, 8)
    summary, _ = rerun(spec, caplog)
    assert "unclean shutdown" in caplog.text and "is damaged" not in caplog.text
    assert summary["draws_resumed"] == 20
    assert not list(tmp_path.glob("chains/*.damaged"))
    assert contents(spec["path"]) == reference
