"""Integrity of batch files: their HDF5 superblock, and sha256 digests of every committed block of
draws and of every checkpoint, so damage is found before a single damaged number is used.

Two layers, each for what the other cannot see:

- The superblock (the first 48 bytes) records where the file ends and whether a writer still has
  it open. :func:`check_superblock` reads it without HDF5: a truncated file is named at once,
  never read (HDF5 would read the missing tail as zeros), and a file left by a killed writer is
  cleared the way ``h5clear -s`` does (:func:`clear_write_flags`), so it can then be opened in
  plain read mode, where a failed metadata checksum is an immediate error. (In SWMR-read mode
  HDF5 retries such a read with an exponential back-off: minutes per damaged file.)
- Each ``append`` stores the sha256 of its draws and stats (hashed in a thread while HDF5 writes
  the same bytes) and each checkpoint the sha256 of its slot; :func:`audit` re-reads and checks
  them, and says which checkpoint can still be trusted.

HDF5's Fletcher32 chunk filter would also check every later read, but it cost the writer a
third of its throughput (benchmarks/README.md), below half of a plain write with the digests.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

__all__ = [
    "Audit",
    "Damaged",
    "audit",
    "block_digest",
    "check_superblock",
    "checkpoint_digest",
    "clear_write_flags",
    "hash_in_background",
]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
# superblock versions 2 and 3 (libver v110 writes 3): signature, version, sizes of offsets and
# lengths, status flags, base, extension, end-of-file and root addresses, lookup3 checksum
_SUPERBLOCK = struct.Struct("<8sBBBBQQQQI")
DIGEST_BYTES = 32


class Damaged(Exception):
    """A batch file fails an integrity check; ``what`` says which and where."""

    def __init__(self, path: str | os.PathLike, what: str):
        super().__init__(f"{path}: {what}")
        self.path = Path(path)
        self.what = what


# --------------------------------------------------------------------------- superblock


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, HDF5's metadata checksum."""
    m = 0xFFFFFFFF
    a = b = c = (0xDEADBEEF + len(data) + initval) & m
    words = data
    while len(words) > 12:
        x, y, z = struct.unpack_from("<3I", words)
        a, b, c = (a + x) & m, (b + y) & m, (c + z) & m
        for ra, rb, rc in ((4, 6, 8), (16, 19, 4)):  # lookup3's mix(): twice the same round
            a = (a - c) & m ^ _rot(c, ra)
            c = (c + b) & m
            b = (b - a) & m ^ _rot(a, rb)
            a = (a + c) & m
            c = (c - b) & m ^ _rot(b, rc)
            b = (b + a) & m
        words = words[12:]
    if not words:
        return c
    x, y, z = struct.unpack("<3I", words.ljust(12, b"\0"))
    a, b, c = (a + x) & m, (b + y) & m, (c + z) & m
    c = (c ^ b) - _rot(b, 14) & m
    a = (a ^ c) - _rot(c, 11) & m
    b = (b ^ a) - _rot(a, 25) & m
    c = (c ^ b) - _rot(b, 16) & m
    a = (a ^ c) - _rot(c, 4) & m
    b = (b ^ a) - _rot(a, 14) & m
    c = (c ^ b) - _rot(b, 24) & m
    return c


def _read_superblock(path: Path) -> tuple[bytearray, tuple]:
    with open(path, "rb") as fh:
        raw = bytearray(fh.read(_SUPERBLOCK.size))
    if len(raw) < _SUPERBLOCK.size or raw[:8] != SIGNATURE:
        raise Damaged(path, "not an HDF5 file (no signature at byte 0)")
    fields = _SUPERBLOCK.unpack(raw)
    if fields[1] not in (2, 3) or fields[2:4] != (8, 8):
        raise Damaged(path, f"superblock version {fields[1]}, not one this project writes")
    if lookup3(bytes(raw[:-4])) != fields[-1]:
        raise Damaged(path, "superblock checksum mismatch")
    return raw, fields


def check_superblock(path: str | os.PathLike) -> int:
    """The superblock's status flags (nonzero: a writer has it open or was killed).

    Raises :class:`Damaged` for a file that is not a whole HDF5 file of ours: no signature, a bad
    superblock checksum, or fewer bytes than the superblock says the file holds.
    """
    path = Path(path)
    _, fields = _read_superblock(path)
    end, size = fields[7], path.stat().st_size
    if size < end:
        raise Damaged(path, f"truncated: {size} bytes on disk, the file needs {end}")
    return fields[4]


def clear_write_flags(path: str | os.PathLike) -> None:
    """Reset the superblock's "open for write" flags of a killed writer's file, as
    ``h5clear -s`` does; one 48-byte write, so the file is never half changed."""
    path = Path(path)
    raw, _ = _read_superblock(path)
    raw[11] = 0
    raw[-4:] = struct.pack("<I", lookup3(bytes(raw[:-4])))
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(raw), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- digests


def block_digest(theta: np.ndarray, stats: Sequence[np.ndarray]) -> bytes:
    """sha256 of a block's draws, then its stats (in the file's stat order), in memory order."""
    h = hashlib.sha256(memoryview(np.ascontiguousarray(theta)).cast("B"))
    for s in stats:
        h.update(memoryview(np.ascontiguousarray(s)).cast("B"))
    return h.digest()


class hash_in_background:  # noqa: N801 (used like a function)
    """:func:`block_digest` in a thread: hashlib drops the GIL, so it overlaps HDF5's write of the
    same arrays. ``.digest()`` waits for it."""

    def __init__(self, theta: np.ndarray, stats: Sequence[np.ndarray]):
        self._out: list[bytes] = []
        self._thread = threading.Thread(
            target=lambda: self._out.append(block_digest(theta, stats)), daemon=True
        )
        self._thread.start()

    def digest(self) -> bytes:
        self._thread.join()
        return self._out[0]


def checkpoint_digest(
    fields: Mapping[str, np.ndarray], rng_raw: bytes, draws: int, steps: int, phase: int
) -> bytes:
    """sha256 of one checkpoint slot: its fields by name (with dtype and shape), the padded RNG
    state and the three counters."""
    h = hashlib.sha256()
    for name in sorted(fields):
        a = np.ascontiguousarray(fields[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    h.update(rng_raw)
    h.update(np.array([draws, steps, phase], dtype=np.int64).tobytes())
    return h.digest()


# --------------------------------------------------------------------------- audit

# checkpoint members that are not sampler-state fields
CHECKPOINT_META = (
    "active",
    "rng_state",
    "draws_done",
    "steps_done",
    "phase",
    "digest",
    "block_end",
    "block_sha256",
)


@dataclass(frozen=True)
class Audit:
    """What :func:`audit` found.

    ``slot``: the checkpoint slot to resume from (None: none can be trusted), ``draws``: its
    committed draws (all verified), ``active``: the slot the file marks active, ``damage``: the
    first fault found, or None.
    """

    slot: int | None
    draws: int
    active: int
    damage: str | None

    @property
    def intact(self) -> bool:
        """Nothing failed and the active checkpoint (if any) is the one to resume from."""
        return self.damage is None and self.slot == (None if self.active < 0 else self.active)


def _slot_ok(ck: h5py.Group, slot: int, fields: list[str]) -> tuple[bool, int]:
    values = {name: ck[name][slot] for name in fields}
    draws, steps, phase = (int(ck[k][slot]) for k in ("draws_done", "steps_done", "phase"))
    want = checkpoint_digest(values, ck["rng_state"][slot].tobytes(), draws, steps, phase)
    return want == ck["digest"][slot].tobytes(), draws


def audit(f: h5py.File, upto: int | None = None) -> Audit:
    """Check the checkpoints and the committed blocks of an open batch file.

    Every block up to the newest checkpoint (or up to ``upto`` draws, when given) is read back
    one block at a time and compared with its digest. Never raises for damage: a read that
    fails counts as a mismatch.
    """
    try:
        ck = f["checkpoint"]
        active = int(ck["active"][()])
        if active not in (-1, 0, 1):
            return Audit(None, 0, -1, f"checkpoint slot index {active}")
        fields = [k for k in ck if k not in CHECKPOINT_META]
        slots = {}
        bad_slots = []
        for slot in (active, 1 - active) if active >= 0 else ():
            ok, draws = _slot_ok(ck, slot, fields)
            if ok:
                slots[slot] = draws
            else:
                bad_slots.append(slot)
        ends = ck["block_end"][()]
        sums = ck["block_sha256"][()]
        theta = f["posterior/theta"]
        stats = [f["sample_stats"][k] for k in f["sample_stats"]]
    except Exception as e:  # damaged metadata: HDF5 raises OSError, KeyError, ValueError...
        return Audit(None, 0, -1, f"unreadable structure ({type(e).__name__}: {e})")
    need = max(slots.values(), default=0) if upto is None else upto
    # The inactive slot is the one a checkpoint writes before it flips `active`: a writer killed
    # mid-checkpoint leaves it torn, which is normal. Only the active slot failing is damage.
    damage = (
        f"checkpoint slot {active} (the active one) does not match its checksum"
        if active in bad_slots
        else None
    )
    verified, start = 0, 0
    for end, digest in zip(ends, sums, strict=True):
        end = int(end)
        if start >= need:
            break
        if end <= start or end > theta.shape[1]:
            damage = damage or f"block table entry ending at draw {end} is out of order"
            break
        try:
            got = block_digest(theta[:, start:end], [s[:, start:end] for s in stats])
        except Exception as e:
            got, why = b"", f"{type(e).__name__}: {e}"
        else:
            why = "checksum mismatch"
        if got != digest.tobytes():
            damage = f"draws {start}-{end} fail verification ({why})"
            break
        verified = start = end
    if upto is not None and verified < upto and damage is None:
        damage = f"only {verified} of {upto} draws are committed and verified"
    usable = {s: d for s, d in slots.items() if d <= verified}
    slot = max(usable, key=lambda s: usable[s]) if usable else None
    return Audit(slot, usable.get(slot, 0), active, damage)
