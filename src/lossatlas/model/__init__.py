"""The network and its loss: the flat parameter layout, the activations, the MLP and its target
density, and the symmetries of its parameters."""

from lossatlas.model.network import (
    ACTIVATIONS,
    CHAINWISE_MIN_ENERGY,
    CHAINWISE_MIN_GRAD,
    ENERGIES,
    LOSSES,
    MLP,
    Target,
    layer_sizes,
    model_layout,
    target_for,
)

__all__ = [
    "ACTIVATIONS",
    "CHAINWISE_MIN_ENERGY",
    "CHAINWISE_MIN_GRAD",
    "ENERGIES",
    "LOSSES",
    "MLP",
    "Target",
    "layer_sizes",
    "model_layout",
    "target_for",
]
