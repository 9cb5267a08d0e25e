"""Rule reduce: kernel PCA of all draws, linear PCA of the good ones."""

import json
from pathlib import Path

from _common import setup_logging

from lossatlas import reduce
from lossatlas.store import SampleStore

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "reduce")
cfg = sm.config

with SampleStore(sm.input.samples) as store:
    # theta is streamed by draw blocks; energy and mean loss are (chain, draw), small.
    result = reduce.reduce(store, store.stat("energy"), store.stat("mean_loss"), cfg)
result.save(sm.output.reduction)
Path(sm.output.summary).write_text(json.dumps(result.summary, indent=2) + "\n")
s = result.summary
log.info("%s: kernel PCA %s", sm.wildcards.exp, json.dumps(s["kpca"]))
log.info("%s: good draws %s", sm.wildcards.exp, json.dumps(s["good"]))
