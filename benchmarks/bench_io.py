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

Each row runs in interleaved rounds against the plain write (:mod:`rounds`: plain, row; row,
plain; ...): the disk's speed drifts on a shared machine, so each ratio is of neighbouring runs
and the median over rounds is shown, in wall and in CPU time, with the load average. Files go
to a temporary directory under ``results/`` (the disk the workflow writes to) and are removed
at the end. ``--write`` puts the table into benchmarks/README.md.

    python benchmarks/bench_io.py [--quick] [--mb 320] [--rounds 3] [--write]
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
import rounds

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
    ap.add_argument("--rounds", type=int, default=None, help="rounds per row (3; --quick 2)")
    ap.add_argument("--write", action="store_true", help="the table into benchmarks/README.md")
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
    n_rounds = args.rounds or (2 if args.quick else 3)
    head = (
        f"{rounds.machine()}. {n_blocks} blocks of {n} chains x {args.block} draws x p = {p:,} "
        f"float32 ({block_mb:.1f} MB each), {mb:.0f} MB per row; {n_rounds} interleaved rounds "
        "against the plain write per row, medians"
    )
    print(head)
    try:

        def plain():
            plain_write(tmp / "plain.bin", blocks, stats)
            (tmp / "plain.bin").unlink()
            return n_bytes

        def h5(comp):
            path = tmp / f"batch-{comp}.h5"
            h5_write(path, blocks, state, stats, rng, comp)
            size = path.stat().st_size
            path.unlink()
            return size

        def h5_without_digests():
            # what the checksums cost: the same writer with the digest replaced by zeros
            real = integrity.hash_in_background
            integrity.hash_in_background = _NoDigest
            try:
                return h5(None)
            finally:
                integrity.hash_in_background = real

        def dd():
            dd_write(tmp / "dd.bin", n_bytes)
            (tmp / "dd.bin").unlink()
            return n_bytes

        columns = ("row", "MB/s", "plain MB/s", "row/plain", "CPU row/plain", "load", "file/bytes")
        lines = ["{:>26} {:>7} {:>10} {:>9} {:>13} {:>5} {:>10}".format(*columns)]
        print(lines[0])
        for name, fn in [
            ("dd zeros + fdatasync", dd),
            ("h5 writer, null", lambda: h5(None)),
            ("h5 writer, null, no sha256", h5_without_digests),
            ("h5 writer, lzf", lambda: h5("lzf")),
            ("h5 writer, gzip", lambda: h5("gzip")),
        ]:
            runs = rounds.interleave({"plain": plain, "row": fn}, n_rounds)
            # rates: plain time over row time is the row's speed over the plain write's
            r = rounds.ratios(runs["plain"], runs["row"])
            cpu = rounds.ratios(runs["row"], runs["plain"])["cpu"]  # CPU the row spends more
            size = runs["row"][-1].result
            lines.append(
                f"{name:>26} {mb / rounds.median(runs['row']):>7.0f} "
                f"{mb / rounds.median(runs['plain']):>10.0f} {r['wall']:>9.2f} "
                f"{cpu:>13.2f} {r['load']:>5.1f} {size / n_bytes:>10.3f}"
            )
            print(lines[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.write:
        rounds.write_preformatted("bench_io", head + ":", lines)


if __name__ == "__main__":
    main()
