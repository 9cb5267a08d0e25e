"""Rule dataset: write one experiment's transformed dataset."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "dataset")
steps.dataset(sm.output[0], sm.params.settings, sm.params.experiment, log)
