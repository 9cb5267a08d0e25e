"""Rule census: critical points from many starts, classified; their figures."""

import json
from pathlib import Path

import numpy as np
from _common import setup_logging

from lossatlas import landscape, plots, reduce
from lossatlas.data import Dataset
from lossatlas.store import SampleStore

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "census")
cfg = sm.config
exp = sm.wildcards.exp
dpi = cfg["figures"]["dpi"]
dataset = Dataset.load(sm.input.dataset)

with SampleStore(sm.input.samples) as store:
    c, table, meta = landscape.run_census(store, dataset, cfg)
    plane = landscape.good_plane(store, dataset, cfg, reduce.load(sm.input.reduction), c.points)
table.insert(0, "experiment", exp)
table.to_csv(sm.output.table, index=False)
meta["plane"] = (
    "no plane: fewer than 2 good draws"
    if plane is None
    else {"explained_variance_ratio": plane["ratio"], "matches_reduce": plane["matches_reduce"]}
)
doc = {**meta, "experiment": exp, "rows": table.to_dict(orient="records")}
Path(sm.output.json).write_text(json.dumps(doc, indent=2, default=float) + "\n")
np.savez(
    sm.output.points,
    points=c.points,
    ends=c.ends,
    end_U=c.end_U,
    assignment=c.assignment,
)
plots.plot_census_loss_index(table, sm.output.loss_index, title=exp, dpi=dpi)
plots.plot_census_plane(plane, table, sm.output.plane, title=exp, dpi=dpi)
log.info("%s: %d starts, counts %s", exp, meta["n_starts"], meta["counts"])
log.info("%s: plane %s", exp, meta["plane"])
