"""Rule dataset: write one experiment's transformed dataset."""

from _common import experiment, setup_logging

from lossatlas import data

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "dataset")
cfg = sm.config
exp = experiment(cfg, sm.wildcards.exp)
ds = data.for_experiment(cfg, exp)
ds.save(sm.output[0])
log.info(
    "%s: %d points, %d features, transforms %s",
    exp.name,
    ds.n_points,
    ds.n_features,
    exp.transforms,
)
