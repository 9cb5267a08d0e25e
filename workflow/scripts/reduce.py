"""Rule reduce: kernel PCA of all draws, linear PCA of the good ones, the 3-D figure."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "reduce")
steps.reduce(sm.input, sm.output, sm.params.settings, sm.wildcards.exp, log)
