"""Byte-compare two results directories: the batch files and every table a run writes.

A refactor must change no number. Run the same config before and after a change into two
results directories, then::

    python tools/compare_runs.py results-before results-after

Compared, byte for byte: every ``chains/batch-*.h5`` and every ``.csv``, ``.json`` and
``.npz`` file (the files that hold the numbers); each is printed as ``identical``,
``DIFFERENT`` or ``MISSING`` (on one side only). Left out, and not printed: figures, logs and
``samples.h5`` (a virtual view that records the paths of its batch files and when it was
built). Exits 1 if any compared file differs or is missing on one side.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

COMPARED = (".csv", ".json", ".npz")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _numbers_files(root: Path) -> set[Path]:
    files = set()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root)
        is_batch = rel.parent.name == "chains" and path.name.startswith("batch-")
        if (is_batch and path.suffix == ".h5") or path.suffix in COMPARED:
            files.add(rel)
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    a, b = _numbers_files(args.before), _numbers_files(args.after)
    bad = 0
    for rel in sorted(a | b):
        if rel not in a or rel not in b:
            print(f"MISSING   {rel} (only in {args.before if rel in a else args.after})")
            bad += 1
        elif _digest(args.before / rel) != _digest(args.after / rel):
            print(f"DIFFERENT {rel}")
            bad += 1
        else:
            print(f"identical {rel}")
    print(f"{len(a | b) - bad} of {len(a | b)} files identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
