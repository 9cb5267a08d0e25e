"""Rule reduce: kernel PCA of all draws, linear PCA of the good ones."""

from _common import setup_logging
from lossatlas.store import SampleStore

from lossatlas import reduce

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "reduce")
cfg = sm.config

with SampleStore(sm.input.samples) as store:
    result = reduce.from_config(store, cfg, log=log)
reduce.write(result, sm.output.reduction, sm.output.summary)
log.info("%s: %s", sm.wildcards.exp, result.summary)
