"""Step of the predict rule: the draws on test points the chains never saw."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from lossatlas.steps.arguments import blocks
from lossatlas.steps.settings import experiment, plain, write_json

READS: dict[str, tuple[str, ...]] = {
    "predict": (
        "dataset",
        "model",
        "predict",
        "target.good_threshold",
        "reduce.draw_block",
        "reduce.max_block_mb",
        "figures.dpi",
    ),  # fmt: skip
}


def predict(inputs, outputs, s: Mapping, exp: Mapping, log: logging.Logger) -> None:
    """Posterior-predictive accuracy and loss of the good draws (and of all) on
    ``predict.n_test`` test points, pooled and chain by chain."""
    from lossatlas import data
    from lossatlas.analysis import predict as pp
    from lossatlas.model import spec
    from lossatlas.storage.store import SampleStore

    e = experiment(exp)
    settings = s["predict"]
    test = data.test_for_experiment(plain(s["dataset"]), e.transforms, settings["n_test"])
    network = spec.network(data.Dataset.load(inputs.dataset), s["model"])
    with SampleStore(inputs.samples) as store:
        result = pp.posterior_predictive(
            store.theta, store.stat("mean_loss"), network, test.X,
            test.Y if test.is_regression else test.y,
            good_threshold=s["target"]["good_threshold"], max_draws=settings["max_draws"],
            **blocks(s),
        )  # fmt: skip
    result.table.insert(0, "experiment", e.name)
    result.table.to_csv(outputs.table, index=False)
    write_json(
        outputs.finding,
        {"experiment": e.name, "analysis": "posterior predictive on test points",
         **result.summary, "settings": plain(settings)},
    )  # fmt: skip
    pp.plot(result, outputs.figure, title=e.name, dpi=s["figures"]["dpi"])
    log.info("%s: %s", e.name, result.summary["finding"])
