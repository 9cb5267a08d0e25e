"""lossatlas: map neural-network loss landscapes by MCMC (see README.md; the workflow is in
workflow/Snakefile, where the Snakemake workflow catalog and `module` users find it)."""


include: "workflow/Snakefile"
