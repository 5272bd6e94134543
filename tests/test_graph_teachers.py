"""Teachers read as graphs (torch.fx): residual shortcuts, pooling, functional
activations, leaky and clipped activations, in-place operations.

For every construct: the traced teacher (BatchNorm folded) is a feasible
point of its own weight-shared model (recorded pre-activations = the
structure's evaluation, rescaled kernels within kappa); the fitted model
equals its unrolled flat model where that exists, with ||A||_inf <= kappa
exactly; save/load gives the same model; what is refused is refused with a
clear error."""

import math

import numpy as np
import pytest
from helpers import assert_equals_unrolled, exact_inf_norm

from sksim import SIMClassifier, SIMRegressor, load_model, save_model
from sksim.blocks import INPUT, Activation, Pool, link_patches, per_state

torch = pytest.importorskip("torch")
nn = torch.nn
F = nn.functional
from sksim import TorchBaseline  # noqa: E402
from sksim import weight_sharing as ws  # noqa: E402


# ------------------------------------------------------------------ teachers
class _BasicBlock(nn.Module):
    """torchvision's BasicBlock: one in-place ReLU used twice, ``out += identity``,
    a 1x1 conv + BatchNorm projection when the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class _ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.relu = nn.ReLU(inplace=True)
        self.layers = nn.ModuleList([_BasicBlock(3, 3, 1), _BasicBlock(3, 4, 2)])
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for layer in self.layers:
            x = layer(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class _OptionA(nn.Module):
    """The original CIFAR ResNet shortcut: subsample by 2, zero channels."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = F.relu(self.conv0(x))
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 1, 1))
        x = torch.relu(self.bn(self.conv1(x)) + shortcut)
        return self.fc(x.view(x.size(0), -1))


class _Functional(nn.Module):
    """Functional and method activations, in place or not, nested containers,
    Dropout and Identity, a reshape."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1)),
                                      nn.Dropout(0.5), nn.Identity())
        self.conv = nn.Conv2d(3, 3, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(3 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        x = self.features(x).relu()
        x = F.relu(self.conv(x), inplace=True)
        x = x.reshape(x.shape[0], -1)
        x = torch.relu_(self.fc1(x))
        return self.fc2(x)


class _FunctionalOps(nn.Module):
    """Layers and pools as functions: F.conv2d with a parameter of the module,
    F.max_pool2d, F.avg_pool2d, a global mean, F.linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3) / 5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        x = F.avg_pool2d(F.relu(F.conv2d(x, self.weight, padding=1)), 2, 2)
        return F.linear(x.mean((2, 3)), self.fc.weight, self.fc.bias)


def _vgg():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 2 * 2, 3))


def _avg_pooled():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(),
                         nn.AvgPool2d(3, stride=2, padding=1),
                         nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 2 * 2, 3))


def _leaky_mlp():
    return nn.Sequential(nn.Linear(64, 12), nn.LeakyReLU(0.1), nn.Linear(12, 8),
                         nn.LeakyReLU(0.2), nn.Linear(8, 3))


def _clipped():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU6(),
                         nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Hardtanh(-0.5, 0.5),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


TEACHERS = {"resnet": _ResNet, "option_a": _OptionA, "functional": _Functional,
            "functional_ops": _FunctionalOps,
            "vgg": _vgg, "avg_pooled": _avg_pooled, "leaky_mlp": _leaky_mlp,
            "clipped": _clipped}
SHAPES = {"leaky_mlp": (64,)}


def _teacher(name, seed=0):
    torch.manual_seed(seed)
    module = TEACHERS[name]().double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # BatchNorm statistics that fold into something nontrivial
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                n = layer.num_features
                layer.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                layer.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                layer.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                layer.bias.copy_(torch.rand(n, generator=generator) - 0.5)
    shape = SHAPES.get(name, (1, 8, 8))
    return TorchBaseline(module.eval(), input_shape=shape, dtype="float64")


def _data(n=60, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 64))


def _maps_model(maps):
    return ws.SharedModel(maps.structure, maps.kernels, maps.biases, maps.head_kernels,
                          maps.head_bias)


_exact_inf_norm = exact_inf_norm


# ---------------------------------------------------------------- the reading
@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_teacher_is_a_feasible_point_of_its_own_structure(name):
    """Recorded pre-activations and outputs equal the structure evaluated with
    the folded teacher kernels (block by block through its activations), and
    the well-posed scales bring every rescaled state row within kappa."""
    baseline = _teacher(name)
    X = _data()
    maps = baseline.trace(X)
    states, outputs = baseline.record(X)
    model = _maps_model(maps)
    post, _, _ = ws.block_equilibrium(model, X, tol=0.0, max_iter=1)
    bias = np.concatenate([per_state(b, s) for b, s in zip(maps.biases,
                                                             maps.structure.block_shapes)])
    activations = [maps.structure.activation(b) for b in range(len(post))]
    edges = np.cumsum([0, *maps.structure.block_sizes()])
    for b, activation in enumerate(activations):
        np.testing.assert_allclose(post[b], activation(states[:, edges[b]:edges[b + 1]]),
                                   rtol=0, atol=1e-12)
    np.testing.assert_allclose(ws.head_outputs(model, X, post), outputs, rtol=0, atol=1e-12)
    assert np.isfinite(bias).all()
    kappa = 0.9
    scales = ws.block_scales(maps.structure, maps.kernels, kappa)
    for b, (links, kernels) in enumerate(zip(maps.structure.links, maps.kernels)):
        rows = sum(np.abs(k).sum(axis=1) * scales[b] / scales[link.source]
                   for link, k in zip(links, kernels) if link.source != INPUT)
        if not np.isscalar(rows):
            assert rows.max() <= kappa * (1 + 1e-12)


def test_what_each_teacher_is_read_as():
    resnet = _teacher("resnet").trace(_data())
    links = resnet.structure.links
    assert len(links) == 5  # stem, 2 per block: the reused ReLU is two blocks
    assert [(link.source, link.kind, link.kernel_size, link.stride)
            for link in links[2]] == [(1, "conv", 3, 1), (0, "conv", 1, 1)]
    np.testing.assert_array_equal(resnet.kernels[2][1], np.eye(3))  # identity shortcut
    assert [(link.source, link.kernel_size, link.stride) for link in links[4]] == \
        [(3, 3, 1), (2, 1, 2)]  # the 1x1 projection, BatchNorm folded
    option_a = _teacher("option_a").trace(_data())
    shortcut = option_a.structure.links[1][1]
    assert (shortcut.source, shortcut.kind, shortcut.kernel_size, shortcut.stride) == \
        (0, "conv", 1, 2)
    expected = np.zeros((4, 2))
    expected[1:3] = np.eye(2)  # zero channels on both sides
    np.testing.assert_array_equal(option_a.kernels[1][1], expected)
    vgg = _teacher("vgg").trace(_data())
    assert vgg.structure.links[1][0].pool == (Pool("max", 2, 2, 0),)
    assert vgg.structure.head[0].pool == (Pool("max", 2, 2, 0),)
    avg = _teacher("avg_pooled").trace(_data())
    assert avg.structure.links[1][0].pool == (Pool("avg", 3, 2, 1),)
    assert _teacher("leaky_mlp").trace(_data()).structure.activations == (
        Activation(0.1, -np.inf, np.inf), Activation(0.2, -np.inf, np.inf))
    assert _teacher("clipped").trace(_data()).structure.activations == (
        Activation(0.0, 0.0, 6.0), Activation(1.0, -0.5, 0.5))
    assert len(_teacher("functional").trace(_data()).structure.links) == 3


def test_in_place_activations_are_recorded_before_they_overwrite():
    """torchvision's ``nn.ReLU(inplace=True)`` and ``relu_``: the recorded
    pre-activations are the pre-activations (negative entries survive), on
    the graph path and on the hook path of a graph that cannot be read."""
    X = _data()
    states, _ = _teacher("resnet").record(X)
    assert states.min() < 0

    class Concatenating(nn.Module):  # torch.cat: not a SIM graph, hooks record it
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 5), nn.Linear(64, 5)
            self.relu = nn.ReLU(inplace=True)
            self.act = nn.ReLU(inplace=True)
            self.out = nn.Linear(10, 3)

        def forward(self, x):
            return self.out(torch.cat([self.relu(self.fc1(x)), self.act(self.fc2(x))], 1))

    torch.manual_seed(0)
    module = Concatenating().double().eval()
    baseline = TorchBaseline(module, dtype="float64")
    with pytest.raises(ValueError, match="cat"):
        baseline.trace(X)
    states, _ = baseline.record(X)
    expected = np.hstack([(torch.from_numpy(X) @ layer.weight.T + layer.bias).detach()
                          .numpy() for layer in (module.fc1, module.fc2)])
    np.testing.assert_allclose(states, expected, atol=1e-12)
    with pytest.warns(UserWarning, match="flat .* model is fitted instead"):
        SIMClassifier(baseline, alpha=1e-2).fit(X, np.arange(60) % 3)


# ------------------------------------------------------------------ the fits
def _fit(name, **params):
    baseline = _teacher(name)
    X = _data()
    _, outputs = baseline.record(X)
    params = {"alpha": 1e-4, "kappa": 0.6, **params}
    return SIMRegressor(baseline, **params).fit(X, outputs, baseline_outputs=outputs), X


@pytest.mark.parametrize("name", ["resnet", "option_a", "functional", "avg_pooled"])
def test_fitted_model_equals_its_unrolled_flat_model(name):
    model, _ = _fit(name)
    assert model._is_weight_shared()
    A, B, C, D = model.A_, model.B_, model.C_, model.D_
    assert _exact_inf_norm(A) <= 0.6
    assert_equals_unrolled(model, _data(25, seed=1))
    norm = _exact_inf_norm
    path = np.abs(C.toarray()) @ np.linalg.solve(
        np.eye(A.shape[0]) - np.abs(A.toarray()), np.abs(B.toarray())) + np.abs(D.toarray())
    # equal without pooling; overlapping average pools make the kernels' bound
    # (|K| then the pool) larger than that of the unrolled |K pool|
    assert path.sum(axis=1).max() <= model.lipschitz_path_bound_ * (1 + 1e-9)
    if name != "avg_pooled":
        assert model.lipschitz_path_bound_ == pytest.approx(path.sum(axis=1).max(),
                                                            rel=1e-9)
    unrolled_bound = norm(C) * norm(B) / (1 - norm(A)) + norm(D)
    assert unrolled_bound <= model.lipschitz_bound_ * (1 + 1e-12)
    if name != "avg_pooled":
        assert model.lipschitz_bound_ == pytest.approx(unrolled_bound, rel=1e-12)


def test_fitted_model_agrees_with_the_teacher_at_small_alpha():
    for name in ("resnet", "vgg", "leaky_mlp", "clipped", "option_a"):
        baseline = _teacher(name)
        X = _data(200)
        _, outputs = baseline.record(X)
        model = SIMRegressor(baseline, alpha=1e-7, kappa=0.95).fit(
            X, outputs, baseline_outputs=outputs)
        X_new = _data(50, seed=2)
        _, expected = baseline.record(X_new)
        error = np.abs(model.predict(X_new) - expected).max()
        assert error <= 0.05 * np.abs(expected).max(), (name, error)


def test_max_pooled_model_works_without_unrolled_matrices(tmp_path):
    model, X = _fit("vgg")
    assert model.structure_.has_max_pool()
    with pytest.raises(ValueError, match="max-pooling stage is not a linear map"):
        _ = model.A_
    a_norm = ws.unrolled_norms(model._shared_model)[0]
    assert a_norm <= 0.6
    assert np.isfinite(model.lipschitz_path_bound_)
    path = tmp_path / "vgg.sksim"
    save_model(model, path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.structure_ == model.structure_


def test_path_bound_holds_through_max_pooling():
    """The certified path bound bounds the outputs' change under input
    perturbations, through max pooling and the activations."""
    model, X = _fit("vgg")
    rng = np.random.default_rng(5)
    delta = 1e-3
    for _ in range(20):
        step = rng.choice([-delta, delta], size=X.shape)
        change = np.abs(model.predict(X + step) - model.predict(X)).max(axis=1)
        assert change.max() <= model.lipschitz_path_bound_ * delta * (1 + 1e-9)


@pytest.mark.parametrize("name", ["leaky_mlp", "clipped"])
def test_leaky_and_clipped_activations_are_fitted_as_the_teachers(name, tmp_path):
    """The fitted blocks use the teacher's activations (thresholds of clipped
    ones in the blocks' scaled units), and the model survives save/load."""
    model, X = _fit(name)
    teacher = _teacher(name).trace(X).structure.activations
    for fitted, original, scale in zip(model.structure_.activations, teacher,
                                       model.block_scales_):
        assert fitted == original.scaled(scale)
    path = tmp_path / f"{name}.sksim"
    save_model(model, path)
    np.testing.assert_array_equal(load_model(path).predict(X), model.predict(X))


@pytest.mark.parametrize("name", ["resnet", "option_a", "avg_pooled"])
def test_save_load_equal(name, tmp_path):
    model, X = _fit(name)
    path = tmp_path / f"{name}.sksim"
    save_model(model, path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.structure_ == model.structure_


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_residual_block_rows_match_cvxpy_on_the_patch_design(gamma):
    """A residual block's rows (a 3x3 conv link and the 1x1 shortcut link, one
    row problem over both) on the streamed Gram reach the optimum of each
    row's problem on the explicit patch design (cvxpy + Clarabel); with
    ``gamma > 0`` under the adaptive L1 weights of ``adaptive_l1=gamma``."""
    cp = pytest.importorskip("cvxpy")
    baseline = _teacher("resnet")
    X = _data(40)
    maps = baseline.trace(X)
    structure = ws.fitting_structure(maps.structure)
    scales = ws.block_scales(structure, maps.kernels, 0.95)
    block, kappa, alpha = 2, 0.5, 1e-3
    factors = (None if gamma == 0 else
               ws.adaptive_l1_factors(maps, structure, scales, block, gamma))
    problems = ws.accumulate_block_problems(
        structure, ((X[rows], pre) for rows, pre, _ in baseline.iter_batches(X)),
        scales, fit_intercept=True, blocks=[block])
    kernels, intercept, rows = ws.solve_block_rows(
        structure, structure.links[block], problems[0], alpha=alpha, l1_ratio=1.0,
        kappa=kappa, row_bound=np.inf, tol=1e-10, max_iter=100_000, l1_factors=factors)
    assert np.all(rows.status == 0)
    states, _ = baseline.record(X)
    edges = np.cumsum([0, *structure.block_sizes()])
    post = [np.maximum(states[:, a:b] * s, 0.0) for a, b, s in zip(edges, edges[1:], scales)]
    W = np.hstack([link_patches(structure, link, post[link.source])
                   for link in structure.links[block]])
    channels = structure.block_shapes[block][0]
    Z = (states[:, edges[block]:edges[block + 1]] * scales[block]).reshape(
        len(X), channels, -1).transpose(0, 2, 1).reshape(-1, channels)
    coef = np.hstack(kernels)
    weights = np.ones_like(coef) if factors is None else factors
    for c in range(channels):
        w, b = cp.Variable(W.shape[1]), cp.Variable()
        objective = (cp.sum_squares(Z[:, c] - W @ w - b) / (2 * len(Z))
                     + alpha * cp.sum(cp.multiply(weights[c], cp.abs(w))))
        problem = cp.Problem(cp.Minimize(objective), [cp.norm1(w) <= kappa])
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                      tol_feas=1e-12)
        residual = Z[:, c] - W @ coef[c] - intercept[c]
        ours = residual @ residual / (2 * len(Z)) + alpha * np.sum(weights[c] * np.abs(coef[c]))
        assert abs(ours - problem.value) <= 1e-6 * problem.value, (c, ours, problem.value)
        assert math.fsum(np.abs(coef[c])) <= kappa


def test_flat_fit_keeps_mlp_teachers_flat_and_refuses_other_activations():
    plain = TorchBaseline(nn.Sequential(nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 3))
                          .double().eval(), dtype="float64")
    X = _data()
    y = np.arange(60) % 3
    assert not SIMClassifier(plain, alpha=1e-2).fit(X, y)._is_weight_shared()
    with pytest.raises(ValueError, match="weight_sharing=False fits a flat ReLU model"):
        SIMClassifier(_teacher("leaky_mlp"), weight_sharing=False).fit(X, y)


# ------------------------------------------------------------------ refusals
def test_unsupported_activations_are_refused_by_name():
    X = _data(8)
    gelu = nn.Sequential(nn.Linear(64, 4), nn.GELU(), nn.Linear(4, 3))
    for weight_sharing in ("auto", False, True):
        with pytest.raises(ValueError, match="GELU is not supported.*monotone"):
            SIMClassifier(TorchBaseline(gelu), weight_sharing=weight_sharing).fit(
                X, [0, 1, 2] * 2 + [0, 1])

    class Silu(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc2(F.silu(self.fc1(x)))

    with pytest.raises(ValueError, match="silu is not supported"):
        TorchBaseline(Silu()).trace(X.astype(np.float32))
    tanh = nn.Sequential(nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="activations: Tanh is not supported"):
        TorchBaseline(tanh, activations=(nn.Tanh,)).record(X.astype(np.float32))
    with pytest.raises(ValueError, match="Tanh is not supported"):
        SIMClassifier(TorchBaseline(tanh)).fit(X, [0, 1, 2] * 2 + [0, 1])
    with pytest.raises(ValueError, match="slope outside"):
        TorchBaseline(nn.Sequential(nn.Linear(64, 4), nn.LeakyReLU(-0.5),
                                    nn.Linear(4, 3))).trace(X.astype(np.float32))
    leaky = nn.Sequential(nn.Linear(64, 4), nn.LeakyReLU(0.1), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"activations=\['ReLU'\] but the teacher also "
                                         "has LeakyReLU"):
        TorchBaseline(leaky, activations=(nn.ReLU,)).trace(X.astype(np.float32))
    shifted = nn.Sequential(nn.Linear(64, 4), nn.Hardtanh(0.5, 6.0), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"low <= 0 <= high"):  # phi(0) = 0.5
        TorchBaseline(shifted).trace(X.astype(np.float32))


def test_unsupported_operations_are_refused_by_node():
    X = _data(8).astype(np.float32)
    pool_first = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU(),
                               nn.Flatten(), nn.Linear(18, 3))
    with pytest.raises(ValueError, match="pooling between a layer and its activation"):
        TorchBaseline(pool_first, input_shape=(1, 8, 8)).trace(X)
    norm_after = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2).eval(),
                               nn.Flatten(), nn.Linear(72, 3))
    with pytest.raises(ValueError, match="BatchNorm must directly follow"):
        TorchBaseline(norm_after, input_shape=(1, 8, 8)).trace(X)

    class Branching(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.fc(x)
            return -self.fc(x)

    with pytest.raises(ValueError, match="could not trace.*if x.sum"):
        TorchBaseline(Branching()).trace(X)


def test_missing_or_wrong_input_shape_names_input_shape():
    X = _data(8).astype(np.float32)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    for shape in (None, (8, 8)):
        with pytest.raises(ValueError, match="input_shape"):
            SIMClassifier(TorchBaseline(cnn, input_shape=shape)).fit(X, [0, 1, 2] * 2 + [0, 1])
    with pytest.raises(ValueError, match="input_shape must be a tuple of positive"):
        TorchBaseline(cnn, input_shape=(1, -8, 8)).record(X)


@pytest.mark.parametrize("name", ["resnet", "option_a", "vgg", "clipped", "functional"])
def test_export_equals_predict_and_moves(name):
    model, X = _fit(name)
    module = model.to_torch()
    state = {key: value.clone() for key, value in module.state_dict().items()}
    inputs = torch.from_numpy(X)
    with torch.no_grad():
        np.testing.assert_allclose(module(inputs).numpy(), model.predict(X), rtol=0,
                                   atol=1e-10)
        single = module.float()(inputs.float()).numpy()
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, model.predict(X), rtol=1e-4, atol=1e-4)
    assert module.double().to("cpu").output_intercept.dtype == torch.float64
    restored = model.to_torch()
    restored.load_state_dict(state)
    with torch.no_grad():
        np.testing.assert_allclose(restored(inputs).numpy(), model.predict(X), rtol=0,
                                   atol=1e-10)


@pytest.mark.parametrize("name", ["resnet", "option_a"])
def test_model_inputs_from_stored_states_equal_the_recomputed(name, monkeypatch):
    """state_inputs='model' stores the model's states of the blocks later blocks
    read (shortcut sources included) instead of rerunning the model for each
    block: the same model as with nothing stored."""
    from sksim import pipeline
    from sksim.weight_sharing import ModelStates

    calls = []
    original_add = ModelStates.add
    monkeypatch.setattr(ModelStates, "add", lambda self, model, index: (
        calls.append(index), original_add(self, model, index))[1])
    stored, _ = _fit(name, state_inputs="model", random_state=0)
    n_blocks = len(stored.structure_.block_shapes)
    assert calls == list(range(n_blocks - 1))
    monkeypatch.setattr(pipeline, "_MODEL_STATES_BYTES", 0)  # nothing may be stored
    recomputed, X = _fit(name, state_inputs="model", random_state=0)
    assert len(calls) == n_blocks - 1
    for ours, theirs in zip(stored.kernels_, recomputed.kernels_):
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stored.predict(X), recomputed.predict(X), rtol=1e-9,
                               atol=1e-12)
    assert _exact_inf_norm(stored.A_) <= 0.6
