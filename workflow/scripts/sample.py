"""Rule sample: run one experiment's chains on Dask; resumes from the batch checkpoints."""

from pathlib import Path

from _common import exit_with_snakemake, experiment, setup_logging

from lossatlas import cluster, engine
from lossatlas.data import Dataset

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "sample")
exit_with_snakemake(log)

cfg = sm.config
exp = experiment(cfg, sm.wildcards.exp)
dataset = Dataset.load(sm.input.dataset)
out = Path(sm.output.samples)

# The lock first: a run waiting for another one's lock holds no workers (SLURM jobs) meanwhile.
# connect() logs the cluster size and the dashboard address.
with (
    engine.experiment_lock(cfg, out.parent, log),
    cluster.connect(cfg["dask"], threads=sm.threads, log=log) as client,
):
    summary = engine.run_experiment(cfg, exp, dataset, out.parent, client, log, locked=True)
log.info(
    "resume summary: resumed=%d computed=%d total=%d draws over %d batches",
    summary["draws_resumed"],
    summary["draws_computed"],
    summary["draws_total"],
    summary["n_batches"],
)
for b in summary["batches"]:
    log.info("resume summary: %s", b)

if not out.exists():
    raise FileNotFoundError(f"engine.run_experiment did not write {out}")
