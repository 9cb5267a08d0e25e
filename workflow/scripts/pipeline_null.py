"""Rule pipeline_null: the uniform pipeline null's kernel PCA embeddings, shared by every
experiment with one network."""

from _common import setup_logging

from lossatlas import steps

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "pipeline_null")
steps.pipeline_null(sm.input, sm.output, sm.params.settings, sm.wildcards.network, log)
