"""Rule findings: the report's first page, from every experiment's result summaries."""

from pathlib import Path

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "findings")
steps.findings(
    sm.input,
    sm.output,
    sm.params.settings,
    sm.params.experiments,
    Path(sm.input.method).read_text(),
    log,
)
