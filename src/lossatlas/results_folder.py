"""Which config files a results folder belongs to, so a run of another config never overwrites it.

The first run that executes jobs in a folder records its config files there (:data:`RECORD`).
A later run of other config files into the same folder is refused before any job, naming a
folder of its own; a run of the same files with other values (``--config``, an edited file) is
the documented way to rerun what changed, and goes ahead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

RECORD = "configfiles.json"


class ForeignResults(ValueError):
    """The results folder holds the run of other config files."""


def _name(path: str | os.PathLike) -> str:
    full = os.path.realpath(path)
    rel = os.path.relpath(full)
    return full if rel.startswith("..") else rel


def claim(results: str | os.PathLike, configfiles: Iterable[str], *, write: bool) -> None:
    """Refuse ``results`` when another set of config files made it; record ours when ``write``
    and the folder has no record yet."""
    folder = Path(results)
    record = folder / RECORD
    mine = [_name(p) for p in configfiles]
    if record.exists():
        try:
            theirs = json.loads(record.read_text())["configfiles"]
        except (ValueError, KeyError, TypeError) as err:
            raise ForeignResults(
                f"{record} is unreadable ({err}); it names the config files that made "
                f"{folder}/: delete it to let this run adopt the folder"
            ) from None
        if theirs != mine:
            new = [p for p in mine if p not in theirs] or mine or ["mine"]
            stem = Path(new[0]).stem
            raise ForeignResults(
                f"invalid config: results: {folder}/ holds the results of "
                f"{', '.join(theirs)}; this run of {', '.join(mine)} would overwrite them. "
                f"Give it a folder of its own: `results: {folder}-{stem}` in its config file "
                f"or `--config results={folder}-{stem}` (or delete {folder}/ to start over)"
            )
        return
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"configfiles": mine}, indent=1) + "\n")
        tmp.replace(record)
