"""Rule compare: each experiment's good draws against the reference's, before and after
mapping them back through the dataset transform."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "compare")
steps.compare(sm.input, sm.output, sm.params.settings, sm.params.experiments, log)
