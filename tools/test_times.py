"""Time the two test tiers and write what was measured into the README.

The README's test times are written by this script, never by hand::

    .venv/bin/python tools/test_times.py            # time both tiers, print the lines
    .venv/bin/python tools/test_times.py --write    # and put them into README.md

The fast tier is ``pytest -m "not slow"``; the full suite is ``pytest`` (what ``.ci/run``
runs after installing). Each runs once, in this checkout's environment, one after the other;
the lines give the wall time, the tests that ran, the cores and the load average at the start,
so a reader can tell a loaded machine's number from a quiet one's. ``--write`` replaces what
lies between the ``test-times`` markers of the README. The one test that checks those lines
is left out of the runs that make them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BEGIN, END = "<!-- test-times:begin -->", "<!-- test-times:end -->"
TIERS = {"fast tier": ["-m", "not slow"], "full suite": []}
# the test of the lines this script writes cannot pass before it has written them
SELF_CHECK = "tests/test_tools.py::test_readme_test_times_are_the_tools_lines"


def run_tier(args: list[str]) -> dict:
    """One pytest run: wall seconds, the outcome counts pytest printed, the load at the start."""
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfE",  # a failed tier names its failures and errors
            "--deselect",
            SELF_CHECK,
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - t0
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", last))
    failures = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    return {
        "seconds": seconds,
        "load": load,
        "counts": counts,
        "rc": proc.returncode,
        "tail": last,
        "failures": failures,
    }


def lines(results: dict[str, dict]) -> str:
    """The README's block: one line per tier."""
    day = datetime.date.today().isoformat()
    out = []
    for tier, r in results.items():
        c = r["counts"]
        minutes, seconds = divmod(round(r["seconds"]), 60)
        out.append(
            f"- {tier}: {minutes} min {seconds:02d} s, {c.get('passed', 0):,} passed"
            + (f", {c['skipped']} skipped" if c.get("skipped") else "")
            + (f", {c['failed']} FAILED" if c.get("failed") else "")
            + (f", {c['error']} ERRORS" if c.get("error") else "")
            + f" ({os.cpu_count()} cores, load {r['load']:.1f} at the start, {day})"
        )
    return "\n".join(out) + "\n"


def replace_block(text: str, block: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="put the lines into README.md")
    parser.add_argument("--fast-only", action="store_true", help="time the fast tier alone")
    args = parser.parse_args(argv)
    if args.write and args.fast_only:
        parser.error("--write needs both tiers timed: leave out --fast-only")
    tiers = {"fast tier": TIERS["fast tier"]} if args.fast_only else TIERS
    results = {}
    for tier, pytest_args in tiers.items():
        results[tier] = run_tier(pytest_args)
        print(f"{tier}: {results[tier]['tail']}", file=sys.stderr)
    block = lines(results)
    print(block, end="")
    if any(r["rc"] != 0 for r in results.values()):
        for r in results.values():
            print("\n".join(r["failures"]), file=sys.stderr)
        print("a tier failed: README.md left as it is", file=sys.stderr)
        return 1
    if args.write:
        README.write_text(replace_block(README.read_text(), block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
