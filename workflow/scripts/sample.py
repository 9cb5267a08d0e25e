"""Rule sample: run one experiment's chains on Dask; resumes from the batch checkpoints."""

from _common import exit_with_snakemake, setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "sample")
exit_with_snakemake(log)
# Where the chains run (steps.RUNTIME) changes no number, so it is no rerun trigger (params).
run = steps.runtime("sample", sm.config)
steps.sample(
    sm.input.dataset,
    sm.output.samples,
    sm.params.settings,
    run,
    sm.params.experiment,
    sm.threads,
    log,
)
