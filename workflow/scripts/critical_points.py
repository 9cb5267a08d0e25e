"""Rule critical_points: one network's critical points from random starts."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "critical_points")
steps.critical_points(sm.input, sm.output, sm.params.settings, sm.params.experiment, log)
