"""Batch files (append, checkpoint, resume, recovery, locking) and the virtual samples.h5."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from typing import NamedTuple

import h5py
import numpy as np
import pytest
import xarray as xr

from lossatlas.storage import store


class State(NamedTuple):
    position: np.ndarray
    U: np.ndarray
    count: np.ndarray


N, P, BLOCK = 3, 5, 4
STATS = {"energy": np.float64, "acceptance_rate": np.float64}


def blocks(seed: int, k: int):
    """Deterministic data blocks: (theta, stats, state) per block."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        theta = rng.normal(size=(N, BLOCK, P))
        stats = {name: rng.normal(size=(N, BLOCK)) for name in STATS}
        state = State(theta[:, -1].copy(), stats["energy"][:, -1].copy(), np.full(N, i))
        out.append((theta, stats, state))
    return out


def template() -> State:
    return State(np.zeros((N, P)), np.zeros(N), np.zeros(N, dtype=np.int64))


def write(path, settings, data, rng=None):
    bf, ck = store.open_batch(path, settings, state=template(), stats=STATS, block=BLOCK)
    rng = rng or np.random.default_rng(0)
    with bf:
        for i, (theta, stats, state) in enumerate(data):
            bf.append(theta, stats)
            bf.checkpoint(state, rng, (i + 1) * BLOCK, (i + 1) * BLOCK, "sampling")
    return ck


def test_round_trip_and_checkpoint(tmp_path):
    path = tmp_path / "chains" / "batch-0000.h5"
    data = blocks(1, 3)
    rng = np.random.default_rng(42)
    assert write(path, {"a": 1}, data, rng) is None
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(
            f["posterior/theta"][()], np.concatenate([d[0] for d in data], axis=1)
        )
        np.testing.assert_array_equal(
            f["sample_stats/energy"][()], np.concatenate([d[1]["energy"] for d in data], axis=1)
        )
        # chunks span all chains, a divisor of the block along draw, all (few) params
        assert f["posterior/theta"].chunks == (N, BLOCK, P)
    bf, ck = store.open_batch(path, {"a": 1}, state=template(), stats=STATS, block=BLOCK)
    bf.close()
    assert (ck.draws_done, ck.steps_done, ck.phase) == (3 * BLOCK, 3 * BLOCK, "sampling")
    np.testing.assert_array_equal(ck.fields["position"], data[-1][2].position)
    assert ck.fields["count"].dtype == np.int64
    # the restored generator continues the stream exactly
    assert np.array_equal(ck.rng.random(5), rng.random(5))


def test_resume_truncates_to_checkpoint(tmp_path):
    path = tmp_path / "b.h5"
    data = blocks(2, 3)
    bf, _ = store.open_batch(path, {"a": 1}, state=template(), stats=STATS, block=BLOCK)
    rng = np.random.default_rng(0)
    with bf:
        for i, (theta, stats, state) in enumerate(data):
            bf.append(theta, stats)
            if i < 2:  # the third block is written but never committed
                bf.checkpoint(state, rng, (i + 1) * BLOCK, 0, "sampling")
    bf, ck = store.open_batch(path, {"a": 1}, state=template(), stats=STATS, block=BLOCK)
    with bf:
        assert ck.draws_done == 2 * BLOCK and bf.draws_stored == 2 * BLOCK
    with h5py.File(path, "r") as f:
        assert f["posterior/theta"].shape == (N, 2 * BLOCK, P)
        assert f["sample_stats/energy"].shape == (N, 2 * BLOCK)


def test_other_settings_moved_aside(tmp_path, caplog):
    path = tmp_path / "batch-0003.h5"
    write(path, {"beta": 1.0}, blocks(3, 1))
    old = store.settings_hash({"beta": 1.0})
    with caplog.at_level(logging.WARNING, logger="lossatlas.storage.store"):
        bf, ck = store.open_batch(path, {"beta": 2.0}, state=template(), stats=STATS, block=BLOCK)
    bf.close()
    assert ck is None
    assert (tmp_path / f"batch-0003.h5.stale-{old[:8]}").exists()
    assert "written under other settings" in caplog.text and old[:8] in caplog.text


def test_unreadable_file_moved_aside(tmp_path, caplog):
    path = tmp_path / "batch-0000.h5"
    path.write_bytes(b"not an hdf5 file")
    with caplog.at_level(logging.WARNING, logger="lossatlas.storage.store"):
        bf, ck = store.open_batch(path, {"a": 1}, state=template(), stats=STATS, block=BLOCK)
    bf.close()
    assert ck is None
    assert (tmp_path / "batch-0000.h5.damaged").read_bytes() == b"not an hdf5 file"
    assert "is damaged: not an HDF5 file" in caplog.text


def test_second_writer_fails(tmp_path):
    path = tmp_path / "b.h5"
    bf, _ = store.open_batch(path, {"a": 1}, state=template(), stats=STATS, block=BLOCK)
    with bf, pytest.raises(store.BatchLocked, match="another process"):
        store.open_batch(path, {"a": 1}, state=template(), stats=STATS, block=BLOCK)
    # released on close
    store.open_batch(path, {"a": 1}, state=template(), stats=STATS, block=BLOCK)[0].close()


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {testdir!r})
    from test_store import BLOCK, STATS, blocks, template
    from lossatlas.storage import store
    bf, _ = store.open_batch({path!r}, {{"a": 1}}, state=template(), stats=STATS, block=BLOCK)
    rng = np.random.default_rng(0)
    data = blocks(4, 3)
    for i, (theta, stats, state) in enumerate(data[:2]):
        bf.append(theta, stats)
        bf.checkpoint(state, rng, (i + 1) * BLOCK, 0, "sampling")
    bf.append(*data[2][:2])  # written, not committed
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_killed_writer_is_recovered(tmp_path, caplog):
    path = tmp_path / "batch-0000.h5"
    code = KILLED_WRITER.format(testdir=os.path.dirname(__file__), path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with pytest.raises(OSError):  # the superblock still says "open for write"
        h5py.File(path, "r").close()
    with caplog.at_level(logging.WARNING, logger="lossatlas.storage.store"):
        bf, ck = store.open_batch(path, {"a": 1}, state=template(), stats=STATS, block=BLOCK)
    bf.close()
    assert "unclean shutdown" in caplog.text
    assert ck.draws_done == 2 * BLOCK
    data = blocks(4, 2)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(
            f["posterior/theta"][()], np.concatenate([d[0] for d in data], axis=1)
        )
    np.testing.assert_array_equal(ck.fields["position"], data[1][2].position)


def test_settings_hash_sees_arrays():
    a = {"X": np.arange(4.0), "k": 1}
    assert store.settings_hash(a) == store.settings_hash({"k": 1, "X": np.arange(4.0)})
    assert store.settings_hash(a) != store.settings_hash({"X": np.arange(4.0) + 1e-12, "k": 1})
    assert store.settings_hash(a) != store.settings_hash({"X": np.arange(4), "k": 1})


def test_chunk_draws_divides_block():
    assert store.chunk_draws(100, 8 * 18 * 8) == 100
    assert store.chunk_draws(100, 8 * 256 * 8) == 50  # 64 draws would fit; 50 divides 100
    assert store.chunk_draws(7, 1 << 30) == 1


def test_store_follows_arviz_sample_stats(tmp_path):
    """lp = -beta U beside the energy, and HMC's divergent share becomes ArviZ's boolean
    `diverging` (True where any transition behind the draw diverged)."""
    stats = {"energy": np.float64, "divergent": np.float64}
    path = tmp_path / "chains" / "batch-0000.h5"
    bf, _ = store.open_batch(path, {"b": 0}, state=template(), stats=stats, block=BLOCK)
    energy = np.arange(N * BLOCK, dtype=float).reshape(N, BLOCK)
    divergent = np.zeros((N, BLOCK))
    divergent[1, 2] = 0.2  # one of five thinned transitions diverged
    with bf:
        bf.append(np.zeros((N, BLOCK, P)), {"energy": energy, "divergent": divergent})
        bf.checkpoint(template(), np.random.default_rng(0), BLOCK, BLOCK, "sampling")
    out = store.build([path], tmp_path / "samples.h5", [f"w[{i}]" for i in range(P)], beta=0.5)
    with h5py.File(out, "r") as f:
        diverging = f["sample_stats/diverging"][()]
        assert diverging.dtype == bool and diverging.sum() == 1 and diverging[1, 2]
        np.testing.assert_array_equal(f["sample_stats/lp"][()], -0.5 * energy)


def test_a_group_kept_with_the_draws_reads_back_and_a_damaged_number_is_refused(tmp_path):
    """``build``'s real groups read back as written (text as str, numbers bit for bit) and
    load with xarray; a number damaged on disk fails its checksum instead of being read."""
    path = tmp_path / "chains" / "batch-0000.h5"
    write(path, {"b": 0}, blocks(BLOCK, 1))
    values = np.array([0.1, np.nan, 1 / 3, 1e300])
    groups = {"kept": {"name": (("q",), np.array(["U", "w[0]", "p[1,0]", "x"], dtype=object)),
                       "value": (("q",), values)}}  # fmt: skip
    out = store.build([path], tmp_path / "samples.h5", [f"w[{i}]" for i in range(P)],
                      groups=groups)  # fmt: skip
    with store.SampleStore(out) as s:
        kept = s.group("kept")
        assert s.group("absent") is None and s.group("posterior") is not None
    assert list(kept) == ["name", "value"] and list(kept["name"]) == ["U", "w[0]", "p[1,0]", "x"]
    assert kept["value"].tobytes() == values.tobytes()
    with xr.open_dataset(out, group="kept", engine="h5netcdf") as ds:
        assert list(ds["name"].values) == ["U", "w[0]", "p[1,0]", "x"]
    with h5py.File(out, "r") as f:
        at = f["kept/value"].id.get_chunk_info(0).byte_offset
    raw = bytearray(out.read_bytes())
    raw[at + 9] ^= 0xFF  # one bit pattern of the second half of 0.1
    out.write_bytes(bytes(raw))
    with store.SampleStore(out) as s, pytest.raises(OSError):
        s.group("kept")


@pytest.fixture
def results(tmp_path):
    """A results dir with two batch files and samples.h5 over them; returns (dir, theta)."""
    res = tmp_path / "results" / "exp"
    thetas, paths = [], []
    for b in range(2):
        data = blocks(10 + b, 3)
        path = res / "chains" / f"batch-{b:04d}.h5"
        write(path, {"b": b}, data)
        paths.append(path)
        thetas.append(np.concatenate([d[0] for d in data], axis=1))
    names = [f"w[{i}]" for i in range(P)]
    store.build(paths, res / "samples.h5", names, n_draws=10)
    return res, np.concatenate(thetas, axis=0)[:, :10]


def test_samples_view(results):
    res, theta = results
    with store.SampleStore(res / "samples.h5") as s:
        assert (s.n_chains, s.n_draws, s.n_params) == (2 * N, 10, P)
        assert s.param_names == [f"w[{i}]" for i in range(P)]
        np.testing.assert_array_equal(s.theta[()], theta)
        assert s.stat("energy").shape == (2 * N, 10)
        got = np.concatenate([blk for _, blk in s.iter_param_blocks(2)], axis=2)
        np.testing.assert_array_equal(got, theta)
        for size in (4, 13):  # below and above the chain count
            seen = np.zeros((2 * N, 10), dtype=int)
            for chain, draw, rows in s.iter_draw_blocks(size):
                assert len(rows) <= size
                np.testing.assert_array_equal(rows, theta[chain, draw])
                seen[chain, draw] += 1
            assert (seen == 1).all()


def test_samples_xarray_and_arviz(results):
    res, theta = results
    path = res / "samples.h5"
    with xr.open_dataset(path, group="posterior", engine="h5netcdf") as ds:
        assert ds["theta"].dims == ("chain", "draw", "param")
        assert list(ds["param"].values) == [f"w[{i}]" for i in range(P)]
        np.testing.assert_array_equal(ds["theta"].values, theta)
    with xr.open_dataset(path, group="sample_stats", engine="h5netcdf") as ds:
        assert ds["energy"].dims == ("chain", "draw")
        assert {"energy", "acceptance_rate"} <= set(ds.data_vars)
    tree = xr.open_datatree(path, engine="h5netcdf")
    assert {"posterior", "sample_stats"} <= set(tree.children)
    arviz_base = pytest.importorskip("arviz_base")
    dt = arviz_base.convert_to_datatree(tree)
    assert dt["posterior"]["theta"].shape == theta.shape


def test_arviz_stats_runs_on_the_store(results):
    """What the README promises with the package's own dependencies: arviz-stats' summary,
    R-hat and ESS straight on the store's DataTree, agreeing with the array functions."""
    import arviz_stats as azs
    from arviz_stats.base import array_stats

    res, theta = results
    tree = xr.open_datatree(res / "samples.h5", engine="h5netcdf")
    table = azs.summary(tree, var_names=["theta"])
    assert list(table.index) == [f"theta[w[{i}]]" for i in range(P)]
    rhat = azs.rhat(tree, var_names=["theta"])["theta"].values
    want = array_stats.rhat(theta, method="rank", chain_axis=0, draw_axis=1)
    np.testing.assert_allclose(rhat, want, rtol=1e-12)
    ess = azs.ess(tree, var_names=["theta"])["theta"].values
    assert ess.shape == (P,) and np.isfinite(ess).all()


def test_samples_from_other_cwd_and_moved(results, tmp_path, monkeypatch):
    res, theta = results
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # stored source paths are relative; HDF5 resolves them against the samples.h5 directory
    with h5py.File(res / "samples.h5", "r") as f:
        assert {m.file_name for m in f["posterior/theta"].virtual_sources()} == {
            "chains/batch-0000.h5",
            "chains/batch-0001.h5",
        }
    with store.SampleStore(res / "samples.h5") as s:
        np.testing.assert_array_equal(s.theta[()], theta)
    moved = tmp_path / "moved"
    shutil.move(res, moved)
    with store.SampleStore(moved / "samples.h5") as s:
        np.testing.assert_array_equal(s.theta[()], theta)
    (moved / "chains" / "batch-0001.h5").unlink()
    with pytest.raises(FileNotFoundError, match="batch-0001.h5"):
        store.SampleStore(moved / "samples.h5")
