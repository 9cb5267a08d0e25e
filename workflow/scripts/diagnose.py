"""Rule diagnose: convergence table and checks, trace/rank plots of U, R-hat per parameter, the
same on canonical parameters and invariant quantities, and the energy histogram."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "diagnose")
steps.diagnose(sm.input, sm.output, sm.params.settings, sm.wildcards.exp, sm.threads, log)
