"""Rule theory: the config's expected answers against what the run measures."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "theory")
steps.theory(sm.input, sm.output, sm.params.settings, sm.params.names, log)
