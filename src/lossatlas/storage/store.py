"""Chunked HDF5 storage of the draws: one resumable file per batch of chains, and a virtual view.

Batch file ``results/<exp>/chains/batch-0003.h5`` (written by one process, see :func:`open_batch`)::

    /posterior/theta            (chain, draw, param)  chunks (chain, d, min(p, PARAM_CHUNK))
    /sample_stats/<name>        (chain, draw)         chunks (chain, d)
    /checkpoint                 attrs: settings_hash, settings (canonical JSON), format
    /checkpoint/active          ()            slot holding the last complete checkpoint, -1 none
    /checkpoint/<state field>   (2, chain, ...) one row per slot
    /checkpoint/rng_state       (2, RNG_BYTES) uint8: JSON of bit_generator.state, space padded
    /checkpoint/draws_done      (2,)  int64
    /checkpoint/steps_done      (2,)  int64
    /checkpoint/phase           (2,)  int64  index into PHASES
    /checkpoint/digest          (2, 32) uint8: sha256 of the slot (integrity.checkpoint_digest)
    /checkpoint/block_end       (block,) int64: the draw each appended block ends at
    /checkpoint/block_sha256    (block, 32) uint8: sha256 of its draws and stats

Integrity (see :mod:`lossatlas.storage.integrity`): every block and checkpoint carries a
sha256; a resume and :func:`build` verify them all, so a damaged file is moved aside
(``.damaged``) and only its batch is redone, from its last verified checkpoint or from scratch.
``samples.h5`` records the size and mtime of each batch file it verified, and a reader
re-verifies any file changed since.

Crash consistency. The writer runs in HDF5 SWMR mode: the library orders its metadata writes
so that the file on disk is a valid HDF5 file at every flush, and a process killed between
flushes leaves the last flushed state readable (an ordinary writer killed mid-write can leave
metadata that points into half-written space). A killed SWMR writer leaves the superblock marked
"open for write", which only ``h5clear`` resets; instead, :func:`open_batch` reads such a file in
SWMR-read mode and copies its committed part into a fresh file that atomically replaces it.
SWMR forbids creating objects or attributes once it starts, so the whole layout, the checkpoint
included, is created up front.

A checkpoint spans several datasets, so it is double-buffered: each is written to the inactive
slot, flushed, and only then does the single scalar ``active`` flip, so a kill leaves either the
old or the new checkpoint, never a mix. The data of draws past ``draws_done`` is dropped on
resume. The draw extent of a chunk divides the write block, so a block only ever writes whole
new chunks and never touches committed ones.

One writer per file: an exclusive ``flock`` on ``batch-0003.h5.lock`` is held while the file is
open for writing; a second writer (another process, or another thread) fails at once with
:class:`BatchLocked`. The kernel drops the lock when its holder dies, so a killed writer never
blocks the resume. (HDF5's own lock is released once SWMR writing starts, and its "open for
write" mark cannot tell a live writer from a dead one.)

``samples.h5`` (see :func:`build`) holds virtual datasets over the batch files with relative
source paths, ``posterior/theta`` and ``sample_stats/<name>``, and netCDF-4 dimension scales
``chain``, ``draw``, ``param`` in each group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lossatlas import lifecycle
from lossatlas.storage import integrity, streaming
from lossatlas.storage.integrity import Damaged

__all__ = [
    "BatchFile",
    "BatchLocked",
    "Checkpoint",
    "Damaged",
    "PHASES",
    "SampleStore",
    "build",
    "chunk_draws",
    "open_batch",
    "settings_hash",
]

logger = logging.getLogger(__name__)

# 2: sha256 of every block and checkpoint; a file of format 1 has
# another settings hash, so it is moved aside and redone, never mixed with checked files
FORMAT = "lossatlas-batch-2"
PHASES = ("warmup", "sampling")
PARAM_CHUNK = 256  # the default diagnose.param_block: a parameter block reads whole chunks
CHUNK_BYTES = 1 << 20  # near the default chunk cache, large enough for few index entries
RNG_BYTES = 4096  # PCG64 state JSON is ~200 bytes
# libver v110 is the oldest format with SWMR; pinning the upper bound too keeps the files
# readable by any HDF5 >= 1.10.
LIBVER = ("v110", "v110")
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


class BatchLocked(RuntimeError):
    """Another writer holds the batch file."""


@dataclass
class Checkpoint:
    """A restored checkpoint: state fields, RNG and counters."""

    fields: dict[str, np.ndarray]
    rng: np.random.Generator
    draws_done: int
    steps_done: int
    phase: str


# --------------------------------------------------------------------------- settings hash


def _canonical(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {
            "array_sha256": hashlib.sha256(a.tobytes()).hexdigest(),
            "dtype": a.dtype.str,
            "shape": list(a.shape),
        }
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def canonical_json(settings: Mapping) -> str:
    """Key-sorted compact JSON; arrays enter by dtype, shape and the sha256 of their bytes."""
    return json.dumps(_canonical(settings), sort_keys=True, separators=(",", ":"), allow_nan=False)


def settings_hash(settings: Mapping) -> str:
    """sha256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()


# --------------------------------------------------------------------------- layout helpers


COMPRESSIONS = (None, "lzf", "gzip")


def filters(compression: str | None) -> dict:
    """h5py dataset options of a ``sampler.compression`` value (None: no filter).

    Shuffle groups the bytes of equal significance, the only part of float draws that
    compresses at all (sign and exponent); see benchmarks/README.md for what it buys.
    """
    if compression is None:
        return {}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    raise ValueError(f"unknown compression {compression!r}; use one of {COMPRESSIONS}")


def chunk_draws(block: int, bytes_per_draw: int, target: int = CHUNK_BYTES) -> int:
    """Largest divisor of ``block`` whose chunk stays within ``target`` bytes (at least 1)."""
    best = 1
    for d in range(1, block + 1):
        if block % d == 0 and d * bytes_per_draw <= target:
            best = d
    return best


def _rng_json(rng: np.random.Generator) -> bytes:
    return json.dumps(rng.bit_generator.state, sort_keys=True).encode()


def _rng_from_json(raw: bytes) -> np.random.Generator:
    state = json.loads(raw.decode())
    name = state.get("bit_generator")
    if name not in _BIT_GENERATORS:
        raise ValueError(f"unknown bit generator {name!r} in checkpoint")
    bg = getattr(np.random, name)()
    bg.state = state
    return np.random.Generator(bg)


@dataclass(frozen=True)
class _Layout:
    n_chains: int
    n_params: int
    dtype: np.dtype
    draw_chunk: int
    stats: dict[str, np.dtype]
    fields: dict[str, tuple[tuple[int, ...], np.dtype]]  # per-field shape (chain first), dtype
    compression: str | None = None

    @classmethod
    def of(
        cls, state, stats: Mapping[str, Any], block: int, compression: str | None = None
    ) -> _Layout:
        pos = np.asarray(state.position)
        n, p = pos.shape
        fields = {}
        for name, value in zip(type(state)._fields, state, strict=True):
            a = np.asarray(value)
            if a.ndim == 0 or a.shape[0] != n:
                raise ValueError(f"state field {name} must have the chain as leading axis")
            if name in integrity.CHECKPOINT_META:
                raise ValueError(f"state field {name} clashes with a checkpoint dataset")
            fields[name] = (a.shape, a.dtype)
        pc = min(p, PARAM_CHUNK)
        return cls(
            n_chains=n,
            n_params=p,
            dtype=pos.dtype,
            draw_chunk=chunk_draws(block, n * pc * pos.dtype.itemsize),
            stats={k: np.dtype(v) for k, v in stats.items()},
            fields=fields,
            compression=compression,
        )

    def create(self, f: h5py.File, shash: str, settings_json: str) -> None:
        n, p, d = self.n_chains, self.n_params, self.draw_chunk
        f.attrs["format"] = FORMAT
        post = f.create_group("posterior")
        post.create_dataset(
            "theta",
            shape=(n, 0, p),
            maxshape=(n, None, p),
            chunks=(n, d, min(p, PARAM_CHUNK)),
            dtype=self.dtype,
            **filters(self.compression),
        )
        ss = f.create_group("sample_stats")
        for name, dt in self.stats.items():
            ss.create_dataset(name, shape=(n, 0), maxshape=(n, None), chunks=(n, d), dtype=dt)
        ck = f.create_group("checkpoint")
        ck.attrs["settings_hash"] = shash
        ck.attrs["settings"] = settings_json
        ck.attrs["phases"] = json.dumps(PHASES)
        ck.create_dataset("active", data=np.int64(-1))
        for name, (shape, dt) in self.fields.items():
            ck.create_dataset(name, shape=(2, *shape), dtype=dt)
        ck.create_dataset("rng_state", shape=(2, RNG_BYTES), dtype=np.uint8)
        for name in ("draws_done", "steps_done", "phase"):
            ck.create_dataset(name, data=np.zeros(2, dtype=np.int64))
        ck.create_dataset("digest", shape=(2, integrity.DIGEST_BYTES), dtype=np.uint8)
        ck.create_dataset("block_end", shape=(0,), maxshape=(None,), chunks=(256,), dtype=np.int64)
        ck.create_dataset(
            "block_sha256",
            shape=(0, integrity.DIGEST_BYTES),
            maxshape=(None, integrity.DIGEST_BYTES),
            chunks=(256, integrity.DIGEST_BYTES),
            dtype=np.uint8,
        )

    def matches(self, f: h5py.File) -> str | None:
        """None if ``f`` has this layout, else what differs."""
        try:
            th = f["posterior/theta"]
            if th.shape[0] != self.n_chains or th.shape[2] != self.n_params:
                return f"theta has shape {th.shape}"
            if th.dtype != self.dtype:
                return f"theta dtype {th.dtype}"
            if set(f["sample_stats"]) != set(self.stats):
                return f"sample_stats {sorted(f['sample_stats'])}"
            ck = f["checkpoint"]
            for name, (shape, dt) in self.fields.items():
                if name not in ck or ck[name].shape != (2, *shape) or ck[name].dtype != dt:
                    return f"checkpoint field {name}"
        except KeyError as e:
            return f"missing {e}"
        return None


def _read_checkpoint(f: h5py.File, layout: _Layout) -> Checkpoint | None:
    ck = f["checkpoint"]
    slot = int(ck["active"][()])
    if slot < 0:
        return None
    return Checkpoint(
        fields={name: ck[name][slot] for name in layout.fields},
        rng=_rng_from_json(ck["rng_state"][slot].tobytes()),
        draws_done=int(ck["draws_done"][slot]),
        steps_done=int(ck["steps_done"][slot]),
        phase=PHASES[int(ck["phase"][slot])],
    )


# --------------------------------------------------------------------------- batch writer


_ABANDONED: list[dict] = []


def _failed_write(error: BaseException) -> bool:
    """True for the errors HDF5 raises when the file system refuses a write."""
    text = str(error)
    return isinstance(error, OSError | RuntimeError) and (
        "write failed" in text or "errno = " in text or getattr(error, "errno", None) is not None
    )


class BatchFile:
    """A batch file open for SWMR writing; create or resume it with :func:`open_batch`."""

    def __init__(self, path: Path, f: h5py.File, layout: _Layout, lock_fd: int):
        self.path = path
        self._f = f
        self._layout = layout
        self._lock_fd = lock_fd
        self._failed = False
        self._theta = f["posterior/theta"]
        # the file's (name) order, in which integrity.audit hashes the stats too
        self._stats = {k: f["sample_stats"][k] for k in sorted(layout.stats)}
        ck = f["checkpoint"]
        self._ck = ck
        self._block_end = ck["block_end"]
        self._block_sha = ck["block_sha256"]
        self._active = int(ck["active"][()])
        self.draws_stored = self._theta.shape[1]

    @property
    def draw_chunk(self) -> int:
        return self._layout.draw_chunk

    def append(self, theta: np.ndarray, stats: Mapping[str, np.ndarray]) -> None:
        """Append draws ``theta (chain, k, param)`` and ``stats[name] (chain, k)`` with their
        sha256; they are committed by the next :meth:`checkpoint`."""
        if set(stats) != set(self._stats):
            raise ValueError(f"stats {sorted(stats)} differ from {sorted(self._stats)}")
        theta = np.ascontiguousarray(theta, dtype=self._layout.dtype)
        columns = [np.ascontiguousarray(stats[k], dtype=ds.dtype) for k, ds in self._stats.items()]
        k = theta.shape[1]
        a, b = self.draws_stored, self.draws_stored + k
        digest = integrity.hash_in_background(theta, columns)
        self._theta.resize(b, axis=1)
        self._theta[:, a:b, :] = theta
        for column, ds in zip(columns, self._stats.values(), strict=True):
            ds.resize(b, axis=1)
            ds[:, a:b] = column
        i = self._block_end.shape[0]
        self._block_end.resize(i + 1, axis=0)
        self._block_end[i] = b
        self._block_sha.resize(i + 1, axis=0)
        self._block_sha[i] = np.frombuffer(digest.digest(), dtype=np.uint8)
        self.draws_stored = b
        self._f.flush()

    def checkpoint(
        self, state, rng: np.random.Generator, draws_done: int, steps_done: int, phase: str
    ) -> None:
        """Write a complete checkpoint and its sha256 to the inactive slot, then make it the
        active one."""
        if draws_done > self.draws_stored:
            raise ValueError(f"draws_done {draws_done} > draws stored {self.draws_stored}")
        raw = _rng_json(rng)
        if len(raw) > RNG_BYTES:
            raise ValueError(f"RNG state needs {len(raw)} bytes > {RNG_BYTES}")
        # JSON ignores trailing whitespace, so a space-padded buffer decodes as is
        raw = raw.ljust(RNG_BYTES, b" ")
        slot = 1 - self._active if self._active >= 0 else 0
        ck = self._ck
        values = {
            name: np.asarray(value, dtype=self._layout.fields[name][1])
            for name, value in zip(type(state)._fields, state, strict=True)
        }
        phase_index = PHASES.index(phase)
        for name, value in values.items():
            ck[name][slot] = value
        ck["rng_state"][slot] = np.frombuffer(raw, dtype=np.uint8)
        ck["draws_done"][slot] = draws_done
        ck["steps_done"][slot] = steps_done
        ck["phase"][slot] = phase_index
        digest = integrity.checkpoint_digest(values, raw, draws_done, steps_done, phase_index)
        ck["digest"][slot] = np.frombuffer(digest, dtype=np.uint8)
        self._f.flush()
        ck["active"][()] = slot
        self._f.flush()
        self._active = slot

    def close(self) -> None:
        try:
            if self._f.id.valid and not self._failed:
                self._f.close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1

    def _abandon(self) -> None:
        # After a failed write (a full disk), HDF5 fails to close the file and then crashes
        # the process when the half-closed objects are freed. Keeping them alive instead leaks
        # one file handle; the last checkpoint on disk is intact, so the file resumes.
        self._failed = True
        _ABANDONED.append(self.__dict__.copy())

    def __enter__(self) -> BatchFile:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if error is not None and _failed_write(error):
            self._abandon()
        self.close()


def _lock(path: Path) -> int:
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        taken = lifecycle.try_flock(fd, Path(f"{path}.lock"))
    except BaseException:
        os.close(fd)
        raise
    if not taken:
        os.close(fd)
        raise BatchLocked(
            f"{path} is being written by another process (lock {path}.lock is held); "
            "two writers on one batch file would corrupt it"
        )
    return fd


def move_aside(path: Path, tag: str) -> Path:
    dest = path.with_name(f"{path.name}.{tag}")
    k = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.{tag}.{k}")
        k += 1
    os.replace(path, dest)
    return dest


def _create(path: Path, layout: _Layout, shash: str, settings_json: str) -> None:
    """Create the full layout beside ``path`` and rename it in, so ``path`` is always valid."""
    tmp = path.with_name(path.name + ".new")
    with h5py.File(tmp, "w", libver=LIBVER) as f:
        layout.create(f, shash, settings_json)
    os.replace(tmp, path)


def _copy_verified(src: h5py.File, path: Path, layout: _Layout, found: integrity.Audit) -> None:
    """Write the verified part of ``src`` (up to checkpoint ``found.slot``) into a fresh file
    that replaces ``path``; chunk by chunk, so memory stays bounded."""
    tmp = path.with_name(path.name + ".recover")
    ck_src = src["checkpoint"]
    done = found.draws if found.slot is not None else 0
    with h5py.File(tmp, "w", libver=LIBVER) as dst:
        layout.create(dst, str(ck_src.attrs["settings_hash"]), str(ck_src.attrs["settings"]))
        step = layout.draw_chunk
        pairs = [(src["posterior/theta"], dst["posterior/theta"])]
        pairs += [(src["sample_stats"][k], dst["sample_stats"][k]) for k in layout.stats]
        for s, d in pairs:
            d.resize(done, axis=1)
            for a in range(0, done, step):
                d[:, a : a + step] = s[:, a : a + step]
        if found.slot is not None:
            ck = dst["checkpoint"]
            ends = ck_src["block_end"][()]
            kept = int(np.searchsorted(ends, done, side="right"))
            for name in ("block_end", "block_sha256"):
                ck[name].resize(kept, axis=0)
                ck[name][:kept] = ck_src[name][:kept]
            for name in [
                *layout.fields,
                "rng_state",
                "draws_done",
                "steps_done",
                "phase",
                "digest",
            ]:
                ck[name][0] = ck_src[name][found.slot]
            ck["active"][()] = 0
    os.replace(tmp, path)


def _examine(path: Path, layout: _Layout, shash: str, log: logging.Logger) -> None:
    """Leave at ``path`` a closed batch file that passes every check, or none at all.

    A clean, intact file stays as it is. A killed writer's file, or one whose latest checkpoint
    or blocks fail verification, is replaced by a copy of its verified part; the damaged
    original is moved aside. A file of other settings is moved aside as stale.
    """
    try:
        unclean = integrity.check_superblock(path) != 0
        if unclean:
            integrity.clear_write_flags(path)
        f = h5py.File(path, "r", libver=LIBVER)
    except (Damaged, OSError) as e:
        _moved(path, "damaged", getattr(e, "what", None) or f"cannot be opened ({e})", None, log)
        return
    with f:
        try:
            old = str(f["checkpoint"].attrs["settings_hash"])
        except Exception as e:  # our files always have it: damaged metadata
            old, damage = None, f"unreadable structure ({type(e).__name__}: {e})"
        else:
            why = layout.matches(f)
            if old != shash:
                f.close()
                _stale(path, old, shash, why, log)
                return
            # same settings, other layout: only damage does that
            damage = None if why is None else f"unreadable structure ({why})"
        found = integrity.audit(f) if damage is None else integrity.Audit(None, 0, -1, damage)
        if found.intact and not unclean:
            return
        if found.damage is None:
            _copy_verified(f, path, layout, found)
            log.warning(
                "%s: recovered after an unclean shutdown of its writer; kept %d committed draws",
                path,
                found.draws,
            )
            return
        aside = move_aside(path, "damaged")
        kept = None
        if found.slot is not None:
            try:
                _copy_verified(f, path, layout, found)
                kept = found.draws
            except Exception:  # the verified part cannot be read after all: start over
                path.unlink(missing_ok=True)
    _report_damage(path, aside, found.damage, kept, log)


def _moved(path: Path, tag: str, what: str, kept: int | None, log: logging.Logger) -> None:
    _report_damage(path, move_aside(path, tag), what, kept, log)


def _report_damage(
    path: Path, aside: Path, what: str, kept: int | None, log: logging.Logger
) -> None:
    redo = (
        "redoing the batch from scratch"
        if kept is None
        else f"resuming from its last verified checkpoint ({kept} draws)"
    )
    log.warning("%s is damaged: %s; moved to %s, %s", path, what, aside.name, redo)


def _stale(path: Path, old: str, new: str, why: str | None, log: logging.Logger) -> None:
    dest = move_aside(path, f"stale-{old[:8] or 'nohash'}")
    log.warning(
        "%s was written under other settings (settings_hash %s, now %s%s); "
        "moved to %s and starting fresh",
        path,
        old[:8] or "none",
        new[:8],
        f"; {why}" if why else "",
        dest,
    )


def open_batch(
    path: str | os.PathLike,
    settings: Mapping,
    *,
    state,
    stats: Mapping[str, Any],
    block: int,
    log: logging.Logger | None = None,
    compression: str | None = None,
) -> tuple[BatchFile, Checkpoint | None]:
    """Open the batch file at ``path`` for writing, resuming it when it matches ``settings``.

    ``state`` is a template sampler state (field shapes and dtypes), ``stats`` maps
    sample-stat names to dtypes, ``block`` is the number of draws per append. Returns the
    writer and the restored checkpoint (None when starting fresh). Every committed block and
    the checkpoint are verified first (:func:`integrity.audit`); the data is truncated to the
    checkpoint's ``draws_done``. A file written under other settings, or a damaged one, is
    moved aside (``.stale-<hash8>`` / ``.damaged``) with a log line, never reused; of a damaged
    file the verified part up to its last good checkpoint is kept.
    ``compression`` (:func:`filters`) applies to a new file's draws; a resumed file keeps the
    filter it was created with (the numbers are the same either way).
    """
    log = log or logger
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = _Layout.of(state, stats, block, compression)
    shash = settings_hash(settings)
    sjson = canonical_json(settings)
    lock_fd = _lock(path)
    try:
        if path.exists():
            _examine(path, layout, shash, log)
        if not path.exists():
            _create(path, layout, shash, sjson)
        f = h5py.File(path, "r+", libver=LIBVER)
        try:
            ckpt = _read_checkpoint(f, layout)
            done = ckpt.draws_done if ckpt else 0
            if f["posterior/theta"].shape[1] > done:  # draws past the checkpoint: drop them
                f["posterior/theta"].resize(done, axis=1)
                for k in layout.stats:
                    f["sample_stats"][k].resize(done, axis=1)
            ck = f["checkpoint"]
            kept = int(np.searchsorted(ck["block_end"][()], done, side="right"))
            for name in ("block_end", "block_sha256"):
                ck[name].resize(kept, axis=0)
            f.swmr_mode = True
        except BaseException:
            f.close()
            raise
        return BatchFile(path, f, layout, lock_fd), ckpt
    except BaseException:
        os.close(lock_fd)
        raise


def read_progress(path: str | os.PathLike) -> tuple[int, int, str] | None:
    """``(draws_done, steps_done, phase)`` of a batch file's last checkpoint, also while it is
    being written (SWMR read); None if there is none yet or it cannot be read."""
    try:
        integrity.check_superblock(path)  # SWMR reads of a damaged file retry for minutes
    except (Damaged, OSError):
        return None
    for kw in ({"swmr": True}, {}):
        try:
            with h5py.File(path, "r", **kw) as f:
                ck = f["checkpoint"]
                slot = int(ck["active"][()])
                if slot < 0:
                    return None
                return (
                    int(ck["draws_done"][slot]),
                    int(ck["steps_done"][slot]),
                    PHASES[int(ck["phase"][slot])],
                )
        except (OSError, KeyError):
            continue
    return None


# --------------------------------------------------------------------------- virtual view


def _identity(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def verify_batch(path: str | os.PathLike, n_draws: int | None) -> list[int]:
    """Check a closed batch file's superblock and its first ``n_draws`` draws (default: all
    committed); returns its size and mtime as verified. Raises :class:`Damaged`."""
    before = _identity(Path(path))
    if integrity.check_superblock(path) != 0:
        raise Damaged(path, "still marked open for writing: its writer was killed")
    try:
        with h5py.File(path, "r") as f:
            found = integrity.audit(f, upto=n_draws)
    except OSError as e:
        raise Damaged(path, f"cannot be opened ({e})") from None
    if found.damage is not None:
        raise Damaged(path, found.damage)
    if _identity(Path(path)) != before:
        raise Damaged(path, "changed while it was being verified")
    return before


def _scale(group: h5py.Group, name: str, data) -> h5py.Dataset:
    ds = group.create_dataset(name, data=data)
    ds.make_scale(name)
    return ds


def _batches(batch_paths, base: Path, n_params: int, n_draws: int | None):
    """Each batch file verified (its digest, keyed by its path relative to ``base``) and
    described as ``(path, theta shape, dtype, draws committed, stats)``; all must share one
    layout and hold ``n_draws`` (None: as many as the shortest holds)."""
    infos, verified = [], {}
    for bp in batch_paths:
        verified[os.path.relpath(Path(bp).resolve(), base)] = verify_batch(bp, n_draws)
        with h5py.File(bp, "r") as f:
            th = f["posterior/theta"]
            ck = f["checkpoint"]
            slot = int(ck["active"][()])
            done = int(ck["draws_done"][slot]) if slot >= 0 else 0
            stats = {k: (v.dtype, v.shape) for k, v in f["sample_stats"].items()}
            infos.append((bp, th.shape, th.dtype, done, stats))
    if not infos:
        raise ValueError("build needs at least one batch file")
    p = infos[0][1][2]
    if n_params != p:
        raise ValueError(f"{n_params} param names for {p} parameters")
    stat_names = list(infos[0][4])
    for bp, shape, dtype, _, stats in infos:
        if shape[2] != p or dtype != infos[0][2] or list(stats) != stat_names:
            raise ValueError(f"{bp}: layout differs from {infos[0][0]}")
    if n_draws is None:
        n_draws = min(i[3] for i in infos)
    short = [str(i[0]) for i in infos if i[3] < n_draws]
    if short:
        raise ValueError(f"fewer than {n_draws} committed draws in {', '.join(short)}")
    return infos, verified, n_draws


def _layouts(infos, base: Path, n_draws: int, shown: dict):
    """The virtual layouts of theta and of each shown statistic over the batches' first
    ``n_draws`` draws, chains in batch order, sources relative to ``base``."""
    n_chains, p, dtype = sum(i[1][0] for i in infos), infos[0][1][2], infos[0][2]
    theta_l = h5py.VirtualLayout(shape=(n_chains, n_draws, p), dtype=dtype)
    stat_l = {
        k: h5py.VirtualLayout(shape=(n_chains, n_draws), dtype=infos[0][4][src][0])
        for k, src in shown.items()
    }
    c0 = 0
    for bp, shape, _, _, stats in infos:
        rel = os.path.relpath(Path(bp).resolve(), base)
        nb = shape[0]
        src = h5py.VirtualSource(rel, "posterior/theta", shape=shape)
        theta_l[c0 : c0 + nb, :, :] = src[:, :n_draws, :]
        for k, src in shown.items():
            s = h5py.VirtualSource(rel, f"sample_stats/{src}", shape=stats[src][1])
            stat_l[k][c0 : c0 + nb, :] = s[:, :n_draws]
        c0 += nb
    return theta_l, stat_l


def build(
    batch_paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    param_names: Sequence[str],
    n_draws: int | None = None,
    attrs: Mapping[str, Any] | None = None,
    beta: float | None = None,
    groups: Mapping[str, Mapping[str, tuple[tuple[str, ...], np.ndarray]]] | None = None,
) -> Path:
    """Write ``samples.h5``: virtual datasets over the batch files, in batch order, after
    verifying every draw shown (raises :class:`Damaged` naming the first damaged file).

    ArviZ's InferenceData conventions (:func:`shown_stats`): U is ``potential_energy``, and
    ``energy`` the Hamiltonian where the kernel has one (HMC), else U; ``beta`` adds
    ``sample_stats/lp`` = -beta * U (the unnormalised log density, a real dataset: one number
    per draw, which ``restore`` compares with a rebuilt view); a ``divergent`` stat (HMC)
    adds ``sample_stats/diverging``, True where a transition behind the draw diverged;
    ``groups`` adds groups of
    real datasets, name -> variable -> (dims, array), e.g. ``observed_data`` and
    ``constant_data``, each dimension a scale of its group.

    ``posterior/theta (chain, draw, param)`` and ``sample_stats/<name> (chain, draw)`` with
    dimension scales ``chain``, ``draw``, ``param`` (names as strings) in each group, so xarray
    (h5netcdf) and arviz read it. ``n_draws`` (default: the fewest committed in any batch) is
    the number of leading draws shown. Source paths are stored relative to the directory of
    ``out_path``; HDF5 resolves them against that directory first, so the results directory can
    be moved as a whole. The file is written beside ``out_path`` and renamed in.
    """
    out_path = Path(out_path)
    base = out_path.parent.resolve()
    infos, verified, n_draws = _batches(batch_paths, base, len(param_names), n_draws)
    n_chains = sum(i[1][0] for i in infos)
    dtype = infos[0][2]
    stat_names = list(infos[0][4])
    # the store's stat name -> the batch files' (see shown_stats)
    shown = shown_stats(stat_names)
    theta_l, stat_l = _layouts(infos, base, n_draws, shown)

    def fill(dt):
        # a missing source reads as NaN rather than as plausible zeros
        return np.nan if np.issubdtype(dt, np.floating) else 0

    tmp = out_path.with_name(out_path.name + ".tmp")
    with h5py.File(tmp, "w", libver=LIBVER) as f:
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        f.attrs["verified_sources"] = json.dumps(verified, sort_keys=True)
        post = f.create_group("posterior")
        chain = _scale(post, "chain", np.arange(n_chains, dtype=np.int64))
        draw = _scale(post, "draw", np.arange(n_draws, dtype=np.int64))
        param = _scale(post, "param", np.array(list(param_names), dtype=h5py.string_dtype()))
        th = post.create_virtual_dataset("theta", theta_l, fillvalue=fill(dtype))
        for i, sc in enumerate((chain, draw, param)):
            th.dims[i].attach_scale(sc)
        ss = f.create_group("sample_stats")
        chain = _scale(ss, "chain", np.arange(n_chains, dtype=np.int64))
        draw = _scale(ss, "draw", np.arange(n_draws, dtype=np.int64))
        for k in shown:
            ds = ss.create_virtual_dataset(k, stat_l[k], fillvalue=fill(stat_l[k].dtype))
            ds.dims[0].attach_scale(chain)
            ds.dims[1].attach_scale(draw)
        if beta is not None and POTENTIAL in shown:
            lp = ss.create_dataset("lp", data=-float(beta) * ss[POTENTIAL][()])
            lp.dims[0].attach_scale(chain)
            lp.dims[1].attach_scale(draw)
        if "divergent" in stat_names:
            # ArviZ reads `diverging` as a boolean per draw; `divergent` is the share of the
            # thinned transitions behind the draw that diverged
            dv = ss.create_dataset("diverging", data=ss["divergent"][()] > 0)
            dv.dims[0].attach_scale(chain)
            dv.dims[1].attach_scale(draw)
        for group_name, variables in (groups or {}).items():
            _real_group(f.create_group(group_name), variables)
    os.replace(tmp, out_path)
    return out_path


def energies_differ(a: str | os.PathLike, b: str | os.PathLike) -> str | None:
    """Where two stores' recorded energies differ (``sample_stats/lp``, a real dataset
    written at build from the batches as they were then), or None when every draw's is equal."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        if "lp" not in fa["sample_stats"] or "lp" not in fb["sample_stats"]:
            return "no recorded energies to compare"
        la, lb = fa["sample_stats/lp"], fb["sample_stats/lp"]
        if la.shape != lb.shape:
            return f"{la.shape[0]} x {la.shape[1]} draws against {lb.shape[0]} x {lb.shape[1]}"
        # one number per draw: (chains, draws) fits in memory where theta would not
        unequal = np.argwhere(la[()] != lb[()])
        if len(unequal):
            chain, draw = unequal[0]
            return f"{len(unequal)} draws' energies differ, the first chain {chain} draw {draw}"
    return None


POTENTIAL = "potential_energy"


def shown_stats(batch_stats) -> dict[str, str]:
    """The store's sample stats and the batch stat behind each, in ArviZ's names: U (the batch
    files' ``energy``) as ``potential_energy``; ``energy`` is the Hamiltonian where the kernel
    has one (HMC: what ArviZ's BFMI reads), else U as before."""
    out = {k: k for k in batch_stats if k != "hamiltonian"}
    if "energy" in batch_stats:
        out[POTENTIAL] = "energy"
    if "hamiltonian" in batch_stats:
        out["energy"] = "hamiltonian"
    return out


def _real_group(g: h5py.Group, variables: Mapping[str, tuple[tuple[str, ...], np.ndarray]]):
    scales = {}
    for dims, data in variables.values():
        for dim, size in zip(dims, np.shape(data), strict=True):
            if dim not in scales:
                scales[dim] = _scale(g, dim, np.arange(size, dtype=np.int64))
    for name, (dims, data) in variables.items():
        data = np.asarray(data)
        if data.dtype.kind in "UO":  # text
            ds = g.create_dataset(name, data=data.astype(object), dtype=h5py.string_dtype())
        else:
            # a checksum per chunk: HDF5 refuses to read a damaged number rather than show it
            ds = g.create_dataset(name, data=data, fletcher32=data.size > 0)
        for i, dim in enumerate(dims):
            ds.dims[i].attach_scale(scales[dim])


# --------------------------------------------------------------------------- reader

REPAIR_HINT = (
    "run `lossatlas verify --repair` to move damaged batches aside, then rerun snakemake: "
    "only those batches are sampled again"
)


class SampleStore:
    """Lazy reader of ``samples.h5``; nothing here reads all of ``theta`` at once."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = h5py.File(self.path, "r")
        self.theta = self._f["posterior/theta"]
        self._check_sources()
        self.n_chains, self.n_draws, self.n_params = self.theta.shape
        self.param_names = [
            s.decode() if isinstance(s, bytes) else str(s) for s in self._f["posterior/param"][()]
        ]

    def sources(self) -> list[Path]:
        """The batch files behind the view, in chain order."""
        base = self.path.resolve().parent
        return [
            base / name for name in dict.fromkeys(m.file_name for m in self.theta.virtual_sources())
        ]

    def _check_sources(self) -> None:
        # HDF5 fills unreadable virtual sources silently, and reads a truncated one as zeros:
        # name the file instead
        sources = self.sources()
        missing = [str(p) for p in sources if not p.exists()]
        if missing:
            self.close()
            raise FileNotFoundError(
                f"{self.path}: batch files missing: {', '.join(missing)}; if `lossatlas verify "
                "--repair` moved them aside, run the same snakemake command again: it samples "
                "them again"
            )
        verified = json.loads(self._f.attrs.get("verified_sources", "{}"))
        base = self.path.resolve().parent
        for p in sources:
            if verified.get(os.path.relpath(p, base)) == _identity(p):
                continue  # unchanged since build verified it
            try:
                verify_batch(p, self.theta.shape[1])
            except Damaged as e:
                self.close()
                raise Damaged(e.path, f"{e.what}; {REPAIR_HINT}") from None

    @property
    def batch_chunks(self) -> dict[str, int]:
        """The batch files' chunking of ``theta`` by dimension: dask chunks that read whole
        chunks (the virtual dataset itself reports none)."""
        with h5py.File(self.sources()[0], "r") as f:
            chunks = f["posterior/theta"].chunks
        return dict(zip(("chain", "draw", "param"), chunks, strict=True))

    @property
    def stat_names(self) -> list[str]:
        return [k for k in self._f["sample_stats"] if k not in ("chain", "draw")]

    def stat(self, name: str) -> np.ndarray:
        """Sample stat ``name`` as a ``(chain, draw)`` array."""
        return self._f["sample_stats"][name][()]

    def potential(self) -> np.ndarray:
        """U of every draw, ``(chain, draw)``, whatever the kernel (a store built before U
        had its own name holds it as ``energy``)."""
        ss = self._f["sample_stats"]
        return ss[POTENTIAL if POTENTIAL in ss else "energy"][()]

    def group(self, name: str) -> dict[str, np.ndarray] | None:
        """The variables of the real group ``name`` written by :func:`build` (``groups``), text
        as ``str``, or None where the store has none. A damaged number raises (checksums)."""
        g = self._f.get(name)
        if not isinstance(g, h5py.Group):
            return None
        out = {}
        for k, ds in g.items():
            if ds.is_scale:
                continue
            out[k] = ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()]
        return out

    def iter_param_blocks(self, size: int) -> Iterator[tuple[slice, np.ndarray]]:
        """``(slice, theta[:, :, slice])`` for consecutive blocks of ``size`` parameters."""
        for a, b, block in streaming.iter_param_blocks(self.theta, size, dtype=None):
            yield slice(a, b), block

    def iter_draw_blocks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(chain (n,), draw (n,), rows (n, p))`` covering every (chain, draw) once.

        A block holds at most ``size`` rows: all chains over a range of draws (chain-major
        within the block), or, when ``size`` is below the chain count, a range of chains at one
        draw. Reads follow the chunking, which spans all chains of a batch.
        """
        n, d = self.n_chains, self.n_draws
        if size >= n:
            for a, b, rows in streaming.iter_draw_blocks(self.theta, size // n, dtype=None):
                chain = np.repeat(np.arange(n), b - a)
                draw = np.tile(np.arange(a, b), n)
                yield chain, draw, rows
        else:
            for t in range(d):
                for a in range(0, n, size):
                    b = min(a + size, n)
                    yield np.arange(a, b), np.full(b - a, t), self.theta[a:b, t, :]

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
