"""Settings -> the library's arguments, shared by the steps of several rule families."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def with_hidden(s: Mapping, hidden) -> Mapping:
    """Settings ``s`` with ``model.hidden`` replaced (one experiment of an architecture sweep)."""
    return {**s, "model": {**s["model"], "hidden": list(hidden)}}


def target(s: Mapping, dataset):
    """The :class:`lossatlas.model.Target` of the settings' model and target on ``dataset``."""
    from lossatlas import model

    t = s["target"]
    return model.target_for(dataset, **s["model"], box=t["box"], beta=t["beta"], energy=t["energy"])


def point_target(s: Mapping, dataset):
    """:func:`target` for the analyses that evaluate it point by point (optimisers, Hessians):
    computed by the fused code where that is faster at one point."""
    from lossatlas.sampling import fused

    return fused.for_optimisers(target(s, dataset))


def sizes(s: Mapping, dataset) -> tuple[int, ...]:
    """The MLP's layer widths ``(d, *hidden, k)``; for another network its inputs and outputs
    ``(d, k)`` (what an input map and a file key need of it)."""
    from lossatlas import model
    from lossatlas.model import spec

    if spec.kind(s["model"]) != "mlp":
        return (int(dataset.n_features), int(dataset.n_outputs))
    return model.layer_sizes(dataset, s["model"]["hidden"])


def coordinates(s: Mapping, dataset):
    """The analysis coordinates' transform of ``coordinates`` (None: raw); canonical ones are
    the network's (:meth:`lossatlas.model.MLP.canonical_transform`)."""
    from lossatlas.model import spec

    if s["coordinates"] == "raw":
        return None
    return spec.network(dataset, s["model"]).canonical_transform()


def blocks(s: Mapping) -> dict[str, Any]:
    """How many draws one read of the store holds (``reduce.draw_block``, ``max_block_mb``)."""
    return {"draw_block": s["reduce"]["draw_block"], "max_block_mb": s["reduce"]["max_block_mb"]}


def census_points(inputs) -> tuple[pd.DataFrame, np.ndarray]:
    """The census table and its points' raw coordinates (row ``id``), from the census rule."""
    import pandas as pd

    with np.load(inputs.census_points) as f:
        return pd.read_csv(inputs.census), f["points"]
