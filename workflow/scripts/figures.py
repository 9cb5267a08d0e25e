"""Rule figures: the report's Figure 1 (datasets) and Figure 2 (good minima), one panel each."""

from _common import experiment, setup_logging

from lossatlas import plots, reduce
from lossatlas.data import Dataset

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "figures")
cfg = sm.config
names = list(sm.params.experiments)
dpi = cfg["figures"]["dpi"]
titles = {n: plots.experiment_title(n, experiment(cfg, n).transforms) for n in names}

datasets = {n: Dataset.load(p) for n, p in zip(names, sm.input.datasets, strict=True)}
plots.datasets_figure(datasets, sm.output.fig1, titles=titles, dpi=dpi)
reductions = {n: reduce.load(p) for n, p in zip(names, sm.input.reductions, strict=True)}
plots.good_minima_figure(
    reductions, sm.output.fig2, titles=titles, threshold=sm.params.good_threshold, dpi=dpi
)
log.info("wrote %s and %s", sm.output.fig1, sm.output.fig2)
