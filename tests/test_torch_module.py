"""The exported torch modules behave as any ``nn.Module`` (dtype and device
conversions, state_dict, pickle, torch.save), and a weight-shared model
exports its pooling stages, activations, shortcut links and lateral links."""

import copy
import io
import pickle
import warnings

import numpy as np
import pytest
from helpers import digits_split
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from sksim import SIMClassifier, SIMRegressor
from sksim.blocks import (
    Activation,
    Link,
    Pool,
    Structure,
    check_structure,
    link_output,
    per_state,
)
from sksim.weight_sharing import SharedModel, block_equilibrium, head_outputs

torch = pytest.importorskip("torch")
nn = torch.nn
from sksim import TorchBaseline  # noqa: E402
from sksim.torch_export import SharedSIMModule, SIMModule  # noqa: E402

INF = float("inf")


@pytest.fixture(scope="module")
def digits():
    X_train, X_test, y_train, _ = digits_split()
    return X_train[:300], X_test[:40], y_train[:300]


@pytest.fixture(scope="module")
def cnn_baseline(digits):
    """A small CNN (two convolutions, a linear head) trained briefly on digits."""
    X_train, _, y_train = digits
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 4 * 4, 10))
    optimizer = torch.optim.Adam(cnn.parameters(), lr=1e-2)
    inputs = torch.as_tensor(X_train, dtype=torch.float32).reshape(-1, 1, 8, 8)
    targets = torch.as_tensor(y_train)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(cnn(inputs), targets).backward()
        optimizer.step()
    baseline = TorchBaseline(cnn, input_shape=(1, 8, 8))
    _, logits = baseline.record(X_train)
    return baseline, logits


@pytest.fixture(scope="module")
def shared_regressor(digits, cnn_baseline):
    X_train, _, _ = digits
    baseline, logits = cnn_baseline
    return SIMRegressor(baseline, alpha=1e-3).fit(X_train, logits)


@pytest.fixture(scope="module")
def lateral_regressor(digits, cnn_baseline):
    X_train, _, _ = digits
    baseline, logits = cnn_baseline
    return SIMRegressor(baseline, alpha=1e-3, lateral_kernel=3).fit(X_train, logits)


@pytest.fixture(scope="module")
def shared_classifier(digits, cnn_baseline):
    X_train, _, y_train = digits
    baseline, logits = cnn_baseline
    return SIMClassifier(baseline, alpha=1e-3).fit(X_train, y_train,
                                                   baseline_outputs=logits)


@pytest.fixture(scope="module")
def flat_classifier(digits):
    """Implicit flat model (feedback: the Gauss-Seidel path) of an MLP teacher."""
    X_train, _, y_train = digits
    mlp = MLPClassifier((16,), max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a brief teacher
        return SIMClassifier(mlp, alpha=1e-3, random_state=0).fit(X_train, y_train)


@pytest.fixture(scope="module")
def feedforward_classifier(digits):
    """Flat model with a one-pass equilibrium (the A_block buffers)."""
    X_train, _, y_train = digits
    mlp = MLPClassifier((12, 8), max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a brief teacher
        return SIMClassifier(mlp, alpha=1e-3, structure="feedforward",
                             random_state=0).fit(X_train, y_train)


def _pooled_structure(activations=()):
    """Block 0 (4, 8, 8) reads the input; block 1 (6, 4, 4) reads block 0
    max-pooled, a 1x1 stride-2 shortcut of the input and itself (lateral);
    the head reads block 1 average-pooled and block 0 max-pooled."""
    structure = Structure(
        input_shape=(1, 8, 8), block_shapes=((4, 8, 8), (6, 4, 4)),
        links=((Link(-1, "conv", 3, 1, 1),),
               (Link(0, "conv", 3, 1, 1, pool=(Pool("max", 2, 2, 0),)),
                Link(1, "conv", 3, 1, 1),
                Link(-1, "conv", 1, 2, 0))),
        head=(Link(1, "dense", pool=(Pool("avg", 3, 2, 1),)),
              Link(0, "pool", pool=(Pool("max", 3, 2, 1), Pool("avg", 2, 2, 0)))),
        n_outputs=10, activations=activations)
    check_structure(structure)
    return structure


def _pooled_model(structure, seed=0):
    """Random kernels for ``structure`` (the lateral kernel's rows of L1 norm
    0.6: a contraction for every 1-Lipschitz activation)."""
    rng = np.random.default_rng(seed)
    lateral = rng.normal(size=(6, 6 * 9))
    lateral *= 0.6 / np.abs(lateral).sum(axis=1, keepdims=True)
    kernels = [[rng.normal(size=(4, 9))],
               [rng.normal(size=(6, 4 * 9)) / 6, lateral, rng.normal(size=(6, 1))]]
    intercepts = [rng.normal(size=4) * 0.1, rng.normal(size=6) * 0.1]
    head = [rng.normal(size=(10, 6 * 2 * 2)), rng.normal(size=(10, 4))]
    return SharedModel(structure, kernels, intercepts, head, rng.normal(size=10))


def _with_model(estimator, model):
    """A copy of a fitted weight-shared estimator holding ``model``."""
    estimator = copy.deepcopy(estimator)
    for name in ("A_", "B_", "C_", "D_"):
        estimator.__dict__.pop(name, None)  # unrolled copies of the old model
    estimator._shared_model = model
    estimator.structure_ = model.structure
    return estimator


def _numpy_outputs(model, X, tol=1e-14, max_iter=10_000):
    """Reference outputs in numpy (sksim.blocks maps): blocks in order, each
    with its activation, a lateral block iterated to ``tol``."""
    structure = model.structure
    post = []
    for b, (shape, links) in enumerate(zip(structure.block_shapes, structure.links)):
        phi = structure.activation(b)
        drive = np.tile(per_state(model.intercepts[b], shape), (X.shape[0], 1))
        lateral = []
        for link, kernel in zip(links, model.kernels[b]):
            if link.source == b:
                lateral.append((link, kernel))
            else:
                drive = drive + link_output(structure, link, kernel,
                                            X if link.source == -1 else post[link.source])
        states = phi(drive)
        for _ in range(max_iter if lateral else 0):
            update = phi(drive + sum(link_output(structure, link, kernel, states)
                                     for link, kernel in lateral))
            change = np.abs(update - states).max()
            states = update
            if change <= tol:
                break
        post.append(states)
    outputs = model.head_intercept + sum(
        link_output(structure, link, kernel, X if link.source == -1 else post[link.source])
        for link, kernel in zip(structure.head, model.head_kernels))
    return np.hstack(post), outputs


def _outputs(module, u):
    with torch.no_grad():
        return module(u)


def test_shared_module_is_not_shadowing_nn_module_apply(shared_regressor):
    module = shared_regressor.to_torch()
    assert isinstance(module, SharedSIMModule)
    assert SharedSIMModule._apply is nn.Module._apply
    assert module.double() is module and module.float() is module


@pytest.mark.parametrize("name", ["flat_classifier", "feedforward_classifier",
                                  "shared_regressor", "shared_classifier",
                                  "lateral_regressor", "pooled"])
def test_module_conversions_state_dict_and_pickle(request, digits, shared_regressor,
                                                  name):
    """.to(float32)/.float() give float32 outputs close to float64's;
    .double()/.to("cpu")/state_dict round trip/pickle/torch.save give exactly
    the float64 outputs."""
    _, X_test, _ = digits
    if name == "pooled":
        structure = _pooled_structure((Activation(0.1, -INF, INF),
                                       Activation(0.2, -0.5, 0.5)))
        estimator = _with_model(shared_regressor, _pooled_model(structure))
    else:
        estimator = request.getfixturevalue(name)
    flat = name in ("flat_classifier", "feedforward_classifier")
    module = estimator.to_torch()
    assert isinstance(module, SIMModule if flat else SharedSIMModule)
    u = torch.as_tensor(X_test)
    expected = _outputs(module, u)
    assert expected.dtype == torch.float64
    if name != "pooled":  # the estimator's own numpy path
        np.testing.assert_allclose(expected.numpy(), estimator._raw_outputs(X_test),
                                   rtol=0, atol=1e-9)
    scale = max(1.0, float(expected.abs().max()))

    assert torch.equal(_outputs(module.double(), u), expected)
    assert torch.equal(_outputs(module.to("cpu"), u), expected)
    for convert in (lambda m: m.to(torch.float32), lambda m: m.float()):
        single = convert(copy.deepcopy(module))
        assert all(b.dtype == torch.float32 for b in single.buffers())
        got = _outputs(single, u)
        assert got.dtype == torch.float32
        assert float((got.double() - expected).abs().max()) <= 1e-4 * scale
        assert float((_outputs(single, u.float()).double() - expected).abs().max()) \
            <= 1e-4 * scale
        back = single.double()  # float64 again, of the rounded weights
        got = _outputs(back, u)
        assert got.dtype == torch.float64
        assert float((got - expected).abs().max()) <= 1e-4 * scale
    exported32 = estimator.to_torch(dtype=torch.float32)
    assert float((_outputs(exported32, u).double() - expected).abs().max()) <= 1e-4 * scale

    # state_dict into freshly exported modules: zeroed ones, and float32 ones
    state = module.state_dict()
    fresh = estimator.to_torch()
    with torch.no_grad():
        for buffer in fresh.buffers():
            if not buffer.is_sparse:
                buffer.zero_()
    fresh.load_state_dict(state)
    assert torch.equal(_outputs(fresh, u), expected)
    fresh32 = estimator.to_torch(dtype=torch.float32)
    fresh32.load_state_dict(state)
    got = _outputs(fresh32, u)
    assert got.dtype == torch.float32
    assert float((got.double() - expected).abs().max()) <= 1e-4 * scale
    # a float32 state_dict into a float64 module: the float32 module's outputs
    fresh.load_state_dict(exported32.state_dict())
    assert float((_outputs(fresh, u) - expected).abs().max()) <= 1e-4 * scale

    restored = pickle.loads(pickle.dumps(module))
    assert torch.equal(_outputs(restored, u), expected)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    assert torch.equal(_outputs(torch.load(buffer, weights_only=False), u), expected)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = estimator.to_torch()
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(_outputs(fresh, u), expected)


def test_buffers_are_copies_of_the_estimators_arrays(digits, flat_classifier,
                                                     shared_regressor):
    """Loading a state_dict into an exported module never writes into the
    estimator's arrays (the buffers are copies, not views)."""
    _, X_test, _ = digits
    for estimator in (flat_classifier, shared_regressor):
        before = estimator._raw_outputs(X_test)
        module = estimator.to_torch()
        module.load_state_dict({key: value * 0.5
                                for key, value in module.state_dict().items()})
        assert not torch.equal(_outputs(module, torch.as_tensor(X_test)),
                               torch.as_tensor(before))
        np.testing.assert_array_equal(estimator._raw_outputs(X_test), before)


def test_flat_gauss_seidel_matrix_follows_load_state_dict(digits, flat_classifier):
    """The CPU kernel's float64 A stays exact through .float() and a state
    dict of the same model, and follows a state dict of another A."""
    _, X_test, _ = digits
    u = torch.as_tensor(X_test)
    other = copy.deepcopy(flat_classifier)
    other.A_ = other.A_ * 0.5
    target = other.to_torch()
    module = flat_classifier.to_torch()
    exact = module._A_float64
    module.float().load_state_dict(module.state_dict())
    assert module._A_float64 is exact  # its own rounding: kept exact
    module = flat_classifier.to_torch()
    module.load_state_dict(target.state_dict())
    assert torch.equal(_outputs(module, u), _outputs(target, u))
    np.testing.assert_allclose(_outputs(module, u).numpy(), other._raw_outputs(X_test),
                               rtol=0, atol=1e-9)


def test_lateral_model_exports_as_blocks_and_matches_predict(digits, lateral_regressor):
    """A lateral model exports as its blocks (no unrolled buffers): the
    lateral block is iterated to the tolerance, equal to predict, and its
    gradient (implicit differentiation) passes gradcheck."""
    _, X_test, _ = digits
    module = lateral_regressor.to_torch()
    assert isinstance(module, SharedSIMModule)
    assert "A" not in dict(module.named_buffers())
    u = torch.as_tensor(X_test)
    with torch.no_grad():
        np.testing.assert_allclose(module(u).numpy(), lateral_regressor.predict(X_test),
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(module.equilibrium(u).numpy(),
                                   lateral_regressor.equilibrium(X_test), rtol=0,
                                   atol=1e-10)
    module = lateral_regressor.to_torch(tol=1e-13)
    v = torch.as_tensor(np.random.default_rng(0).uniform(size=(1, 64))).requires_grad_()
    assert torch.autograd.gradcheck(module, (v,), eps=1e-6, atol=1e-6, fast_mode=True)
    with pytest.warns(ConvergenceWarning, match="did not reach"):
        lateral_regressor.to_torch(max_iter=1)(u)


def test_pooled_relu_model_matches_block_equilibrium(digits, shared_regressor):
    """Max and average pooling stages, a shortcut link from the input and a
    lateral link into one block: the export equals sksim's block equilibrium
    and the estimator's predict (the model has no unrolled A_)."""
    _, X_test, _ = digits
    model = _pooled_model(_pooled_structure())
    estimator = _with_model(shared_regressor, model)
    with pytest.raises(ValueError, match="max-pooling"):
        estimator.A_  # noqa: B018
    states, _, _ = block_equilibrium(model, X_test, tol=1e-14, max_iter=10_000)
    expected = head_outputs(model, X_test, states)
    module = estimator.to_torch(tol=1e-14)
    u = torch.as_tensor(X_test)
    with torch.no_grad():
        np.testing.assert_allclose(module(u).numpy(), expected, rtol=0, atol=1e-10)
        np.testing.assert_allclose(module.equilibrium(u).numpy(), np.hstack(states),
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(module(u).numpy(), estimator.predict(X_test), rtol=0,
                                   atol=1e-10)
    reference_states, reference = _numpy_outputs(model, X_test)
    np.testing.assert_allclose(expected, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("activations", [
    (Activation(0.1, -INF, INF), Activation(0.2, -0.5, 0.5)),  # leaky, clipped leaky
    (Activation(0.0, 0.0, 0.3), Activation(1.0, -0.4, 0.4)),  # ReLU6-like, Hardtanh
])
def test_pooled_model_with_activations_matches_numpy(digits, shared_regressor,
                                                     activations):
    """Each block's activation, with pools and a lateral block, against the
    numpy maps of sksim.blocks; gradients by gradcheck (random inputs: no
    max-pooling ties)."""
    _, X_test, _ = digits
    model = _pooled_model(_pooled_structure(activations), seed=1)
    estimator = _with_model(shared_regressor, model)
    module = estimator.to_torch(tol=1e-14)
    u = torch.as_tensor(X_test)
    reference_states, reference = _numpy_outputs(model, X_test)
    with torch.no_grad():
        states = module.equilibrium(u).numpy()
        np.testing.assert_allclose(states, reference_states, rtol=0, atol=1e-10)
        np.testing.assert_allclose(module(u).numpy(), reference, rtol=0, atol=1e-10)
    # every part of the activations is reached
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in model.structure.block_shapes])
    for b, phi in enumerate(activations):
        block = states[:, sizes[b]:sizes[b + 1]]
        if phi.slope:
            assert np.any(block < 0)
        if phi.high < INF:
            assert np.any(block == phi.high)
        if phi.low > -INF and phi.slope:
            assert np.any(block == phi.low)
    v = torch.as_tensor(np.random.default_rng(2).normal(size=(1, 64))).requires_grad_()
    assert torch.autograd.gradcheck(module, (v,), eps=1e-6, atol=1e-6, fast_mode=True)
