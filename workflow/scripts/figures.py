"""Rule figures: the report's Figure 1 (datasets) and Figure 2 (good minima), one panel each."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "figures")
steps.figures(sm.input, sm.output, sm.params.settings, sm.params.experiments, log)
