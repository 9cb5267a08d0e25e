"""Rule census: critical points from many starts, classified; their figures."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "census")
steps.census(sm.input, sm.output, sm.params.settings, sm.wildcards.exp, log)
