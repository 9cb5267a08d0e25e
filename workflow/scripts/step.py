"""Every rule's script: run the step named after the rule (lossatlas.steps.run_job)."""

from _common import exit_finished, exit_with_snakemake, setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, sm.rule)
if sm.rule in steps.RUNTIME:
    # a step that runs Dask workers stops with Snakemake (none is left writing batch files)
    exit_with_snakemake(log)
steps.run_job(sm, log)
exit_finished()
