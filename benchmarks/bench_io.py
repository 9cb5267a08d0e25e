"""HDF5 append throughput of the sampler's writer against a plain sequential write, same disk.

The writer is the engine's: ``store.open_batch`` with a real RWM state of the digits network
(64 -> [384, 192] -> 10, p = 100,810, float32), then per block ``BatchFile.append`` of
``(chains, checkpoint_every, p)`` draws plus the per-draw stats, and ``BatchFile.checkpoint``,
as ``engine.run_batch`` does (config/digits.yaml: 8 chains x 25 draws = 81 MB per block),
each append with the sha256 of its block (hashed in a thread beside HDF5's write). The
reference writes the same bytes with ``numpy.ndarray.tofile`` into one file, and ``dd`` writes
as many zeros; every write ends with an fsync, so each figure is disk throughput, not page cache.
The row "no sha256" is the same writer with the block digests replaced by zeros: what the
checksums cost. Rows for compression null / lzf / gzip (``sampler.compression``) use the same
draws, random walk positions in float32 (their mantissas are as incompressible as real draws').

Files go to a temporary directory under ``results/`` (the disk the workflow writes to) and are
removed at the end.

    python benchmarks/bench_io.py [--quick] [--mb 320]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from lossatlas import model, sampling
from lossatlas.sampling import engine
from lossatlas.storage import integrity, store

ROOT = Path(__file__).resolve().parents[1]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writer_template(n_chains: int, sizes=(64, 384, 192, 10)):
    """A real RWM state and the engine's stat dtypes for the digits network (no data needed:
    one point is enough to evaluate the initial energy)."""
    mlp = model.MLP(sizes)
    rng = np.random.default_rng(0)
    t = model.Target(mlp, rng.standard_normal((1, sizes[0])), np.zeros(1, dtype=int), box=1.0)
    sampler = sampling.build({"kind": "rwm", "backend": "numpy", "dtype": "float32"}, t)
    state = sampler.init(rng.uniform(-1, 1, (n_chains, mlp.p)).astype(np.float32), rng)
    _, probe = sampler.step(state, np.random.default_rng(1), adapt=False)
    return state, engine._stat_dtypes(probe), rng


def draw_blocks(state, n_blocks, block, rng):
    """Random-walk draws ``(chains, block, p)`` float32 per block: realistic mantissas."""
    x = state.position.copy()
    out = []
    for _ in range(n_blocks):
        steps = rng.standard_normal((x.shape[0], block, x.shape[1]), dtype=np.float32)
        steps *= np.float32(1e-3)
        b = x[:, None, :] + np.cumsum(steps, axis=1)
        x = b[:, -1]
        out.append(b)
    return out


def h5_write(path, blocks, state, stats, rng, compression):
    """The engine's write path: open_batch, then append + checkpoint per block; seconds."""
    n, k = blocks[0].shape[:2]
    st = {name: np.zeros((n, k), dtype=dt) for name, dt in stats.items()}
    t0 = time.perf_counter()
    bf, _ = store.open_batch(
        path, {"bench": 1}, state=state, stats=stats, block=k, compression=compression
    )
    with bf:
        done = 0
        for b in blocks:
            bf.append(b, st)
            done += k
            bf.checkpoint(state, rng, done, done, "sampling")
    _fsync(path)
    return time.perf_counter() - t0


class _NoDigest:
    def __init__(self, *arrays):
        pass

    def digest(self) -> bytes:
        return bytes(integrity.DIGEST_BYTES)


def plain_write(path, blocks, stats):
    """The same bytes (draws and stats) appended to one flat file; seconds."""
    n, k = blocks[0].shape[:2]
    st = np.zeros((len(stats), n, k))
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for b in blocks:
            b.tofile(f)
            st.tofile(f)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t0


def dd_write(path, n_bytes):
    """``dd`` of as many zero bytes in 8 MiB blocks with fdatasync; seconds."""
    bs = 8 << 20
    t0 = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", f"bs={bs}", f"count={-(-n_bytes // bs)}",
         "conv=fdatasync", "status=none"],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="160 MB per row instead of --mb")
    ap.add_argument("--mb", type=float, default=320, help="megabytes of draws per row")
    ap.add_argument("--chains", type=int, default=8, help="chains per batch (digits.yaml: 8)")
    ap.add_argument("--block", type=int, default=25, help="draws per append (checkpoint_every)")
    args = ap.parse_args()
    state, stats, rng = writer_template(args.chains)
    n, p = state.position.shape
    block_mb = n * args.block * p * 4 / 1e6
    n_blocks = max(1, round((160 if args.quick else args.mb) / block_mb))
    blocks = draw_blocks(state, n_blocks, args.block, rng)
    n_bytes = sum(b.nbytes for b in blocks) + n_blocks * len(stats) * n * args.block * 8
    mb = n_bytes / 1e6
    (ROOT / "results").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bench-io-", dir=ROOT / "results"))
    print(
        f"{n_blocks} blocks of {n} chains x {args.block} draws x p = {p:,} float32 "
        f"({block_mb:.1f} MB each), {mb:.0f} MB per row, in {tmp}"
    )
    reps = 2 if args.quick else 3
    try:

        def plain():
            dt = plain_write(tmp / "plain.bin", blocks, stats)
            (tmp / "plain.bin").unlink()
            return dt

        def h5(comp):
            path = tmp / f"batch-{comp}.h5"
            dt = h5_write(path, blocks, state, stats, rng, comp)
            size = path.stat().st_size
            path.unlink()
            return dt, size

        def h5_without_digests():
            # what the checksums cost: the same writer with the digest replaced by zeros
            real = integrity.hash_in_background
            integrity.hash_in_background = _NoDigest
            try:
                return h5(None)
            finally:
                integrity.hash_in_background = real

        def dd():
            dt = dd_write(tmp / "dd.bin", n_bytes)
            (tmp / "dd.bin").unlink()
            return dt, n_bytes

        # each row alternates with the plain write, `reps` pairs: the disk's speed drifts on a
        # shared machine, so each ratio is of neighbouring runs and the median pair is shown
        print(f"{reps} (plain, row) pairs per row; medians")
        print(f"{'row':>26} {'MB/s':>7} {'plain MB/s':>10} {'row/plain':>9} {'file/bytes':>10}")
        for name, fn in [
            ("dd zeros + fdatasync", dd),
            ("h5 writer, null", lambda: h5(None)),
            ("h5 writer, null, no sha256", h5_without_digests),
            ("h5 writer, lzf", lambda: h5("lzf")),
            ("h5 writer, gzip", lambda: h5("gzip")),
        ]:
            pairs = []
            for _ in range(reps):
                tp = plain()
                tr, size = fn()
                pairs.append((tp, tr))
            tp = np.median([x[0] for x in pairs])
            tr = np.median([x[1] for x in pairs])
            ratio = np.median([x[0] / x[1] for x in pairs])
            print(
                f"{name:>26} {mb / tr:>7.0f} {mb / tp:>10.0f} {ratio:>9.2f} {size / n_bytes:>10.3f}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
