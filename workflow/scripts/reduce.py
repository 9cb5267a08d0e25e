"""Rule reduce: kernel PCA of all draws, linear PCA of the good ones (in the configured
coordinates), and the 3-D kernel-PCA figure."""

import json
from pathlib import Path

from _common import setup_logging

from lossatlas import plots, reduce, views
from lossatlas.data import Dataset
from lossatlas.store import SampleStore

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "reduce")
cfg = sm.config

with SampleStore(sm.input.samples) as store:
    # theta is streamed by draw blocks; energy and mean loss are (chain, draw), small.
    transform = views.coordinate_transform(cfg, Dataset.load(sm.input.dataset))
    # canonical coordinates are computed one block of draws at a time as reduce reads them
    theta = store.theta if transform is None else views.DrawView(store.theta, transform, cfg=cfg)
    result = reduce.reduce(theta, store.stat("energy"), store.stat("mean_loss"), cfg)
    result.summary["coordinates"] = cfg["coordinates"]
result.save(sm.output.reduction)
Path(sm.output.summary).write_text(json.dumps(result.summary, indent=2) + "\n")
plots.plot_kpca_3d(
    result.embedding, result.energy, sm.output.kpca_3d, seed=cfg["seed"], dpi=cfg["figures"]["dpi"]
)
s = result.summary
log.info("%s: kernel PCA %s", sm.wildcards.exp, json.dumps(s["kpca"]))
log.info("%s: good draws %s", sm.wildcards.exp, json.dumps(s["good"]))
