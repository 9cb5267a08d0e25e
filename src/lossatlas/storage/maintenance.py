"""Whole-results-directory care: verify every batch file on demand, move damaged ones aside so the
next run redoes only them, and account for (and remove) the files moved aside over time."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lossatlas import lifecycle
from lossatlas.storage import integrity, store

__all__ = [
    "BatchCheck",
    "aside_files",
    "clear_pending_restore",
    "describe_aside",
    "pending_restores",
    "prune",
    "verify",
]

BATCH = re.compile(r"batch-\d{4}\.h5")
# what open_batch moves aside (stale-<hash>, damaged, with a .k suffix when taken) and the
# temporaries of a write or recovery that a kill interrupted
ASIDE = re.compile(r"batch-\d{4}\.h5\.(stale-\w+|damaged|unreadable|recover|new)(\.\d+)?")


# in chains/: the batches `verify --repair` moved aside from under a finished store, which the
# workflow's `restore` job samples again (the Snakefile puts it in the default target)
PENDING = "restore-pending.json"


@dataclass(frozen=True)
class BatchCheck:
    path: Path
    status: str  # "ok", "damaged", "interrupted" (resumable), "in use", "moved aside"
    detail: str


def _chains_dirs(results: Path) -> Iterator[Path]:
    yield from sorted(p for p in results.glob("*/chains") if p.is_dir())


def _in_use(path: Path) -> bool:
    lock = Path(f"{path}.lock")
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        return not lifecycle.try_flock(fd, lock)
    finally:
        os.close(fd)


def verify(results: str | os.PathLike, *, repair: bool = False) -> list[BatchCheck]:
    """Check every batch file under ``results/*/chains``: superblock, every committed block and
    the checkpoint. ``repair`` moves each damaged file aside (``.damaged``) so the next run
    samples exactly those batches again: under a finished ``samples.h5`` it records them in
    ``chains/restore-pending.json`` for the workflow's ``restore`` job, which checks them
    against the store and leaves the analyses that read it alone."""
    checks = []
    for chains in _chains_dirs(Path(results)):
        found = []
        for path in sorted(p for p in chains.iterdir() if BATCH.fullmatch(p.name)):
            if _in_use(path):
                found.append(BatchCheck(path, "in use", "a sampling job is writing it"))
                continue
            try:
                if integrity.check_superblock(path) != 0:
                    what = "its writer was killed; the next run recovers what verifies"
                    found.append(BatchCheck(path, "interrupted", what))
                    continue
                size, _ = store.verify_batch(path, None)
            except store.Damaged as e:
                found.append(BatchCheck(path, "damaged", e.what))
            else:
                found.append(BatchCheck(path, "ok", f"{size / 2**20:.1f} MiB verified"))
        damaged = [c for c in found if c.status == "damaged"]
        if repair and damaged:
            with lifecycle.sampling_lock(chains, timeout=0.0):
                for c in damaged:
                    aside = store.move_aside(c.path, "damaged")
                    found[found.index(c)] = BatchCheck(c.path, "moved aside", f"to {aside.name}")
                if (chains.parent / "samples.h5").exists():
                    _add_pending_restore(chains, [c.path.name for c in damaged])
        checks += found
    return checks


def _add_pending_restore(chains: Path, batches: list[str]) -> None:
    marker = chains / PENDING
    before = json.loads(marker.read_text())["moved_aside"] if marker.exists() else []
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps({"moved_aside": sorted({*before, *batches})}) + "\n")
    os.replace(tmp, marker)
    # the record of an earlier restore would keep the workflow from running this one
    (chains / "restored.json").unlink(missing_ok=True)


def pending_restores(results: str | os.PathLike, experiments) -> list[str]:
    """Those of ``experiments`` whose store has batches ``verify --repair`` moved aside."""
    return [e for e in experiments if (Path(results) / e / "chains" / PENDING).exists()]


def clear_pending_restore(exp_dir: str | os.PathLike) -> list[str]:
    """Remove ``exp_dir``'s pending-restore record; returns the batches it named."""
    marker = Path(exp_dir) / "chains" / PENDING
    if not marker.exists():
        return []
    moved = json.loads(marker.read_text())["moved_aside"]
    marker.unlink()
    return moved


def _aside_in(chains: Path) -> list[Path]:
    return [p for p in sorted(chains.iterdir()) if ASIDE.fullmatch(p.name)]


def aside_files(results: str | os.PathLike) -> list[Path]:
    """Files moved aside or left half-written by earlier runs, under ``results/*/chains``."""
    return [p for chains in _chains_dirs(Path(results)) for p in _aside_in(chains)]


def describe_aside(results: str | os.PathLike) -> str | None:
    """One line on the space the moved-aside files hold, or None when there are none."""
    files = aside_files(results)
    if not files:
        return None
    size = sum(p.stat().st_size for p in files)
    return (
        f"{len(files)} batch files moved aside by earlier runs (stale, damaged or half-written) "
        f"hold {size / 2**20:.1f} MiB under {results}; `lossatlas prune {results}` removes them"
    )


def prune(results: str | os.PathLike, log: logging.Logger | None = None) -> tuple[int, int]:
    """Remove the moved-aside files of every experiment whose sampling lock is free; returns
    (files, bytes) removed."""
    log = log or logging.getLogger(__name__)
    n = size = 0
    for chains in _chains_dirs(Path(results)):
        with lifecycle.sampling_lock(chains, timeout=0.0, log=log):
            for p in _aside_in(chains):
                size += p.stat().st_size
                p.unlink()
                n += 1
    return n, size
