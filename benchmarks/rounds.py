"""Interleaved rounds, the way every benchmark here measures: each round runs every compared
case once, in alternating order (A B, B A, ...), so that a change of the machine's load hits
both sides alike; ratios are taken within a round and their median reported, for wall time and
for CPU time (this process's threads and its waited-for children), with the load average.
``write_section`` puts a script's table into benchmarks/README.md between its markers,
``write_preformatted`` a table printed as plain text."""

from __future__ import annotations

import os
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

README = Path(__file__).resolve().parent / "README.md"


@dataclass
class Timing:
    wall: float  # seconds
    cpu: float  # CPU-seconds of this process and of the children it waited for
    load: float  # 1-minute load average when the case started
    result: Any = None


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], Any]) -> Timing:
    """Wall and CPU time of ``fn()``, with the load average at its start."""
    load = os.getloadavg()[0]
    cpu0, children0, t0 = time.process_time(), _children_cpu(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0 + _children_cpu() - children0
    return Timing(wall, cpu, load, out)


def interleave(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Timing]]:
    """Every case once per round, the order reversed every other round."""
    names = list(cases)
    out: dict[str, list[Timing]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(timed(cases[name]))
    return out


def ratios(a: list[Timing], b: list[Timing]) -> dict[str, float]:
    """Median over rounds of ``a / b`` in wall and CPU time, and the median load."""
    return {
        "wall": float(np.median([x.wall / y.wall for x, y in zip(a, b, strict=True)])),
        "cpu": float(np.median([x.cpu / y.cpu for x, y in zip(a, b, strict=True)])),
        "load": float(np.median([t.load for t in (*a, *b)])),
    }


def median(ts: list[Timing], field: str = "wall") -> float:
    return float(np.median([getattr(t, field) for t in ts]))


def machine() -> str:
    """One line: date, cores, load average now."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average now {load}"


def write_section(name: str, text: str, path: Path = README) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``
    (appended at the end, with its markers, if they are not there yet)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    doc = path.read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: block, doc)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)
    print(f"wrote the table into {path} ({name})")


def write_preformatted(name: str, intro: str, lines: list[str], path: Path = README) -> None:
    """:func:`write_section` of ``intro`` and then ``lines`` as a fenced plain-text block."""
    write_section(name, "\n".join([intro, "", "```", *lines, "```"]), path)
