"""Rule dataset_figure: one experiment's dataset, for its section of the report."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "dataset_figure")
steps.dataset_figure(sm.input, sm.output, sm.params.settings, sm.params.experiment, log)
