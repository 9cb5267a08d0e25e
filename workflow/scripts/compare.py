"""Rule compare: each experiment's good draws against the reference's, before and after
mapping them back through the dataset transform."""

import json
from pathlib import Path

import pandas as pd
from _common import experiment, setup_logging

from lossatlas import landscape, plots
from lossatlas.data import Dataset
from lossatlas.store import SampleStore

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "compare")
cfg = sm.config
names = list(sm.params.experiments)
ref_name = sm.params.reference
stores = dict(zip(names, sm.input.samples, strict=True))
datasets = dict(zip(names, sm.input.datasets, strict=True))
cc = cfg["landscape"]["compare"]


def good(name):
    with SampleStore(stores[name]) as store:
        n_good = int((store.stat("mean_loss") < cfg["target"]["good_threshold"]).sum())
        return landscape.good_rows(store, cfg, cc["max_points"], cfg["seed"]), n_good


ref, n_ref = good(ref_name)
ref_exp = experiment(cfg, ref_name)
rows, full, figure = [], [], {}
for name in names:
    if name == ref_name:
        continue
    other, n_other = good(name)
    exp = experiment(cfg, name)
    ds = Dataset.load(datasets[name])
    r, f = landscape.compare_rows(ref, other, cfg, ds, ref_exp, exp, (n_ref, n_other))
    rows += r
    full.append(f)
    figure[name] = {"rows": r, "projection": landscape.compare_projection(ref, other, cfg, ds, exp)}
    for row in r:
        log.info("%s vs %s %s: %s", name, ref_name, row["stage"], row)

pd.DataFrame(rows).to_csv(sm.output.table, index=False)
Path(sm.output.json).write_text(json.dumps(full, indent=2, default=float) + "\n")
plots.plot_compare(figure, sm.output.figure, dpi=cfg["figures"]["dpi"])
