"""Networks evaluated by JAX: the report's MLP against the numpy reference, convolutions
against hand-computed values and finite differences, and the channel symmetries."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")  # the optional extra: pip install -e ".[jax]"

from lossatlas.model import MLP, Target  # noqa: E402
from lossatlas.model import jaxnet as jn  # noqa: E402
from lossatlas.model.layout import ParamLayout  # noqa: E402


@pytest.mark.parametrize(
    ("sizes", "activation", "loss"),
    [((2, 2, 2, 2), "tanh", "cross_entropy"), ((3, 5, 4), "relu", "squared"),
     ((2, 3, 3, 2), "sigmoid", "cross_entropy")],
)  # fmt: skip
def test_mlp_energy_and_gradient_equal_the_numpy_reference(sizes, activation, loss):
    """Known answer: the report's MLP through JAX gives the numpy backend's U and gradient to
    1e-12 (float64), on the same flat vector with the same names."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(10, sizes[0]))
    y = rng.integers(0, sizes[-1], size=10)
    theta = rng.uniform(-3, 3, size=(6, ParamLayout(sizes).p))
    reference = Target(MLP(sizes, activation=activation, loss=loss), X, y)
    net = jn.mlp(sizes, activation, loss)
    energy = jn.JaxEnergy(net, X, y)
    assert net.names() == ParamLayout(sizes).names() and net.p == reference.p
    u, g = energy.U_and_grad(theta)
    u_ref, g_ref = reference.U_and_grad(theta)
    np.testing.assert_allclose(u, u_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(energy.U(theta), reference.U(theta), rtol=1e-12, atol=1e-12)


def test_convolution_is_the_cross_correlation_computed_by_hand():
    """Known answer: input 1, 2, 3, 4 under the kernel (1, -1) with bias 0.5 gives -0.5 three
    times (no kernel flip, valid padding); stride 2 keeps the first and the third."""
    for stride, want in ((1, [-0.5, -0.5, -0.5]), (2, [-0.5, -0.5])):
        net = jn.ConvNet(
            (4, 1),
            [jn.Conv(1, (2,), stride), jn.Flatten(), jn.Dense(len(want))],
            "linear",
            "mse",
        )
        k = len(want)
        theta = np.r_[1.0, -1.0, 0.5, np.eye(k).ravel(), np.zeros(k)]
        out = net.forward(theta, np.array([[1.0, 2.0, 3.0, 4.0]]))
        np.testing.assert_allclose(np.asarray(out)[0], want, atol=1e-15)
        assert net.names()[:3] == ["conv1.w[0,0,0]", "conv1.w[0,0,1]", "conv1.b[0]"]


def _conv1d():
    layers = [
        jn.Conv(3, (3,)),
        jn.Pool(2, "avg"),
        jn.Conv(2, (2,)),
        jn.Flatten(),
        jn.Dense(4),
        jn.Dense(3),
    ]
    return jn.ConvNet((12, 1), layers, "tanh", "cross_entropy")


def _conv2d():
    layers = [jn.Conv(2, (3, 3)), jn.Pool(2, "max"), jn.Flatten(), jn.Dense(3), jn.Dense(2)]
    return jn.ConvNet((6, 6, 1), layers, "tanh", "cross_entropy")


def _data(net, n=7, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, int(np.prod(net.input_shape))))
    return X, rng.integers(0, net.n_outputs, size=n)


@pytest.mark.parametrize("make", [_conv1d, _conv2d])
def test_conv_gradient_and_hessian_products_match_finite_differences(make):
    net = make()
    X, y = _data(net)
    energy = jn.JaxEnergy(net, X, y)
    rng = np.random.default_rng(2)
    theta = 0.7 * rng.normal(size=(1, net.p))
    _, g = energy.U_and_grad(theta)
    h = 1e-6
    coords = rng.choice(net.p, size=min(net.p, 25), replace=False)
    for i in coords:
        e = np.zeros(net.p)
        e[i] = h
        fd = (energy.U(theta + e) - energy.U(theta - e))[0] / (2 * h)
        assert abs(fd - g[0, i]) <= 1e-6 * max(1.0, abs(g[0, i])), (i, fd, g[0, i])
    v = rng.normal(size=net.p)
    hv = energy.hvp(theta[0], v)
    fd = (energy.U_and_grad(theta + h * v)[1] - energy.U_and_grad(theta - h * v)[1])[0] / (2 * h)
    np.testing.assert_allclose(hv, fd, rtol=1e-5, atol=1e-6)


def test_layout_names_and_flops_of_a_conv_net():
    net = _conv1d()
    # conv 3x1x3 + 3, pool to 5, conv 2x3x2 + 2 -> 2 x 4, dense 4 x 8 + 4, dense 3 x 4 + 3
    assert net.p == 12 + 14 + 36 + 15
    names = net.names()
    assert len(names) == len(set(names)) == net.p
    assert names[12] == "conv3.w[0,0,0]" and names[-1] == "dense6.b[2]"
    assert net.flops_per_point() == 9 * 10 + 12 * 4 + 32 + 12


@pytest.mark.parametrize("make", [_conv1d, _conv2d])
def test_permuted_and_flipped_copies_have_the_same_energy_and_canonical_form(make):
    """Every hidden block's channels (units) permuted, and sign-flipped where the activation is
    odd and no max pooling follows: U is unchanged to rounding and the canonical form is the
    same point."""
    net = make()
    X, y = _data(net)
    energy = jn.JaxEnergy(net, X, y)
    rng = np.random.default_rng(3)
    theta = rng.normal(size=(4, net.p))
    moved = theta
    for k in range(len(net.blocks) - 1):
        units = net.blocks[k].w_shape[0]
        order = np.argsort(rng.random((4, units)), axis=1)
        signs = np.where(rng.random((4, units)) < 0.5, -1.0, 1.0) if jn.flippable(net, k) else None
        moved = jn.transform(net, moved, k, order=order, signs=signs)
    assert not np.allclose(moved, theta)
    np.testing.assert_allclose(energy.U(moved), energy.U(theta), rtol=1e-12)
    # the classes' common shift is flat for softmax outputs
    b = net.blocks[-1]
    shifted = moved.copy()
    shifted[:, b.biases] += 0.3
    np.testing.assert_allclose(energy.U(shifted), energy.U(theta), rtol=1e-12)
    np.testing.assert_allclose(
        jn.canonicalize(net, shifted), jn.canonicalize(net, theta), rtol=1e-12, atol=1e-12
    )


def test_max_pooling_keeps_the_signs():
    """Max pooling does not commute with a sign change: the conv block before it is not
    flippable, and a flip there changes U."""
    net = _conv2d()
    assert not jn.flippable(net, 0) and jn.flippable(net, 1)
    with pytest.raises(ValueError, match="cannot change sign"):
        jn.transform(net, np.zeros((1, net.p)), 0, signs=-np.ones((1, 2)))
    X, y = _data(net)
    theta = np.random.default_rng(4).normal(size=(1, net.p))
    flipped = theta.copy()
    b, after = net.blocks[0], net.blocks[1]
    flipped[:, b.weights] *= -1
    flipped[:, b.biases] *= -1
    flipped[:, after.weights] *= -1
    energy = jn.JaxEnergy(net, X, y)
    assert abs(energy.U(flipped)[0] - energy.U(theta)[0]) > 1e-6


@pytest.mark.parametrize(
    ("layers", "message"),
    [([jn.Dense(3)], "Flatten"), ([jn.Conv(2, (3, 3)), jn.Flatten(), jn.Dense(2)], "2-D kernel"),
     ([jn.Conv(2, (20,)), jn.Flatten(), jn.Dense(2)], "larger than"),
     ([jn.Flatten(), jn.Dense(2), jn.Pool(2)], "pooling needs positions"),
     ([jn.Flatten(), jn.Dense(2), jn.Flatten()], "must be Dense")],
)  # fmt: skip
def test_a_network_that_cannot_run_on_its_inputs_says_why(layers, message):
    with pytest.raises(ValueError, match=message):
        jn.ConvNet((12, 1), layers)


@pytest.mark.parametrize("make", [_conv1d, _conv2d])
def test_nearest_copy_undoes_a_permutation_and_flips(make):
    """Known answer: b is a permuted, sign-flipped (where allowed) and class-shifted copy of a
    plus noise 1e-3; the nearest copy of b to a is a to within the noise, and it is the same
    function as b."""
    net = make()
    X, y = _data(net)
    energy = jn.JaxEnergy(net, X, y)
    rng = np.random.default_rng(8)
    a = rng.normal(size=(1, net.p))
    b = a.copy()
    for k in range(len(net.blocks) - 1):
        units = net.blocks[k].w_shape[0]
        signs = np.where(rng.random((1, units)) < 0.5, -1.0, 1.0) if jn.flippable(net, k) else None
        b = jn.transform(net, b, k, order=rng.permutation(units)[None], signs=signs)
    b[:, net.blocks[-1].biases] += 0.7
    b += 1e-3 * rng.normal(size=b.shape)
    assert np.linalg.norm(b - a) > 1.0
    copy, method = jn.nearest_copy(net, a[0], b[0])
    assert method == "assignment per block"
    assert np.linalg.norm(copy - a[0]) < 1e-3 * np.sqrt(net.p) * 1.5
    np.testing.assert_allclose(energy.U(copy[None]), energy.U(b), rtol=1e-10)


USER_MODEL = """
import jax.numpy as jnp
import numpy as np


def _apply(params, X):
    h = X
    for name in ("l1", "l2"):
        h = jnp.tanh(h @ params[name]["W"].T + params[name]["b"])
    return h @ params["l3"]["W"].T + params["l3"]["b"]


def mlp():
    rng = np.random.default_rng(0)
    shapes = {"l1": (2, 2), "l2": (2, 2), "l3": (2, 2)}
    return _apply, {k: {"W": rng.normal(size=s), "b": np.zeros(s[0])} for k, s in shapes.items()}


def integer_weights():
    return _apply, {k: {"W": np.ones((2, 2), int), "b": np.zeros(2)} for k in ("l1", "l2", "l3")}


def three_outputs():
    return (lambda p, X: jnp.zeros((X.shape[0], 3)) + p["w"]), {"w": np.zeros(1)}


def not_a_pair():
    return _apply
"""


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_models"


def test_a_users_pytree_model_is_sampled_as_the_numpy_reference(user_models):
    """Known answer: a user's apply(params, X) of the report's MLP, its parameters a dict of
    layers, flattens (keys in order, W before b, row-major) to ParamLayout's vector: the same
    U and gradient as the numpy Target to 1e-12, named from the pytree's paths, and the same
    chains under the compiled RWM."""
    rng = np.random.default_rng(0)
    X, y = rng.uniform(-1, 1, size=(10, 2)), rng.integers(0, 2, size=10)
    net = jn.load_model(f"{user_models}:mlp", X, n_outputs=2)
    assert net.p == 18 and net.names()[:5] == [
        "l1.W[0,0]", "l1.W[0,1]", "l1.W[1,0]", "l1.W[1,1]", "l1.b[0]",
    ]  # fmt: skip
    theta = rng.uniform(-3, 3, size=(5, 18))
    reference = Target(MLP((2, 2, 2, 2)), X, y)
    u, g = jn.JaxEnergy(net, X, y).U_and_grad(theta)
    u_ref, g_ref = reference.U_and_grad(theta)
    np.testing.assert_allclose(u, u_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-12)
    # and backend jax's compiled RWM samples it: numpy's 500 transitions from one state
    from lossatlas.sampling import RWM
    from lossatlas.sampling.jax_rwm import JaxRWM

    ends = []
    for kernel in (JaxRWM(jn.JaxTarget(net, X, y), 0.3), RWM(reference, 0.3)):
        state = kernel.init(theta[:4], None)
        ends.append(kernel.run(state, np.random.default_rng(1), 500)[0].position)
    np.testing.assert_allclose(ends[0], ends[1], atol=1e-9)


@pytest.mark.parametrize(
    ("factory", "message"),
    [("nowhere:mlp", "cannot import it"), ("{m}:missing", "cannot import it"),
     ("{m}:not_a_pair", r"must return \(apply, params\)"),
     ("{m}:integer_weights", r"parameter l1\.W is int\d+, not float"),
     ("{m}:three_outputs", r"outputs of shape \(2, 3\) on 2 points; the data needs \(2, 2\)")],
)  # fmt: skip
def test_a_broken_user_model_is_explained_in_one_line(user_models, factory, message):
    spec = factory.format(m=user_models)
    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match=message) as err:
        jn.load_model(spec, X, n_outputs=2)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"model.python: {spec}: ")


FRAMEWORK_MODELS = """
import jax
import jax.numpy as jnp


def equinox_mlp():
    import equinox as eqx

    return eqx.nn.MLP(2, 2, 2, 2, activation=jnp.tanh, key=jax.random.key(0))


def linen_mlp():
    from flax import linen

    class MLP(linen.Module):
        @linen.compact
        def __call__(self, x):
            for _ in range(2):
                x = jnp.tanh(linen.Dense(2)(x))
            return linen.Dense(2)(x)

    return MLP()


def nnx_mlp():
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1, self.l2, self.l3 = (nnx.Linear(2, 2, rngs=rngs) for _ in range(3))

        def __call__(self, x):
            return self.l3(jnp.tanh(self.l2(jnp.tanh(self.l1(x)))))

    return MLP(nnx.Rngs(0))


def broken():
    raise RuntimeError("weights file missing")
"""


def _dense_order(names: list[str]) -> np.ndarray:
    """Where each of ParamLayout's coordinates (W1 (out, in), b1, W2, ...) sits in a Flax
    vector: Flax names kernels (in, out) and sorts bias before kernel."""
    index = {n: i for i, n in enumerate(names)}
    order = []
    for layer in sorted({n.split(".kernel")[0].split(".bias")[0] for n in names}):
        order += [index[f"{layer}.kernel[{j},{i}]"] for i in range(2) for j in range(2)]
        order += [index[f"{layer}.bias[{i}]"] for i in range(2)]
    return np.asarray(order)


@pytest.mark.parametrize(
    ("factory", "package"),
    [("equinox_mlp", "equinox"), ("linen_mlp", "flax"), ("nnx_mlp", "flax")],
)
def test_a_framework_model_is_the_numpy_reference(tmp_path, monkeypatch, factory, package):
    """Known answer: the report's MLP written in Equinox or Flax (Linen, NNX), flattened and
    named from its pytree, then mapped onto ParamLayout's vector, gives the numpy Target's U and
    gradient to 1e-12 (float64, whatever the framework initialised)."""
    pytest.importorskip(package)
    (tmp_path / "framework_models.py").write_text(FRAMEWORK_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    X, y = rng.uniform(-1, 1, size=(10, 2)), rng.integers(0, 2, size=10)
    net = jn.load_model(f"framework_models:{factory}", X, n_outputs=2)
    assert net.p == 18
    names = net.names()
    # Equinox's leaves are already (out, in) weights then biases, layer by layer
    order = np.arange(18) if package == "equinox" else _dense_order(names)
    assert len(set(order)) == 18
    theta = rng.uniform(-3, 3, size=(5, 18))
    ours = np.empty_like(theta)
    ours[:, order] = theta  # ours[:, order[k]] is ParamLayout's coordinate k
    u, g = jn.JaxEnergy(net, X, y).U_and_grad(ours)
    u_ref, g_ref = Target(MLP((2, 2, 2, 2)), X, y).U_and_grad(theta)
    np.testing.assert_allclose(u, u_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g[:, order], g_ref, rtol=1e-12, atol=1e-12)


def test_a_failing_factory_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "framework_models.py").write_text(FRAMEWORK_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError) as err:
        jn.load_model("framework_models:broken", np.zeros((4, 2)), n_outputs=2)
    assert str(err.value) == (
        "model.python: framework_models:broken: RuntimeError: weights file missing"
    )


@pytest.mark.parametrize(("dims", "stride"), [(1, 1), (1, 3), (2, 1), (2, 2)])
def test_convolution_equals_xla_convolution(dims, stride):
    """The convolution as one contraction over shifted views equals XLA's own convolution,
    in 1-D and 2-D, with and without stride."""
    import jax
    import jax.numpy as jnp

    from lossatlas.model.jaxnet import _conv

    rng = np.random.default_rng(dims * 10 + stride)
    shape = (11,) if dims == 1 else (9, 8)
    kernel = (3,) if dims == 1 else (3, 2)
    x = rng.normal(size=(4, 2, *shape))
    w = rng.normal(size=(3, 2, *kernel))
    out = tuple((s - k) // stride + 1 for s, k in zip(shape, kernel, strict=True))
    with jax.enable_x64(True):
        ours = np.asarray(_conv(jnp.asarray(x), jnp.asarray(w), stride, out))
        xla = np.asarray(jax.lax.conv_general_dilated(x, w, (stride,) * dims, "VALID"))
    np.testing.assert_allclose(ours, xla, rtol=1e-12, atol=1e-12)


def test_a_network_without_a_symmetry_group_has_no_canonical_form(user_models):
    rng = np.random.default_rng(0)
    X, y = rng.uniform(-1, 1, size=(10, 2)), rng.integers(0, 2, size=10)
    network = jn.JaxTarget(jn.load_model(f"{user_models}:mlp", X, n_outputs=2), X, y).network
    assert network.symmetry is None and network.canonical_transform() is None
    a, b = rng.normal(size=(2, 18))
    copy, method = network.nearest_copy(a, b)
    np.testing.assert_array_equal(copy, b)
    assert method.startswith("none")
    conv = jn.JaxTarget(_conv1d(), *_data(_conv1d())).network
    assert conv.symmetry and conv.canonical_transform() is not None
    assert conv.forward(rng.normal(size=(3, conv.p)), _data(_conv1d())[0]).shape[::2] == (3, 3)


def test_many_chains_are_evaluated_in_chunks_of_bounded_memory(monkeypatch):
    """More chains than one compiled call may hold: evaluated in padded chunks, each chain's
    energy, gradient and outputs as a call of its own gives them (to rounding)."""
    net = _conv1d()
    X, y = _data(net)
    target = jn.JaxTarget(net, X, y)
    monkeypatch.setattr(jn, "CHUNK_BYTES", 8 * len(X) * 200 * 3)  # a few chains per call
    assert 1 < jn.chunk_of(net, len(X), grad=True) < 10
    theta = np.random.default_rng(0).normal(size=(23, net.p))
    u, g = target.U_and_grad(theta)
    one = [target.U_and_grad(t[None]) for t in theta]
    np.testing.assert_allclose(u, [o[0][0] for o in one], rtol=1e-12)
    np.testing.assert_allclose(g, np.concatenate([o[1] for o in one]), rtol=1e-10, atol=1e-12)
    out = target.network.forward(theta, X)
    assert out.shape == (23, len(X), 3)
    np.testing.assert_allclose(out[5], target.network.forward(theta[5:6], X)[0], rtol=1e-12)
