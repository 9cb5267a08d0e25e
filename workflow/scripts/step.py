"""Every rule's script: run the step named after the rule (lossatlas.steps.run_job)."""

import sys

from lossatlas.warm_jobs import hand_over

# on a local run, in a child of the interpreter that has imported the libraries (returns
# where none serves this run)
hand_over(sys.argv[0])

from _common import exit_finished, exit_with_snakemake, setup_logging  # noqa: E402

from lossatlas import steps  # noqa: E402

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, sm.rule)
if sm.rule in steps.RUNTIME:
    # a step that runs Dask workers stops with Snakemake (none is left writing batch files)
    exit_with_snakemake(log)
steps.run_job(sm, log)
exit_finished()
