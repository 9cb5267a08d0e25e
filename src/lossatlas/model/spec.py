"""The network a config's ``model`` section describes, and its target on a dataset: the MLP of
``hidden`` (the default), a convolutional network of ``layers`` or a user's model ``python``
(both evaluated by JAX, :mod:`lossatlas.model.jaxnet`).

Reading ``layers`` needs no JAX (only evaluating the network does): a bad layer list is a config
error before any job, and the parameter count and names of a convolutional network are known
without it. This module imports :mod:`~lossatlas.model.jaxnet` only when a network other than
the MLP is asked for, so that validating an MLP's config stays cheap.

``layers`` lists the hidden layers, as ``hidden`` does for the MLP; the output layer (dense, one
unit per class or target) is added after them, with a flatten first where the last listed
layer leaves positions. Each item is one of::

    {conv: 8, kernel: 5, stride: 1}   # channels, kernel size (int, or [rows, cols] in 2-D)
    {pool: 2, kind: avg}              # non-overlapping pooling, avg or max
    flatten
    {dense: 32}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["KINDS", "conv_net", "jax_target", "key", "kind", "layout", "network", "parse_layers"]

# what a model section can describe
KINDS = ("mlp", "conv", "python")

# Model settings added after batch checkpoints were first keyed by the model: left out of the
# key at their default, so that those files still resume.
_KEYED_UNLESS_DEFAULT = {"bias": "all", "layers": None, "input_shape": None, "python": None}


def key(model: Mapping) -> dict:
    """The ``model`` settings as a batch checkpoint's key: those added later left out at their
    default."""
    return {k: v for k, v in model.items() if _KEYED_UNLESS_DEFAULT.get(k, object()) != v}


_OPTIONS = {"conv": {"kernel", "stride"}, "pool": {"kind"}, "dense": set()}


def kind(model: Mapping) -> str:
    """``mlp``, ``conv`` (``model.layers``) or ``python`` (``model.python``)."""
    if model.get("python"):
        return "python"
    return "conv" if model.get("layers") else "mlp"


def _layer(i: int, item: Any):
    from lossatlas.model.jaxnet import Conv, Dense, Flatten, Pool

    where = f"model.layers.{i}"
    if item == "flatten" or item == {"flatten": None}:
        return Flatten()
    if not isinstance(item, Mapping):
        raise ValueError(
            f"{where}: {item!r} is not a layer; write {{conv: 8, kernel: 5}}, {{pool: 2}}, "
            "flatten or {dense: 32}"
        )
    named = [k for k in item if k in _OPTIONS]
    if len(named) != 1:
        raise ValueError(
            f"{where}: {dict(item)} must name one layer (conv, pool, dense) or be flatten"
        )
    (name,) = named
    extra = set(item) - {name} - _OPTIONS[name]
    if extra:
        raise ValueError(
            f"{where}: {name} takes {sorted(_OPTIONS[name]) or 'no options'}, not {sorted(extra)}"
        )
    size = item[name]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"{where}: {name}: must be a positive integer, got {size!r}")
    if name == "dense":
        return Dense(size)
    if name == "pool":
        pool_kind = item.get("kind", "avg")
        if pool_kind not in ("avg", "max"):
            raise ValueError(f"{where}: kind: avg or max, got {pool_kind!r}")
        return Pool(size, pool_kind)
    if "kernel" not in item:
        raise ValueError(f"{where}: conv needs a kernel size, e.g. {{conv: {size}, kernel: 5}}")
    kernel = item["kernel"]
    kernel = tuple(kernel) if isinstance(kernel, Sequence) else (kernel,)
    stride = item.get("stride", 1)
    if not all(isinstance(k, int) and k >= 1 for k in (*kernel, stride)):
        raise ValueError(f"{where}: kernel and stride must be positive integers")
    return Conv(size, kernel, stride)


def parse_layers(items: Sequence) -> tuple:
    """The hidden layers of ``model.layers``; a ValueError names the item and the fix."""
    return tuple(_layer(i, item) for i, item in enumerate(items))


def input_shape(model: Mapping, n_features: int) -> tuple[int, ...]:
    """One input's shape, channels last: ``model.input_shape`` or ``(n_features, 1)``."""
    shape = tuple(model.get("input_shape") or (n_features, 1))
    size = math.prod(shape)
    if size != n_features:
        raise ValueError(
            f"model.input_shape: {list(shape)} holds {size} numbers, the data's inputs "
            f"{n_features}; give a shape whose product is {n_features}, channels last"
        )
    return shape


def conv_net(model: Mapping, n_features: int, n_outputs: int):
    """The :class:`~lossatlas.model.jaxnet.ConvNet` of ``model.layers`` on inputs of
    ``n_features`` numbers, with ``n_outputs`` outputs; a ValueError says which setting does
    not fit."""
    from lossatlas.model.jaxnet import ConvNet, Dense, Flatten

    layers = list(parse_layers(model["layers"]))
    shape = input_shape(model, n_features)
    if len(shape) > 1 and not any(isinstance(x, Flatten | Dense) for x in layers):
        layers.append(Flatten())
    layers.append(Dense(int(n_outputs)))
    try:
        return ConvNet(shape, layers, model.get("activation", "tanh"), model.get("loss"))
    except ValueError as e:
        raise ValueError(f"model.layers: {e}") from None


def layout(dataset, model: Mapping):
    """What names the parameters of the ``model`` section's network on ``dataset``: ``p`` and
    ``names()`` (a :class:`~lossatlas.model.layout.ParamLayout` for the MLP)."""
    from lossatlas.model.layout import ParamLayout
    from lossatlas.model.network import layer_sizes

    k = kind(model)
    if k == "mlp":
        return ParamLayout(layer_sizes(dataset, model["hidden"]), model.get("bias", "all"))
    if k == "conv":
        return conv_net(model, dataset.n_features, dataset.n_outputs)
    return _python_net(dataset, model)


def network(dataset, model: Mapping):
    """The ``model`` section's network on ``dataset`` as every analysis sees one (``forward``,
    ``canonical_transform``, ...), without a target: an :class:`~lossatlas.model.MLP`, or a
    JAX network in :class:`~lossatlas.model.jaxnet.NetworkOnChains`."""
    if kind(model) == "mlp":
        from lossatlas.model.network import MLP, layer_sizes

        sizes = layer_sizes(dataset, model["hidden"])
        return MLP(sizes, model["activation"], model["loss"], model.get("bias", "all"))
    from lossatlas.model import jaxnet

    net = layout(dataset, model)
    return jaxnet.NetworkOnChains(net, jaxnet.n_outputs_of(net, dataset.X))


def _python_net(dataset, model: Mapping):
    from lossatlas.model import jaxnet

    return jaxnet.load_model(model["python"], dataset.X, dataset.n_outputs, model["loss"])


def jax_target(dataset, model: Mapping, box: float, beta: float, energy: str):
    """The target density of the ``model`` section's convolutional or user's network on
    ``dataset`` (:class:`~lossatlas.model.jaxnet.JaxTarget`); the MLP's is
    :func:`lossatlas.model.target_for`'s numpy one."""
    from lossatlas.model import jaxnet

    if kind(model) == "mlp":
        raise ValueError("the MLP's target is lossatlas.model.target_for's")
    net = layout(dataset, model)
    labels = dataset.Y if model["loss"] == "mse" else dataset.y
    return jaxnet.JaxTarget(net, dataset.X, labels, box=box, beta=beta, energy=energy)
