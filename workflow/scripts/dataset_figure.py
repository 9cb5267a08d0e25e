"""Rule dataset_figure: one experiment's dataset, for its section of the report."""

from _common import experiment, setup_logging

from lossatlas import plots
from lossatlas.data import Dataset

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "dataset_figure")
name = sm.wildcards.exp
title = plots.experiment_title(name, experiment(sm.config, name).transforms)
ds = Dataset.load(sm.input.dataset)
plots.datasets_figure({name: ds}, sm.output.figure, titles={name: title}, dpi=sm.params.dpi)
log.info("wrote %s", sm.output.figure)
