"""What a run found, per experiment, gathered from its result files: the report's first page.

:func:`gather` reads each experiment's convergence verdict, good-draw count, dimension
verdicts and census, and the comparison with the reference. :func:`summary` writes them as the
report's first screen (reStructuredText, a few lines per experiment) and :func:`details` in
full, with the method and the settings the results were made with. Only small JSON summaries
are read.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# the dimension statistic and nulls the summary table shows; every row is listed below it
HEADLINE_STATISTIC = "twonn"


FILE = "findings.json"


def recorded_settings(results: str | Path) -> dict | None:
    """The settings the run's findings were made with, or None before the run has findings."""
    path = Path(results) / FILE
    if not path.exists():
        return None
    return _load(path)["config"]


def _load(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _experiment(name: str, convergence, reduce, dimension, census) -> dict:
    conv = _load(convergence)
    reduced = _load(reduce)
    good = reduced["good"]
    dim = _load(dimension)
    quantiles = [
        {k: q.get(k) for k in ("quantile", "n_good", "twonn", "twonn_lo", "twonn_hi")}
        for q in dim.get("by_quantile") or []
        if q.get("status") == "ok"
    ]
    census = _load(census)
    return {
        "experiment": name,
        "n_draws": conv["n_chains"] * conv["n_draws"],
        "n_chains": conv["n_chains"],
        "converged": bool(conv["pass"]),
        "converged_raw": bool(conv["pass_raw_parameters"]),
        "reading": conv["reading"],
        "identifiable": {
            k: {"pass": v["pass"], "max_r_hat": v["max_r_hat"], "min_ess_bulk": v["min_ess_bulk"]}
            for k, v in conv["identifiable"].items()
        },
        "n_good": good["n_good"],
        "good_fraction": good["fraction"],
        "good_threshold": good["threshold"],
        "kpca_reading": (reduced.get("kpca", {}).get("gamma_scan") or {}).get("reading"),
        "dimension": [
            {k: r[k] for k in ("statistic", "null", "value", "null_value", "p_null", "verdict")}
            for r in dim["rows"]
        ],
        "dimension_by_quantile": quantiles,
        "census": {
            "n_starts": census["n_starts"],
            "key": census["key"],
            "counts": census["counts"],
            "n_good": sum(bool(r["good"]) for r in census["rows"]),
        },
    }


def _checks(path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = ("experiment", "check", "quantity", "predicted", "measured", "note")
    return [{**{k: r.get(k, "") for k in keep}, "passed": r["passed"] == "True"} for r in rows]


def gather(
    names: Sequence[str],
    files: Mapping[str, Sequence],
    compare=None,
    checks=None,
    analyses: Sequence = (),
) -> dict:
    """Every experiment's findings and the comparisons. ``files`` maps ``convergence``,
    ``reduce`` (summary), ``dimension`` and ``census`` (their JSON files) to one path per name
    in ``names``; ``compare`` is compare.json, ``checks`` the theory checks' table, if any;
    ``analyses`` the JSON files of other analyses of one experiment, each with its
    ``experiment``, ``analysis`` and one-line ``finding``."""
    parts = ("convergence", "reduce", "dimension", "census")
    experiments = [_experiment(name, *(files[p][i] for p in parts)) for i, name in enumerate(names)]
    by_name = {e["experiment"]: e for e in experiments}
    for doc in map(_load, analyses):
        line = {"analysis": doc["analysis"], "finding": doc["finding"]}
        by_name[doc["experiment"]].setdefault("analyses", []).append(line)
    out = {
        "experiments": experiments,
        "compare": [],
        "checks": _checks(checks) if checks else [],
    }
    for c in _load(compare) if compare else []:
        row = {k: c.get(k) for k in ("experiment", "reference", "method", "status")}
        for stage in ("before", "after"):
            if isinstance(c.get(stage), Mapping) and c[stage].get("status", "ok") == "ok":
                row[stage] = {k: c[stage].get(k) for k in ("statistic", "pvalue", "verdict")}
        row["dropped"] = (c.get("common_box") or {}).get("other_dropped_fraction")
        out["compare"].append(row)
    return out


def _convergence_cell(e: dict) -> str:
    if e["converged"]:
        return "yes"
    failed = [k for k, v in e["identifiable"].items() if not v["pass"]]
    return "no: " + ", ".join(failed)


def _short_verdict(r: dict) -> str:
    v = r["verdict"]
    if v.startswith("cannot be decided"):
        return "undecided (n_null too small)"
    if v.startswith("not computed"):
        return "not computed"
    word = "not distinguishable" if v.startswith("explained") else v.split(" the ")[0]
    return f"{word} (p = {r['p_null']:.2g})"


def _dimension_cell(e: dict) -> str:
    rows = [r for r in e["dimension"] if r["statistic"] == HEADLINE_STATISTIC]
    if not rows:
        return "not computed"
    return "; ".join(
        [f"{rows[0]['value']:.3g}"] + [f"{r['null']}: {_short_verdict(r)}" for r in rows]
    )


PLURALS = {
    "box KKT point": "box KKT points",
    "strict minimum": "strict minima",
    "degenerate minimum": "degenerate minima",
    "saddle": "saddles",
}


def _census_cell(e: dict) -> str:
    c = e["census"]
    kinds = ", ".join(
        f"{n} {kind if n == 1 else PLURALS.get(kind, kind)}"
        for kind, n in sorted(c["counts"].items())
    )
    return f"{kinds} (from {c['n_starts']} starts); {c['n_good']} of them good"


def _compare_cell(name: str, compare: list[dict], alpha: float) -> str:
    for c in compare:
        if c["experiment"] != name:
            continue
        if c["status"] != "ok" or "before" not in c:
            return f"not compared ({c['status']})"
        parts = []
        for stage, label in (("before", "as sampled"), ("after", "mapped back")):
            if stage not in c:
                parts.append(f"{label}: skipped")
                continue
            r = c[stage]
            p = r["pvalue"]
            verdict = r.get("verdict") or ("differ" if p <= alpha else "not distinguishable")
            word = verdict.split(" (")[0].split(":")[0]
            if word.startswith("cannot be decided"):
                word = "undecided (too few chains)"
            else:
                word = f"{word} (p = {p:.2g})"
            if stage == "after" and c.get("dropped") is not None:
                label += f" inside both boxes ({100 * c['dropped']:.0f} % left out)"
            parts.append(f"{label}: {word}")
        return "; ".join(parts)
    return "the reference"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return lines


def _escape(text: str) -> str:
    # the page goes through Jinja (snakemake --report) and then docutils
    return text.replace("{", "(").replace("}", ")").replace("*", r"\*").replace("`", "'")


def _headline(e: dict, compare: list[dict], alpha: float) -> list[str]:
    if e["converged"]:
        conv = "converged (U, outputs, canonical parameters)"
    else:
        conv = _convergence_cell(e).replace("no: ", "not converged: ")
    raw = "raw parameters mix" if e["converged_raw"] else "raw parameters do not mix"
    items = [
        f"{e['n_good']:,} of {e['n_draws']:,} draws good",
        f"dimension ({HEADLINE_STATISTIC}) {_dimension_cell(e)}",
        f"critical points: {_census_cell(e)}",
    ]
    items += [f"{a['analysis']}: {a['finding']}" for a in e.get("analyses", [])]
    if any(c["experiment"] == e["experiment"] for c in compare):
        items.append(f"vs the reference: {_compare_cell(e['experiment'], compare, alpha)}")
    lines = [f"- **{e['experiment']}**: {_escape(conv)}; {raw}", ""]
    lines += [f"  - {_escape(item)}" for item in items]
    return [*lines, ""]


def _checks_lines(checks: Sequence[Mapping], *, every: bool) -> list[str]:
    """The theory checks' verdict, then each failed row (``every``: each row)."""
    failed = [c for c in checks if not c["passed"]]
    head = (
        f"**theory checks: {len(failed)} of {len(checks)} FAILED**"
        if failed
        else f"theory checks: all {len(checks)} passed"
    )
    lines = [f"- {head} (checks.csv)", ""]
    for c in checks if every else failed:
        mark = "passed" if c["passed"] else "FAILED"
        text = (
            f"{c['experiment']} {c['check']}: {c['quantity']}: predicted {c['predicted']}, "
            f"measured {c['measured']} ({mark}{'; ' + c['note'] if c['note'] else ''})"
        )
        lines.append(f"  - {_escape(text)}")
    return [*lines, ""] if len(lines) > 2 else lines


def summary(found: Mapping, *, alpha: float = 0.05) -> str:
    """The report's first screen: one line per experiment, short enough to show whole beside
    the rule graph; a failed theory check first."""
    exps = found["experiments"]
    lines = ["Findings", "========", ""]
    if found.get("checks"):
        lines += _checks_lines(found["checks"], every=False)
    for e in exps:
        lines += _headline(e, found["compare"], alpha)
    lines += [
        f"Good: mean per-point loss below {exps[0]['good_threshold']:g}. Convergence is judged "
        "on what the data identify (U, outputs, canonical parameters). Every verdict in full, "
        "with the method and its settings: **Findings** below; each experiment's files under "
        "its name.",
        "",
    ]
    return "\n".join(lines)


def details(found: Mapping, method: str, *, alpha: float = 0.05) -> str:
    """Every finding in full: a table, one section per experiment, the comparisons, the
    method with the run's settings."""
    exps = found["experiments"]
    compared = bool(found["compare"])
    header = [
        "experiment",
        "converged (U, outputs, canonical)",
        "raw parameters mix",
        "good draws",
        f"dimension ({HEADLINE_STATISTIC}) vs nulls",
        "census of critical points",
    ] + (["vs the reference"] if compared else [])
    rows = []
    for e in exps:
        row = [
            e["experiment"],
            _convergence_cell(e),
            "yes" if e["converged_raw"] else "no",
            f"{e['n_good']:,} of {e['n_draws']:,} ({100 * e['good_fraction']:.1f} %)",
            _dimension_cell(e),
            _census_cell(e),
        ]
        if compared:
            row.append(_compare_cell(e["experiment"], found["compare"], alpha))
        rows.append([_escape(c) for c in row])
    lines = ["Findings", "========", ""]
    lines += _table(header, rows)
    lines += [
        "",
        "A good draw has mean per-point loss below "
        f"{exps[0]['good_threshold']:g}. Raw parameters of chains in different symmetric "
        "copies of one network (hidden units permuted or sign-flipped) never mix, whatever the "
        "run length; convergence is judged on what the data identify. Comparisons are "
        f"permutation tests of whole chains at the {alpha:g} level; for a rotation, agreement "
        "after mapping back holds by construction inside both boxes, so it checks the sampler.",
        "",
    ]
    for e in exps:
        title = f"Experiment {e['experiment']}"
        lines += [title, "-" * len(title), ""]
        lines.append(f"- Convergence: {_escape(e['reading'])}.")
        lines.append(
            f"- Good draws: {e['n_good']:,} of {e['n_draws']:,} over {e['n_chains']} chains."
        )
        if e.get("kpca_reading"):
            lines.append(f"- Kernel PCA: {_escape(e['kpca_reading'])}.")
        lines.append("- Dimension of the good draws:")
        lines.append("")
        for r in e["dimension"]:
            lines.append(f"  - {r['statistic']} vs {r['null']}: {_escape(r['verdict'])}")
        if e.get("dimension_by_quantile"):
            lines += ["", "- TwoNN of the lowest q of all draws:", ""]
            for q in e["dimension_by_quantile"]:
                lines.append(
                    f"  - q = {100 * q['quantile']:g} % ({q['n_good']:,} draws): "
                    f"{q['twonn']:.3g} [{q['twonn_lo']:.3g}, {q['twonn_hi']:.3g}]"
                )
        lines += ["", f"- Census ({e['census']['key']} merged): {_escape(_census_cell(e))}.", ""]
        for a in e.get("analyses", []):
            lines += [f"- {a['analysis']}: {_escape(a['finding'])}.", ""]
    if compared:
        lines += ["Comparison with the reference", "-----------------------------", ""]
        for c in found["compare"]:
            cell = _compare_cell(c["experiment"], found["compare"], alpha)
            lines.append(f"- {c['experiment']} vs {c['reference']}: {_escape(cell)}.")
        lines.append("")
    if found.get("checks"):
        lines += ["Theory checks", "-------------", ""]
        lines += _checks_lines(found["checks"], every=True)
    lines += ["Method", "------", "", method.strip(), ""]
    return "\n".join(lines)


def html(rst: str) -> str:
    """A stand-alone HTML page of ``rst`` (the report shows it as a result)."""
    from docutils.core import publish_string

    return publish_string(rst, writer="html5", settings_overrides={"report_level": 4}).decode()
