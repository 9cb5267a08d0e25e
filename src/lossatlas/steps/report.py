"""Steps of the rules across experiments: theory checks, the comparison, the findings."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossatlas import config as lacfg
from lossatlas.steps.arguments import blocks, coordinates, sizes, target, with_hidden
from lossatlas.steps.settings import DRAWS, NETWORK, plain, write_json

READS: dict[str, tuple[str, ...]] = {
    "theory": ("expected", "experiments", *NETWORK, "landscape.connect"),
    "compare": (
        *DRAWS,
        "target.box",
        "target.good_threshold",
        "landscape.compare",
        "experiments",
        "figures.dpi",
    ),
    # the report's first page states the settings every result was made with
    "findings": (
        "seed",
        "dataset",
        "experiments",
        "model",
        "target",
        "sampler",
        "coordinates",
        "diagnose",
        "reduce",
        "landscape",
        "figures",
    ),
}


def good_rows_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.draws.good_rows`."""
    cc = s["landscape"]["compare"]
    return {
        "good_threshold": s["target"]["good_threshold"],
        "max_points": cc["max_points"],
        "max_mb": cc["max_mb"],
        "seed": s["seed"],
        **blocks(s),
    }


def compare_arguments(s: Mapping) -> dict[str, Any]:
    """Keyword arguments of :func:`lossatlas.analysis.compare.compare_rows`."""
    return {
        "coordinates": s["coordinates"],
        "box": s["target"]["box"],
        "seed": s["seed"],
        **s["landscape"]["compare"],
    }


def theory(inputs, outputs, s: Mapping, names, log: logging.Logger) -> None:
    """The config's ``expected`` checks on every experiment, against the theorems' answers."""
    import pandas as pd

    from lossatlas.analysis import theory as known
    from lossatlas.data import Dataset

    tables = []
    for name, dataset, census, connections in zip(
        names, inputs.datasets, inputs.census, inputs.connect, strict=True
    ):
        table = known.run_checks(
            s["expected"],
            target(with_hidden(s, lacfg.hidden_of(s, name)), Dataset.load(dataset)),
            census=pd.read_csv(census),
            connections=pd.read_csv(connections),
            settings=plain(s["landscape"]["connect"]),
        )
        table.insert(0, "experiment", name)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(outputs.table, index=False)
    log.info("%d of %d checks passed", int(table["passed"].sum()), len(table))
    failed = table[~table["passed"]]
    for row in failed.itertuples():
        log.warning("failed: %s %s: predicted %s, measured %s", row.check, row.quantity,
                    row.predicted, row.measured)  # fmt: skip
    # A failed check is a result about this network and data, kept in the table and the
    # findings, not a crash that would delete it; but it must not pass for a green run: the
    # terminal (the job's stderr, which Snakemake shows) says so.
    if len(failed):
        lines = [
            f"lossatlas: {len(failed)} of {len(table)} theory checks FAILED ({outputs.table}; "
            "the findings list them):"
        ]
        lines += [
            f"  {r.experiment} {r.check}: {r.quantity}: predicted {r.predicted}, measured "
            f"{r.measured}"
            for r in failed.itertuples()
        ]
        print("\n".join(lines), file=sys.stderr, flush=True)


def _no_parameter_map(s: Mapping, ds, exp) -> str | None:
    """Why an experiment's draws cannot be put in the reference's coordinates: an input
    transform that a network other than the MLP does not absorb into its first layer (None:
    they can)."""
    from lossatlas import data
    from lossatlas.analysis.compare import is_identity
    from lossatlas.model import spec

    kind = spec.kind(s["model"])
    if kind == "mlp" or is_identity(*data.experiment_affine(exp.transforms, ds.n_features)[:2]):
        return None
    return (
        f"skipped: no map takes model.{'layers' if kind == 'conv' else 'python'}'s parameters "
        "across the input transforms; only label transforms compare"
    )


def compare(inputs, outputs, s: Mapping, names, log: logging.Logger) -> None:
    """Each experiment's good draws against the reference's, before and after mapping them
    back through the dataset transform."""
    import pandas as pd

    from lossatlas.analysis.compare import compare_projection, compare_rows, plot_compare
    from lossatlas.analysis.draws import good_rows
    from lossatlas.data import Dataset
    from lossatlas.storage.store import SampleStore

    names = list(names)
    ref_name = lacfg.reference(s)
    exps = lacfg.experiments(s)
    stores = dict(zip(names, inputs.samples, strict=True))
    datasets = dict(zip(names, inputs.datasets, strict=True))
    threshold = s["target"]["good_threshold"]

    def good(name):
        with SampleStore(stores[name]) as store:
            n_good = int((store.stat("mean_loss") < threshold).sum())
            return good_rows(store, **good_rows_arguments(s)), n_good

    ref, n_ref = good(ref_name)
    rows, full, figure = [], [], {}
    for name in names:
        if name == ref_name:
            continue
        if lacfg.hidden_of(s, name) != lacfg.hidden_of(s, ref_name):
            # draws of networks with other parameter counts live in other spaces
            status = (
                f"skipped: architecture {lacfg.hidden_of(s, name)} differs from the "
                f"reference's {lacfg.hidden_of(s, ref_name)}"
            )
            full.append({"experiment": name, "reference": ref_name, "status": status})
            log.info("%s vs %s: %s", name, ref_name, status)
            continue
        ds = Dataset.load(datasets[name])
        if status := _no_parameter_map(s, ds, exps[name]):
            full.append({"experiment": name, "reference": ref_name, "status": status})
            log.info("%s vs %s: %s", name, ref_name, status)
            continue
        other, n_other = good(name)
        sz, key = sizes(s, ds), coordinates(s, ds)
        r, f = compare_rows(
            ref,
            other,
            sz,
            key,
            exps[ref_name],
            exps[name],
            (n_ref, n_other),
            **compare_arguments(s),
        )
        rows += r
        full.append(f)
        projection = compare_projection(ref, other, sz, key, exps[name])
        figure[name] = {"rows": r, "projection": projection}
        for row in r:
            log.info("%s vs %s %s: %s", name, ref_name, row["stage"], row)

    pd.DataFrame(rows).to_csv(outputs.table, index=False)
    write_json(outputs.json, full)
    plot_compare(figure, outputs.figure, reference=ref_name, dpi=s["figures"]["dpi"])


def findings(inputs, outputs, s: Mapping, names, log: logging.Logger) -> None:
    """The report's first page (what every experiment found), the findings in full with the
    method (``inputs.method``, the template ``snakemake --report`` renders before the run has
    findings) and the settings the results were made with (``findings.json`` keeps them for
    the report)."""
    from types import SimpleNamespace

    import jinja2

    from lossatlas import findings as found_mod

    def listed(files) -> list:
        # one file of a named input may come as a string or as a list of one
        return [files] if isinstance(files, str | Path) else list(files)

    parts = ("convergence", "reduce", "dimension", "census")
    paths = {p: listed(getattr(inputs, p)) for p in parts}
    compare, checks = listed(inputs.compare), listed(inputs.checks)
    found = found_mod.gather(
        names,
        paths,
        compare[0] if compare else None,
        checks[0] if checks else None,
        analyses=listed(inputs.analyses),
    )
    alpha = s["landscape"]["compare"]["alpha"]
    template = Path(inputs.method).read_text()
    method = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template)
    text = method.render(snakemake=SimpleNamespace(config=s))
    Path(outputs.page).write_text(found_mod.summary(found, alpha=alpha))
    Path(outputs.html).write_text(found_mod.html(found_mod.details(found, text, alpha=alpha)))
    write_json(outputs.json, {**found, "config": plain(s)})
    for e in found["experiments"]:
        log.info("%s: converged %s, %d good draws", e["experiment"], e["converged"], e["n_good"])
