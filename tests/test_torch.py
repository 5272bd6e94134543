"""TorchBaseline, export to torch, and distillation of torch teachers."""

import pickle
from itertools import pairwise

import numpy as np
import pytest
from helpers import digits_split
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from sksim import SIMClassifier, SIMRegressor, TorchBaseline
from sksim.baselines import mlp_forward

torch = pytest.importorskip("torch")
nn = torch.nn


def _mlp(sizes, bias=True, seed=0):
    torch.manual_seed(seed)
    layers = []
    for fan_in, fan_out in pairwise(sizes[:-1]):
        layers += [nn.Linear(fan_in, fan_out, bias=bias), nn.ReLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=bias))
    return nn.Sequential(*layers).double()


class _Nested(nn.Module):
    """An MLP whose layers live in nested containers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Linear(6, 5), nn.ReLU(),
                                  nn.Sequential(nn.Linear(5, 4), nn.ReLU()))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.body(x))


class _SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(1, 3, kernel_size=3)
        self.act1 = nn.ReLU()
        self.fc = nn.Linear(3 * 6 * 6, 5)
        self.act2 = nn.ReLU()
        self.out = nn.Linear(5, 4)

    def forward(self, x):
        h = self.act1(self.conv(x)).flatten(1)
        return self.out(self.act2(self.fc(h)))


def _hand_forward_mlp(module, X, batch_size):
    """Pre-activations of a Sequential MLP, written out layer by layer with the
    same torch kernels on the same batches (so equality can be exact), no hooks."""
    linears = [m for m in module if isinstance(m, nn.Linear)]
    all_states, all_outputs = [], []
    for start in range(0, len(X), batch_size):
        h, blocks = torch.as_tensor(X[start:start + batch_size]), []
        with torch.no_grad():
            for layer in linears[:-1]:
                z = nn.functional.linear(h, layer.weight, layer.bias)
                blocks.append(z)
                h = torch.relu(z)
            out = nn.functional.linear(h, linears[-1].weight, linears[-1].bias)
        all_states.append(torch.cat(blocks, dim=1).numpy())
        all_outputs.append(out.numpy())
    return np.vstack(all_states), np.vstack(all_outputs)


def _numpy_forward_mlp(module, X):
    """The same forward pass in plain numpy (equal up to summation order)."""
    linears = [m for m in module if isinstance(m, nn.Linear)]
    h, blocks = X, []
    for layer in linears:
        W = layer.weight.detach().numpy()
        b = 0 if layer.bias is None else layer.bias.detach().numpy()
        z = h @ W.T + b
        blocks.append(z)
        h = np.maximum(z, 0)
    return np.hstack(blocks[:-1]), blocks[-1]


@pytest.mark.parametrize("bias", [True, False])
def test_recorded_states_equal_hand_forward_mlp(bias):
    module = _mlp([6, 5, 4, 3], bias=bias)
    X = np.random.default_rng(0).normal(size=(50, 6))
    states, outputs = TorchBaseline(module, dtype="float64", batch_size=7).record(X)
    expected_states, expected_outputs = _hand_forward_mlp(module, X, 7)
    np.testing.assert_array_equal(states, expected_states)
    np.testing.assert_array_equal(outputs, expected_outputs)
    numpy_states, numpy_outputs = _numpy_forward_mlp(module, X)
    np.testing.assert_allclose(states, numpy_states, rtol=0, atol=1e-13)
    np.testing.assert_allclose(outputs, numpy_outputs, rtol=0, atol=1e-13)


def test_recorded_states_nested_modules():
    module = _Nested().double()
    X = np.random.default_rng(1).normal(size=(20, 6))
    states, outputs = TorchBaseline(module, dtype="float64").record(X)
    with torch.no_grad():
        z1 = nn.functional.linear(torch.as_tensor(X), module.body[0].weight,
                                  module.body[0].bias)
        z2 = nn.functional.linear(torch.relu(z1), module.body[2][0].weight,
                                  module.body[2][0].bias)
    np.testing.assert_array_equal(states, torch.cat([z1, z2], dim=1).numpy())
    assert outputs.shape == (20, 3)


def test_recorded_states_equal_hand_forward_cnn():
    module = _SmallCNN().double()
    X = np.random.default_rng(2).normal(size=(9, 64))
    states, outputs = TorchBaseline(module, input_shape=(1, 8, 8), dtype="float64",
                                    batch_size=16).record(X)
    images = torch.as_tensor(X.reshape(9, 1, 8, 8))
    with torch.no_grad():
        z1 = nn.functional.conv2d(images, module.conv.weight, module.conv.bias)
        z2 = nn.functional.linear(torch.relu(z1).flatten(1), module.fc.weight,
                                  module.fc.bias)
        out = nn.functional.linear(torch.relu(z2), module.out.weight, module.out.bias)
    z1 = z1.numpy().reshape(9, -1)
    np.testing.assert_array_equal(states, np.hstack([z1, z2.numpy()]))
    np.testing.assert_array_equal(outputs, out.numpy())
    # A convolution is a linear map: check it by hand on one output unit too.
    kernel = module.conv.weight.detach().numpy()[0, 0]
    patch = X[0].reshape(8, 8)[:3, :3]
    assert np.isclose(z1[0, 0], (kernel * patch).sum() + module.conv.bias[0].item())


def test_clear_errors():
    X = np.zeros((4, 6))

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 2)

        def forward(self, x):
            return torch.nn.functional.gelu(self.lin(x))

    with pytest.raises(ValueError, match="gelu is not supported"):
        TorchBaseline(Functional()).record(X)

    class Leaky(nn.ReLU):
        def forward(self, x):
            return torch.where(x > 0, x, 0.1 * x)

    with pytest.raises(ValueError, match="a ReLU model would silently differ"):
        TorchBaseline(nn.Sequential(nn.Linear(6, 3), Leaky(), nn.Linear(3, 1))).record(
            np.random.default_rng(0).normal(size=(4, 6)))
    with pytest.raises(ValueError, match="input_shape"):
        TorchBaseline(_SmallCNN(), input_shape=(1, 8, 8)).record(np.zeros((2, 60)))
    with pytest.raises(ValueError, match=r"fails on inputs of shape \(3, 6\)"):
        TorchBaseline(_mlp([5, 3, 1]).float()).record(np.zeros((3, 6)))

    class NaNModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(x) * float("nan")

    with pytest.raises(ValueError, match="non-finite"):
        TorchBaseline(NaNModule()).record(np.ones((2, 3)))


def test_recording_runs_the_module_in_eval_mode():
    """Dropout and BatchNorm behave as at inference: two recordings are
    identical and equal the module's eval-mode forward; the module's
    training flag and running statistics are left as they were."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5),
                           nn.Linear(8, 5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 3))
    with torch.no_grad():  # non-trivial running statistics
        module[1].running_mean.uniform_(-1, 1)
        module[1].running_var.uniform_(0.5, 2)
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    baseline = TorchBaseline(module, batch_size=16)
    states_1, outputs_1 = baseline.record(X)
    states_2, outputs_2 = baseline.record(X)
    np.testing.assert_array_equal(states_1, states_2)
    np.testing.assert_array_equal(outputs_1, outputs_2)
    assert module.training
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key
    module.eval()
    with torch.no_grad():
        expected = module(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(outputs_1, expected, rtol=1e-6, atol=1e-6)


def test_torch_state_scales_make_the_teacher_well_posed(digits_teacher):
    """A chain teacher's states are rescaled block by block as an sklearn
    MLP's are: the scales written out from its weights, its own A within
    kappa in the scaled units, its logits unchanged, and the model fitted on
    exactly those scaled states."""
    module, X_train, _, y_train, _ = digits_teacher
    baseline = TorchBaseline(module)
    model = SIMClassifier(baseline, alpha=1e-2).fit(X_train, y_train)
    linears = [m for m in module if isinstance(m, nn.Linear)]
    weights = [layer.weight.detach().double().numpy() for layer in linears]
    second = min(1.0, 0.95 / np.abs(weights[1]).sum(axis=1).max())
    assert second < 1.0  # the trained teacher is not well posed as recorded
    np.testing.assert_allclose(model.state_scales_,
                               np.r_[np.ones(32), np.full(16, second)], rtol=1e-12)
    assert np.abs(weights[1] * second).sum(axis=1).max() <= 0.95 * (1 + 1e-12)
    states, logits = baseline.record(X_train)
    scaled = states * model.state_scales_
    bias = linears[2].bias.detach().double().numpy()
    np.testing.assert_allclose(np.maximum(scaled[:, 32:], 0) / second @ weights[2].T + bias,
                               logits, rtol=1e-5, atol=1e-5)
    given = SIMClassifier(alpha=1e-2).fit(X_train, y_train, states=scaled,
                                         baseline_outputs=logits)
    assert abs(model.A_ - given.A_).max() == 0 and abs(model.C_ - given.C_).max() == 0
    assert given.state_scales_ is None and given.baseline_ is None


class _Residual(nn.Module):
    """A residual MLP: the second ReLU reads the first block twice."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(64, 16), nn.Linear(16, 16)
        self.out = nn.Linear(16, 10)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        h = self.relu1(self.first(x))
        return self.out(self.relu2(self.second(h) + h))


def test_state_scales_of_a_residual_teacher_make_it_well_posed(digits_teacher):
    """A residual teacher fitted flat: its graph gives the scales (the second
    block reads the first through its layer and the identity shortcut), and
    the teacher's own A, rescaled, meets kappa."""
    _, X_train, _, y_train, _ = digits_teacher
    torch.manual_seed(0)
    teacher = _Residual()
    model = SIMClassifier(TorchBaseline(teacher), alpha=1e-2, kappa=0.9,
                          weight_sharing=False).fit(X_train, y_train)
    scales = model.state_scales_
    assert scales is not None and np.all(scales[:16] == 1.0)
    second = teacher.second.weight.detach().double().numpy() + np.eye(16)
    rescaled = np.abs(second) * scales[16:, None] / scales[None, :16]
    assert rescaled.sum(axis=1).max() <= 0.9 * (1 + 1e-12)


def test_state_scales_are_none_for_a_teacher_whose_graph_is_not_a_model(digits_teacher):
    _, X_train, _, y_train, _ = digits_teacher

    class Concatenating(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(64, 8), nn.Linear(64, 8)
            self.relu_a, self.relu_b = nn.ReLU(), nn.ReLU()
            self.out = nn.Linear(16, 10)

        def forward(self, x):
            return self.out(torch.cat([self.relu_a(self.a(x)), self.relu_b(self.b(x))], 1))

    torch.manual_seed(0)
    model = SIMClassifier(TorchBaseline(Concatenating()), alpha=1e-2,
                          weight_sharing=False).fit(X_train, y_train)
    assert model.state_scales_ is None


def _well_posed_teacher(kappa_teacher, seed=0):
    """A ReLU MLP rescaled (ReLU is positively homogeneous) so that its own
    hidden-to-hidden weights have row L1 norms <= kappa_teacher; the scale is
    moved into the last layer, so the outputs do not change."""
    module = _mlp([8, 10, 6, 2], seed=seed)
    linears = [m for m in module if isinstance(m, nn.Linear)]
    with torch.no_grad():
        scale = 1.0
        for layer in linears[1:-1]:
            norm = layer.weight.abs().sum(dim=1).max().item()
            ratio = kappa_teacher / norm
            layer.weight.mul_(ratio)
            layer.bias.mul_(scale * ratio)
            scale *= ratio
        linears[-1].weight.div_(scale)
    return module


def test_feasible_teacher_is_reproduced():
    """Known answer: a well-posed teacher is a feasible SIM model, so with tiny
    alpha and kappa just above its scale SIM reproduces its outputs."""
    module = _well_posed_teacher(0.8)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 8))
    baseline = TorchBaseline(module, dtype="float64")
    _, outputs = baseline.record(X)
    model = SIMRegressor(baseline, alpha=1e-10, kappa=0.81, tol=1e-10,
                         max_iter=200000).fit(X, outputs)
    X_new = rng.normal(size=(200, 8))
    _, expected = baseline.record(X_new)
    predicted = model.predict(X_new)
    # Relative error in norm. (Elementwise, outputs near zero are limited by
    # the Gram formulation: objective accuracy eps gives residuals ~sqrt(eps).)
    relative = np.linalg.norm(predicted - expected) / np.linalg.norm(expected)
    assert relative <= 1e-6, relative
    states, _ = baseline.record(X_new)
    np.testing.assert_allclose(model.equilibrium(X_new), np.maximum(states, 0),
                               atol=1e-6 * np.abs(states).max())
    assert np.abs(model.A_).sum(axis=1).max() <= 0.81


@pytest.fixture(scope="module")
def digits_teacher():
    X_train, X_test, y_train, y_test = digits_split()
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                           nn.Linear(16, 10))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    inputs = torch.as_tensor(X_train, dtype=torch.float32)
    targets = torch.as_tensor(y_train)
    for _ in range(300):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(module(inputs), targets)
        loss.backward()
        optimizer.step()
    return module, X_train, X_test, y_train, y_test


def test_sim_agrees_with_torch_teacher_on_digits(digits_teacher):
    module, X_train, X_test, y_train, _ = digits_teacher
    baseline = TorchBaseline(module)
    _, train_logits = baseline.record(X_train)
    # Distillation: the output rows fit the teacher's logits (the paper's choice).
    model = SIMClassifier(baseline, alpha=1e-4).fit(X_train, y_train,
                                                   baseline_outputs=train_logits)
    _, logits = baseline.record(X_test)
    agreement = np.mean(model.predict(X_test) == logits.argmax(axis=1))
    assert agreement >= 0.97, agreement
    assert model.baseline_ is baseline


def test_gridsearch_does_not_copy_or_retrain(digits_teacher):
    module, X_train, _, y_train, _ = digits_teacher
    before = {k: v.clone() for k, v in module.state_dict().items()}
    baseline = TorchBaseline(module)
    search = GridSearchCV(SIMClassifier(baseline), {"alpha": [1e-3, 1e-2]}, cv=2)
    search.fit(X_train, y_train)
    assert search.best_estimator_.baseline is baseline
    assert search.best_estimator_.baseline.module is module
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key])


def test_pickle_with_torch_baseline(digits_teacher):
    module, X_train, X_test, y_train, _ = digits_teacher
    model = SIMClassifier(TorchBaseline(module), alpha=1e-3).fit(X_train, y_train)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.decision_function(X_test),
                                  model.decision_function(X_test))


@pytest.mark.parametrize("sparse", [None, True, False])
def test_to_torch_matches_numpy(digits_teacher, sparse):
    _, X_train, X_test, y_train, _ = digits_teacher
    model = SIMClassifier(alpha=1e-3, random_state=0).fit(X_train, y_train)
    expected = model._raw_outputs(X_test)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        module = model.to_torch(dtype=dtype, sparse=sparse)
        buffers = dict(module.named_buffers())
        for name in ("A", "B", "C", "D"):
            matrix = getattr(model, name + "_")
            # sparse=None: sparse storage exactly for matrices under 5% dense
            expect_sparse = (matrix.nnz < 0.05 * matrix.shape[0] * matrix.shape[1]
                             if sparse is None else sparse)
            assert buffers[name].is_sparse == expect_sparse, name
            assert buffers[name].dtype == dtype
            np.testing.assert_array_equal(buffers[name].to_dense().double().numpy(),
                                          matrix.toarray().astype(
                                              np.float32 if dtype == torch.float32
                                              else np.float64))
        with torch.no_grad():
            got = module(torch.as_tensor(X_test, dtype=dtype)).numpy()
        # relative to the outputs' scale (logits of the teacher, ~10 here)
        assert np.abs(got - expected).max() <= tol * max(1.0, np.abs(expected).max())
    module = model.to_torch()
    states = module.equilibrium(torch.as_tensor(X_test)).numpy()
    np.testing.assert_allclose(states, model.equilibrium(X_test), atol=1e-10)


def test_to_torch_gradcheck_with_feedback():
    """Implicit differentiation through an equilibrium that needs iterations."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 5))
    Z = np.hstack([X @ rng.normal(size=(5, 4)), rng.normal(size=(200, 4))])
    model = SIMRegressor(alpha=1e-3, kappa=0.9).fit(X, X[:, 0] ** 2, states=Z)
    import scipy.sparse as sp

    A = model.A_.toarray()
    A[0, 7] = A[7, 0] = 0.3  # feedback: a cycle through states 0 and 7
    A *= 0.9 / max(0.9, np.abs(A).sum(axis=1).max())
    model.A_ = sp.csr_array(A)
    module = model.to_torch()
    u = torch.as_tensor(rng.normal(size=(4, 5)), dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(module, (u,), eps=1e-6, atol=1e-6)
    # The torch equilibrium matches the numpy one on this cyclic A.
    np.testing.assert_allclose(module.equilibrium(u.detach()).numpy(),
                               model.equilibrium(u.detach().numpy()), atol=1e-10)


def test_to_torch_feedforward_is_one_pass_and_differentiable():
    """A feed-forward model's module computes the states block by block (no
    fixed-point loop: max_iter=1 would stop any), equal to predict's."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 6))
    Z = np.maximum(X @ rng.normal(size=(6, 5)), 0.0)
    Z = np.hstack([Z, np.maximum(Z @ rng.normal(size=(5, 4)), 0.0)])
    model = SIMRegressor(alpha=1e-3, structure="feedforward", state_blocks=[5, 4]).fit(
        X, X[:, 0] - Z[:, -1], states=Z)
    module = model.to_torch(max_iter=1)
    assert module.forward_blocks == [(0, 5), (5, 9)]
    u = torch.as_tensor(X[:20])
    with torch.no_grad():
        np.testing.assert_allclose(module(u).numpy().ravel(), model.predict(X[:20]),
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(module.equilibrium(u).numpy(), model.equilibrium(X[:20]),
                                   rtol=0, atol=1e-12)
    u = u[:4].clone().requires_grad_()
    assert torch.autograd.gradcheck(module, (u,), eps=1e-6, atol=1e-6)


def test_to_torch_cpu_uses_the_gauss_seidel_kernel(digits_teacher):
    """On CPU the implicit equilibrium is sksim's kernel (same states as the
    estimator's to rounding), the Jacobi loop for other devices reaches the same
    point, tol/max_iter are settable (too few sweeps warn), and the module
    pickles."""
    _, X_train, X_test, y_train, _ = digits_teacher
    model = SIMClassifier(alpha=1e-3, random_state=0).fit(X_train, y_train)
    assert model.to_torch().forward_blocks is None  # feedback: iterative
    module = model.to_torch(tol=1e-13)
    u = torch.as_tensor(X_test)
    expected = model.set_params(equilibrium_tol=1e-13).equilibrium(X_test)
    with torch.no_grad():
        np.testing.assert_allclose(module.equilibrium(u).numpy(), expected, rtol=0,
                                   atol=1e-12)
        drive = u @ module.B.to_dense().T + module.state_intercept
        np.testing.assert_allclose(module._jacobi(drive).numpy(), expected, rtol=0,
                                   atol=1e-10)
    restored = pickle.loads(pickle.dumps(module))
    with torch.no_grad():
        np.testing.assert_array_equal(restored(u).numpy(), module(u).numpy())
    with pytest.warns(ConvergenceWarning, match="max_iter=1 sweeps"):
        model.to_torch(max_iter=1).equilibrium(u)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
@pytest.mark.parametrize("teacher_kind", ["torch", "torch_residual", "sklearn"])
def test_state_scaling_rms_and_none(digits_teacher, teacher_kind):
    """state_scaling="rms": each teacher block's activated states have unit
    RMS over the training samples (any block structure, residual modules
    too), the teacher's logits are still a function of the scaled states, and
    the fit equals one on those scaled states; "none" keeps them as recorded."""
    from sklearn.frozen import FrozenEstimator
    from sklearn.neural_network import MLPClassifier

    module, X_train, _, y_train, _ = digits_teacher
    if teacher_kind == "sklearn":
        mlp = MLPClassifier(hidden_layer_sizes=(24, 12), max_iter=300, random_state=0)
        baseline = FrozenEstimator(mlp.fit(X_train, y_train))
        sizes = [24, 12]
        states, logits = mlp_forward(mlp.coefs_, mlp.intercepts_, X_train)
    else:
        torch.manual_seed(0)
        net = _Residual() if teacher_kind == "torch_residual" else module
        baseline = TorchBaseline(net)
        sizes = [16, 16] if teacher_kind == "torch_residual" else [32, 16]
        states, logits = baseline.record(X_train)
    model = SIMClassifier(baseline, alpha=1e-2, state_scaling="rms",
                          weight_sharing=False).fit(X_train, y_train)
    edges = np.cumsum([0] + sizes)
    scaled = states * model.state_scales_
    for a, b in pairwise(edges):
        assert np.unique(model.state_scales_[a:b]).size == 1
        np.testing.assert_allclose(np.sqrt(np.mean(np.maximum(scaled[:, a:b], 0) ** 2)),
                                   1.0, rtol=1e-12)
    given = SIMClassifier(alpha=1e-2).fit(X_train, y_train, states=scaled,
                                         baseline_outputs=logits)
    assert abs(model.A_ - given.A_).max() == 0 and abs(model.C_ - given.C_).max() == 0
    plain = SIMClassifier(baseline, alpha=1e-2, state_scaling="none",
                          weight_sharing=False).fit(X_train, y_train)
    assert plain.state_scales_ is None
    unscaled = SIMClassifier(alpha=1e-2).fit(X_train, y_train, states=states,
                                            baseline_outputs=logits)
    assert abs(plain.A_ - unscaled.A_).max() == 0


@pytest.mark.parametrize("state_scaling", ["well_posed", "rms", "none"])
def test_streamed_and_in_memory_fits_record_a_torch_teacher_alike(tmp_path, state_scaling):
    """One record per kind of teacher (sksim._teachers): a memmap fit, which
    records the teacher chunk by chunk, finds the same blocks and state
    scales as the in-memory fit (the rms scales up to summation order)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    y = np.arange(50) % 3
    baseline = TorchBaseline(_mlp([4, 6, 5, 3]), dtype="float64")
    np.save(tmp_path / "X.npy", X)
    X_memmap = np.load(tmp_path / "X.npy", mmap_mode="r")
    in_memory = SIMClassifier(baseline, state_scaling=state_scaling).fit(X, y)
    streamed = SIMClassifier(baseline, state_scaling=state_scaling).fit(X_memmap, y)
    assert in_memory._teacher_blocks == streamed._teacher_blocks == [6, 5]
    if state_scaling == "none":
        assert in_memory.state_scales_ is None and streamed.state_scales_ is None
    else:
        np.testing.assert_allclose(streamed.state_scales_, in_memory.state_scales_,
                                   rtol=0 if state_scaling == "well_posed" else 1e-12)
