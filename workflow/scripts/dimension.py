"""Rule dimension: dimension statistics of the good draws against null models."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "dimension")
steps.dimension(sm.input, sm.output, sm.params.settings, sm.wildcards.exp, log)
