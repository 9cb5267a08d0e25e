"""Rule dimension: dimension statistics of the good draws against null models."""

import json
from pathlib import Path

import pandas as pd
from _common import setup_logging

from lossatlas import landscape
from lossatlas.data import Dataset
from lossatlas.store import SampleStore

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = setup_logging(sm, "dimension")
cfg = sm.config

with SampleStore(sm.input.samples) as store:
    rows, meta = landscape.dimension_rows(store, Dataset.load(sm.input.dataset), cfg)
table = pd.DataFrame(rows)
table.insert(0, "experiment", sm.wildcards.exp)
table.to_csv(sm.output.table, index=False)
doc = {**meta, "experiment": sm.wildcards.exp, "rows": table.to_dict(orient="records")}
Path(sm.output.json).write_text(json.dumps(doc, indent=2, default=float) + "\n")
for r in rows:
    log.info("%s %s/%s: %s", sm.wildcards.exp, r["statistic"], r["null"], r["verdict"])
