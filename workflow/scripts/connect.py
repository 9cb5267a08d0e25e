"""Rule connect: are the census minima connected? Paths, barriers and the merge tree."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "connect")
steps.connect(sm.input, sm.output, sm.params.settings, sm.wildcards.exp, log)
