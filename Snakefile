"""lossatlas: map neural-network loss landscapes by MCMC (see README.md). The workflow is
workflow/Snakefile, where the Snakemake workflow catalog and `module` users find it."""


include: "workflow/Snakefile"


# An include restores the including file's default target (none here): name the workflow's.
workflow.default_target = "all"
