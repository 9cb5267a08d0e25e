"""The default run's findings as a Markdown table, from the run's ``findings.json``.

The numbers the docs show are written by this script, never by hand::

    python tools/findings_table.py results/findings.json            # print the table
    python tools/findings_table.py results/findings.json --write    # into docs/default-run.md

``--write`` replaces what lies between the ``findings-table`` markers of ``docs/default-run.md``
(``--doc`` for another file) and keeps a copy of the findings it was made from beside it
(``docs/default-run-findings.json``), so a test can check the table against them and them
against the default config.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "default-run.md"
SNAPSHOT = REPO / "docs" / "default-run-findings.json"
BEGIN, END = "<!-- findings-table:begin -->", "<!-- findings-table:end -->"
QUANTILES = (0.01, 0.05, 0.25)


def _num(x, fmt: str = ".3g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _row(e: dict, statistic: str, null: str) -> dict | None:
    return next(
        (r for r in e["dimension"] if r["statistic"] == statistic and r["null"] == null), None
    )


def _value(e: dict, statistic: str) -> str:
    r = _row(e, statistic, "uniform")
    return "n/a" if r is None else _num(r["value"])


def _against(e: dict, statistic: str, null: str) -> str:
    r = _row(e, statistic, null)
    if r is None:
        return "n/a"
    if r["p_null"] is None or (isinstance(r["p_null"], float) and math.isnan(r["p_null"])):
        return f"{_num(r['value'])} (not computed)"
    return f"{_num(r['value'])} (null {_num(r['null_value'])}, p = {_num(r['p_null'], '.2g')})"


def _nulls(e: dict, statistic: str) -> str:
    return " / ".join(
        _num((_row(e, statistic, n) or {}).get("null_value"))
        for n in ("uniform", "shuffled", "gaussian")
    )


def _quantiles(e: dict) -> str:
    by = {q["quantile"]: q["twonn"] for q in e.get("dimension_by_quantile") or []}
    return " / ".join(_num(by.get(q)) for q in QUANTILES)


def _converged(e: dict) -> str:
    if e["converged"]:
        return "yes"
    return "no: " + ", ".join(k for k, v in e["identifiable"].items() if not v["pass"])


def _census(e: dict) -> str:
    c = e["census"]["counts"]
    return ", ".join(f"{n} {kind}" for kind, n in sorted(c.items()))


def _analyses(exps: list[dict]) -> list[tuple[str, list[str]]]:
    """A row per further analysis (the findings' ``analyses``): its one-line finding."""
    names = dict.fromkeys(a["analysis"] for e in exps for a in e.get("analyses", []))
    return [
        (name, [next((a["finding"] for a in e.get("analyses", []) if a["analysis"] == name),
                     "n/a") for e in exps])
        for name in names
    ]  # fmt: skip


def _compare(found: dict, name: str, stage: str) -> str:
    for c in found["compare"]:
        if c["experiment"] == name:
            r = c.get(stage)
            if r is None:
                return f"not compared ({c['status']})"
            text = f"p = {_num(r['pvalue'], '.2g')}"
            if stage == "after" and c.get("dropped") is not None:
                text += f" ({100 * c['dropped']:.0f} % left out)"
            return text
    return "reference"


def table(found: dict) -> str:
    """The Markdown table of a run's ``findings.json`` contents, one column per experiment."""
    exps = found["experiments"]
    names = [e["experiment"] for e in exps]
    threshold = exps[0]["good_threshold"]
    rows = [
        ("converged (U, outputs, canonical parameters)", [_converged(e) for e in exps]),
        (
            f"good draws (mean loss < {threshold:g})",
            [f"{e['n_good']:,} of {e['n_draws']:,}" for e in exps],
        ),
        ("top-2 PCA share, full space", [_against(e, "pca_ev2", "uniform") for e in exps]),
        ("TwoNN, lag-window neighbours", [_against(e, "twonn", "uniform") for e in exps]),
        ("TwoNN, every neighbour (the artefact)", [_value(e, "twonn_naive") for e in exps]),
        ("TwoNN nulls: uniform / shuffled / Gaussian", [_nulls(e, "twonn") for e in exps]),
        (
            "TwoNN of the lowest " + " / ".join(f"{100 * q:g}" for q in QUANTILES) + " % of draws",
            [_quantiles(e) for e in exps],
        ),
        (
            "the report's pipeline (floor 2/3)",
            [_against(e, "pipeline_ev2", "uniform") for e in exps],
        ),
        ("census of critical points", [_census(e) for e in exps]),
        *_analyses(exps),
        (
            f"vs {names[0]} as sampled",
            [_compare(found, n, "before") for n in names],
        ),
        (
            f"vs {names[0]} mapped back, inside both boxes",
            [_compare(found, n, "after") for n in names],
        ),
    ]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between the markers replaced by ``block``."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def block_of(text: str) -> str:
    """What lies between the markers of ``text``."""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("findings", type=Path, help="a run's findings.json")
    ap.add_argument("--write", action="store_true", help="write the table into --doc")
    ap.add_argument("--doc", type=Path, default=DOC)
    args = ap.parse_args(argv)
    found = json.loads(args.findings.read_text())
    block = table(found)
    if not args.write:
        sys.stdout.write(block)
        return 0
    args.doc.write_text(replace_block(args.doc.read_text(), block))
    if args.doc == DOC:
        shutil.copyfile(args.findings, SNAPSHOT)
    print(f"wrote the table of {args.findings} into {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
