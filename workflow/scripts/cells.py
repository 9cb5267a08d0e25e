"""Rule cells: Liu's convex cells, their minima, genuine or spurious, and their mass."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "cells")
steps.cells(sm.input, sm.output, sm.params.settings, sm.wildcards.exp, log)
