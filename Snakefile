"""lossatlas: map neural-network loss landscapes by MCMC (see README.md)."""

import sys
from pathlib import Path

from snakemake.utils import min_version

from lossatlas import config as lacfg

min_version("9.0")


configfile: "config/config.yaml"


# Validate before any rule exists: a bad field stops here with one line, nothing is written.
try:
    CFG = lacfg.validate(
        config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
    )
except lacfg.ConfigError as err:
    sys.exit(str(err))
# Scripts read snakemake.config: give them the validated copy with every default filled in.
config.clear()
config.update(CFG)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/diagnose.smk"
include: "workflow/rules/reduce.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/landscape.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
