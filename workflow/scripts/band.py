"""Rule band: Choromanska's band across the width sweep."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "band")
steps.band(sm.input, sm.output, sm.params.settings, sm.params.names, log)
