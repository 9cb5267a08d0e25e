"""Rule restore: sample again the batches a repair moved aside; check them against the store."""

from _common import exit_with_snakemake, setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "restore")
exit_with_snakemake(log)
# Where the chains run (steps.RUNTIME) changes no number, so it is no rerun trigger (params).
run = steps.runtime("restore", sm.config)
steps.restore(
    sm.input.dataset,
    sm.input.samples,
    sm.output.restored,
    sm.params.settings,
    run,
    sm.params.experiment,
    sm.threads,
    log,
)
