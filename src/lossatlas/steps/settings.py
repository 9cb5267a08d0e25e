"""The settings one step may read (:class:`Settings`), and the plain values rules pass."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossatlas import config as lacfg

# what every analysis of the stored draws reads: the network, its coordinates, the read blocks
DRAWS = ("seed", "coordinates", "model", "reduce.draw_block", "reduce.max_block_mb")
NETWORK = ("model", "target.box", "target.beta", "target.energy")


class UndeclaredSetting(KeyError):
    """A step read a setting outside its declared ones (:data:`READS`)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _canonical(obj):
    if isinstance(obj, Mapping):
        items = dict(dict.items(obj)) if isinstance(obj, dict) else dict(obj)
        return {k: _canonical(items[k]) for k in sorted(items)}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    return obj


class Settings(dict):
    """The settings one step may read, in the config's order.

    Reading an undeclared key raises :class:`UndeclaredSetting` naming the step and the path.
    ``repr`` sorts the keys: Snakemake compares params by their repr, so reordering a config
    file must not rerun anything. ``reads`` collects the dotted paths of the values read (the
    tests check each step against its declaration with it).
    """

    def __init__(self, values: Mapping, step: str, prefix: str = "", reads: set | None = None):
        self.step, self.prefix = step, prefix
        self.reads = set() if reads is None else reads
        super().__init__(
            (k, Settings(v, step, f"{prefix}{k}.", self.reads) if isinstance(v, Mapping) else v)
            for k, v in values.items()
        )

    def __missing__(self, key):
        raise UndeclaredSetting(
            f"step {self.step!r} read the setting {self.prefix}{key}, which it does not "
            f"declare: add it to READS[{self.step!r}] in its module of lossatlas.steps (the "
            "rule's params)"
        )

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if not isinstance(value, Settings):
            self.reads.add(f"{self.prefix}{key}")
        return value

    def __iter__(self):
        # a Python-level __iter__ makes dict(s) and f(**s) go through __getitem__ (recorded)
        return super().__iter__()

    def items(self):
        return [(k, self[k]) for k in self]

    def values(self):
        return [self[k] for k in self]

    def get(self, key, default=None):
        # a declared key absent from the config is a hole in the declaration, not a default
        return self[key]

    def __repr__(self) -> str:
        return repr(_canonical(self))

    def __reduce__(self):
        # Snakemake hands params to scripts pickled: rebuild with the step's name
        return (Settings, (dict(dict.items(self)), self.step, self.prefix))


def pick(cfg: Mapping, paths: tuple[str, ...]) -> dict:
    """The parts of ``cfg`` at the dotted ``paths``, nested, in the config's order."""
    out: dict = {}
    for key, value in cfg.items():
        below = tuple(p[len(key) + 1 :] for p in paths if p.startswith(f"{key}."))
        if key in paths:
            out[key] = value
        elif below:
            out[key] = pick(value, below)
    return out


def experiment_param(e: lacfg.Experiment) -> dict[str, Any]:
    """A rule's ``experiment`` param: name, sweep index (it seeds the chains), transforms (and
    hidden widths, when the sweep varies them)."""
    param = {"name": e.name, "index": e.index, "transforms": [list(t) for t in e.transforms]}
    if e.hidden is not None:
        param["hidden"] = list(e.hidden)
    return param


def experiment(values: Mapping) -> lacfg.Experiment:
    """An experiment from a rule's ``experiment`` param (name, index, transforms, hidden)."""
    transforms = tuple(tuple(t) for t in values["transforms"])
    hidden = tuple(values["hidden"]) if values.get("hidden") is not None else None
    return lacfg.Experiment(
        name=values["name"], index=int(values["index"]), transforms=transforms, hidden=hidden
    )


def plain(obj):
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def write_json(path, doc) -> None:
    Path(path).write_text(json.dumps(doc, indent=2, default=float) + "\n")
