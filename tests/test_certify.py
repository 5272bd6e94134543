"""sksim.certify: interval bounds of the equilibrium states contain the states
of every input of the box, certified predictions are never flipped, the
feed-forward pass is the interval iteration's limit, and a ReLU MLP is
certified by the same bounds as its implicit form."""

import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.neural_network import MLPClassifier

from sksim import SIMClassifier
from sksim.baselines import mlp_implicit_blocks
from sksim.certify import (
    certified_accuracy,
    certified_mlp_accuracy,
    certified_mlp_predictions,
    certified_predictions,
    input_box,
    interval_states,
    mlp_interval_states,
)
from sksim.solvers import solve_equilibrium
from sksim.solvers.equilibrium import forward_blocks

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SLACK = 1e-9


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="module", params=["implicit", "feedforward"])
def model(request, digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SIMClassifier(alpha=1e-3, structure=request.param, random_state=0).fit(
            X[:500], y[:500])


def _perturbations(x, eps, n, rng, clip=(0.0, 1.0)):
    """``n`` points of the clipped eps box around ``x``: half uniform, half
    vertices (each coordinate at +-eps), where the extremes are."""
    uniform = x + rng.uniform(-eps, eps, size=(n // 2, x.size))
    vertices = x + eps * rng.choice([-1.0, 1.0], size=(n - n // 2, x.size))
    return np.clip(np.vstack([uniform, vertices]), *clip)


def _output_jacobian(model, u):
    """d outputs / d u at the equilibrium of one input: ``C (I - S A)^-1 S B + D``
    with S the diagonal of ReLU slopes (the model is piecewise linear)."""
    A, B = model.A_.toarray(), model.B_.toarray()
    x = model.equilibrium(u[None])[0]
    slopes = (A @ x + B @ u + model.state_intercept_ > 0).astype(float)
    states = np.linalg.solve(np.eye(len(x)) - slopes[:, None] * A, slopes[:, None] * B)
    return model.C_.toarray() @ states + model.D_.toarray()


def _pgd_attack(model, x, label_index, eps, *, steps=10, clip=(0.0, 1.0)):
    """l_inf PGD in numpy on the margin ``y_c - max_j y_j`` of the predicted
    class (index ``label_index``): the points it visits."""
    u, step, visited = x.copy(), eps / 4, []
    for _ in range(steps):
        outputs = model.decision_function(u[None])
        outputs = np.atleast_2d(outputs)
        jacobian = _output_jacobian(model, u)
        if outputs.shape[1] == 1:
            gradient = jacobian[0] * (1.0 if label_index == 1 else -1.0)
        else:
            others = outputs[0].copy()
            others[label_index] = -np.inf
            gradient = jacobian[label_index] - jacobian[int(np.argmax(others))]
        u = np.clip(np.clip(u - step * np.sign(gradient), x - eps, x + eps), *clip)
        visited.append(u.copy())
    return np.array(visited)


def _flat_copy(estimator, A, B, C, D, state_intercept, intercept):
    """A fitted estimator carrying the given matrices (a SIM model equal to
    any implicit model, e.g. a teacher network)."""
    other = copy.deepcopy(estimator)
    other.A_, other.B_, other.C_, other.D_ = (sp.csr_array(m) for m in (A, B, C, D))
    other.state_intercept_ = np.asarray(state_intercept, dtype=np.float64)
    other.intercept_ = np.asarray(intercept, dtype=np.float64)
    other.n_states_ = other.A_.shape[0]
    return other


# ------------------------------------------------------------ soundness
def test_state_boxes_contain_the_equilibria_of_the_box(model, digits):
    X, _ = digits
    rng = np.random.default_rng(0)
    eps = 0.05
    centres = X[500:506]
    lower, upper = input_box(centres, eps, clip=(0, 1))
    x_low, x_high = interval_states(model.A_, model.B_, model.state_intercept_,
                                    lower, upper)
    assert x_low.shape == x_high.shape == (len(centres), model.n_states_)
    assert np.all(x_low <= x_high)
    for i, centre in enumerate(centres):
        U = np.vstack([centre, _perturbations(centre, eps, 200, rng)])
        states = model.equilibrium(U)
        assert np.all(states >= x_low[i] - SLACK)
        assert np.all(states <= x_high[i] + SLACK)
    # boxes of a degenerate input box are the equilibrium itself
    point_low, point_high = interval_states(model.A_, model.B_, model.state_intercept_,
                                            centres, centres, tol=1e-13)
    states = model.equilibrium(centres)
    np.testing.assert_allclose(point_low, states, atol=1e-8)
    np.testing.assert_allclose(point_high, states, atol=1e-8)


def test_state_boxes_of_a_random_implicit_model():
    """A dense A with both signs (not feed-forward), ||A||_inf = 0.9."""
    rng = np.random.default_rng(1)
    n_states, n_features = 12, 5
    A = rng.normal(size=(n_states, n_states))
    A *= 0.9 / np.abs(A).sum(axis=1, keepdims=True)
    B, b = rng.normal(size=(n_states, n_features)), rng.normal(size=n_states)
    centres = rng.normal(size=(4, n_features))
    lower, upper = centres - 0.3, centres + 0.3
    for matrices in ((A, B), (sp.csr_array(A), sp.csr_array(B))):
        x_low, x_high = interval_states(*matrices, b, lower, upper)
        for i in range(len(centres)):
            U = rng.uniform(lower[i], upper[i], size=(300, n_features))
            U[:100] = np.where(rng.random((100, n_features)) < 0.5, lower[i], upper[i])
            states = solve_equilibrium(sp.csr_array(A), U @ B.T + b, tol=1e-14,
                                       max_iter=100_000).states
            assert np.all(states >= x_low[i] - SLACK)
            assert np.all(states <= x_high[i] + SLACK)
            # and the box is not vacuous: some state is bounded away from 0 or
            # tightly above
            assert np.all(x_high[i] < 1e3)


def test_too_few_iterations_warn_and_stay_sound(model, digits):
    X, _ = digits
    if forward_blocks(model.A_) is not None:
        pytest.skip("a feed-forward model takes one pass")
    lower, upper = input_box(X[500:503], 0.02, clip=(0, 1))
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        loose = interval_states(model.A_, model.B_, model.state_intercept_, lower, upper,
                                max_iter=3)
    tight = interval_states(model.A_, model.B_, model.state_intercept_, lower, upper)
    assert np.all(loose[0] <= tight[0] + 1e-12) and np.all(loose[1] >= tight[1] - 1e-12)
    assert np.any(loose[1] > tight[1] + 1e-3)  # three steps are not the limit


# ------------------------------------------------------- certification
def test_certified_points_are_never_flipped(model, digits):
    X, y = digits
    rng = np.random.default_rng(2)
    eps = 0.02
    centres, labels = X[500:560], y[500:560]
    certified = certified_predictions(model, centres, eps, clip=(0, 1))
    assert certified.dtype == bool and certified.shape == (len(centres),)
    assert 0 < certified.sum() < len(centres)  # a meaningful eps for this model
    predicted = model.predict(centres)
    index = np.searchsorted(model.classes_, predicted)
    broken = 0
    for i in range(len(centres)):
        U = np.vstack([_perturbations(centres[i], eps, 200, rng),
                       _pgd_attack(model, centres[i], index[i], eps)])
        flipped = np.any(model.predict(U) != predicted[i])
        assert not (certified[i] and flipped), i
        broken += flipped
    assert broken > 0  # the attack has power at this eps
    accuracy = certified_accuracy(model, centres, labels, eps, clip=(0, 1))
    assert accuracy == np.mean(certified & (predicted == labels))
    assert accuracy <= model.score(centres, labels)


def test_certification_at_zero_and_huge_eps(model, digits):
    X, y = digits
    centres = X[500:700]
    assert np.all(certified_predictions(model, centres, 0.0))
    assert certified_accuracy(model, centres, y[500:700], 0.0) == model.score(
        centres, y[500:700])
    assert not np.any(certified_predictions(model, centres, 10.0))
    assert not np.any(certified_predictions(model, centres, 1.0, clip=(0, 1)))
    # certified sets shrink as eps grows
    small = certified_predictions(model, centres, 0.005, clip=(0, 1))
    large = certified_predictions(model, centres, 0.02, clip=(0, 1))
    assert np.all(small >= large) and small.sum() > large.sum()


@pytest.mark.parametrize("output_target", ["baseline", "y"])
def test_binary_classifier(digits, output_target):
    """One logit (the teacher's, sign decides) or two indicator columns."""
    X, y = digits
    keep = np.isin(y, [3, 8])
    X, y = X[keep], np.where(y[keep] == 8, "eight", "three")
    est = SIMClassifier(MLPClassifier((16,), max_iter=300, random_state=0), alpha=1e-3,
                        output_target=output_target, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X[:200], y[:200])
    assert est.C_.shape[0] == (1 if output_target == "baseline" else 2)
    centres = X[200:]
    predicted = est.predict(centres)
    assert set(predicted) == {"three", "eight"}
    assert np.all(certified_predictions(est, centres, 0.0))  # both signs handled
    rng = np.random.default_rng(3)
    eps = 0.05
    certified = certified_predictions(est, centres, eps, clip=(0, 1))
    assert certified.any() and not certified.all()
    for i in np.flatnonzero(certified)[:20]:
        U = _perturbations(centres[i], eps, 200, rng)
        assert np.all(est.predict(U) == predicted[i])
    assert not np.any(certified_predictions(est, centres, 10.0))


# -------------------------------------------------------- feed-forward
def test_feedforward_pass_is_the_limit_of_the_iteration(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = SIMClassifier(alpha=1e-3, structure="feedforward", random_state=0).fit(
            X[:500], y[:500])
    blocks = forward_blocks(est.A_)
    assert blocks is not None and len(blocks) == 2 and est.A_.nnz
    lower, upper = input_box(X[500:540], 0.03, clip=(0, 1))
    args = (est.A_, est.B_, est.state_intercept_, lower, upper)
    fast = interval_states(*args)
    slow = interval_states(*args, method="iterate", tol=0.0, max_iter=len(blocks) + 1)
    np.testing.assert_allclose(fast[0], slow[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast[1], slow[1], rtol=0, atol=1e-12)
    assert np.any(fast[1] - fast[0] > 1e-3)  # not degenerate boxes


def test_mlp_bounds_equal_those_of_its_implicit_form(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = SIMClassifier(alpha=1e-3, random_state=0).fit(X[:500], y[:500])
    mlp = est.baseline_
    assert len(mlp.coefs_) == 3  # two hidden layers: A is not zero
    A, B, C, D, b, d = mlp_implicit_blocks(mlp.coefs_, mlp.intercepts_)
    assert np.abs(A).sum(axis=1).max() >= 1  # the raw teacher: only the pass applies
    lower, upper = input_box(X[500:600], 0.02, clip=(0, 1))
    implicit = interval_states(A, B, b, lower, upper)
    direct = mlp_interval_states(mlp.coefs_, mlp.intercepts_, lower, upper)
    np.testing.assert_allclose(implicit[0], direct[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(implicit[1], direct[1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="method='iterate' needs"):
        interval_states(A, B, b, lower, upper, method="iterate")

    teacher = _flat_copy(est, A, B, C, D, b, d)
    np.testing.assert_array_equal(teacher.predict(X[500:]), mlp.predict(X[500:]))
    for eps in (0.0, 0.01, 0.03):
        ours = certified_predictions(teacher, X[500:], eps, clip=(0, 1))
        theirs = certified_mlp_predictions(mlp.coefs_, mlp.intercepts_, X[500:], eps,
                                           clip=(0, 1))
        np.testing.assert_array_equal(ours, theirs)
        assert certified_mlp_accuracy(mlp.coefs_, mlp.intercepts_, X[500:], y[500:], eps,
                                      clip=(0, 1), classes=mlp.classes_) == \
            certified_accuracy(teacher, X[500:], y[500:], eps, clip=(0, 1))
    # the teacher's certificates are sound too
    rng = np.random.default_rng(4)
    certified = certified_mlp_predictions(mlp.coefs_, mlp.intercepts_, X[500:600], 0.01,
                                          clip=(0, 1))
    assert certified.any()
    for i in np.flatnonzero(certified)[:20]:
        U = _perturbations(X[500 + i], 0.01, 200, rng)
        assert np.all(mlp.predict(U) == mlp.predict(X[500 + i:501 + i]))


def test_mlp_without_hidden_layers_and_binary_logit():
    rng = np.random.default_rng(5)
    W, c = rng.normal(size=(4, 1)), rng.normal(size=1)
    X = rng.normal(size=(50, 4))
    logit = X @ W[:, 0] + c[0]
    radius = np.abs(logit) / np.abs(W).sum()  # exact l_inf distance to the boundary
    certified = certified_mlp_predictions([W], [c], X, 0.99 * radius[:, None])
    assert np.all(certified)
    assert not np.any(certified_mlp_predictions([W], [c], X, 1.01 * radius[:, None]))
    x_low, x_high = mlp_interval_states([W], [c], X, X)
    assert x_low.shape == x_high.shape == (50, 0)


# ------------------------------------------------------------ weight sharing
def test_weight_shared_classifier(digits):
    torch = pytest.importorskip("torch")
    from sksim import TorchBaseline

    nn = torch.nn
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 16, 3)).double()
    X, _ = digits
    inputs = torch.as_tensor(X[:150]).reshape(-1, 1, 8, 8)
    with torch.no_grad():
        cnn[-1].bias -= cnn(inputs).mean(0)  # all three classes predicted
        logits = cnn(inputs).numpy()
    y = logits.argmax(axis=1)
    est = SIMClassifier(TorchBaseline(cnn, input_shape=(1, 8, 8), dtype="float64"),
                        alpha=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X[:120], y[:120], baseline_outputs=logits[:120])
    assert est.structure_ is not None
    centres = X[120:150]
    eps = 0.01
    lower, upper = input_box(centres, eps, clip=(0, 1))
    x_low, x_high = interval_states(est.A_, est.B_, est.state_intercept_, lower, upper)
    rng = np.random.default_rng(6)
    for i in range(3):
        states = est.equilibrium(_perturbations(centres[i], eps, 100, rng))
        assert np.all(states >= x_low[i] - SLACK) and np.all(states <= x_high[i] + SLACK)
    assert np.all(certified_predictions(est, centres, 0.0))
    certified = certified_predictions(est, centres, eps, clip=(0, 1))
    for i in np.flatnonzero(certified)[:5]:
        U = _perturbations(centres[i], eps, 100, rng)
        assert np.all(est.predict(U) == est.predict(centres[i:i + 1]))


# ------------------------------------------------------------------ errors
def test_bad_inputs_raise(model, digits):
    X, y = digits
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        certified_predictions(model, X[:5], -0.1)
    with pytest.raises(ValueError, match="eps must be finite"):
        certified_predictions(model, X[:5], np.nan)
    with pytest.raises(ValueError, match="features"):
        certified_predictions(model, X[:5, :10], 0.1)
    with pytest.raises(NotFittedError):
        certified_predictions(SIMClassifier(), X[:5], 0.1)
    with pytest.raises(ValueError, match="outside clip"):
        certified_predictions(model, X[:5] + 2, 0.1, clip=(0, 1))
    with pytest.raises(ValueError, match=r"y must have shape \(5,\)"):
        certified_accuracy(model, X[:5], y[:4], 0.1)
    with pytest.raises(TypeError, match="estimator must be a fitted SIMClassifier"):
        certified_predictions(MLPClassifier((4,), max_iter=5).fit(X[:50], y[:50]),
                              X[:5], 0.1)

    A, B, b = model.A_, model.B_, model.state_intercept_
    lower, upper = X[:3], X[:3] + 0.1
    with pytest.raises(ValueError, match="B has 64 rows"):
        interval_states(A, B[:64], b, lower, upper)
    with pytest.raises(ValueError, match="A must be square"):
        interval_states(A[:, :50], B, b, lower, upper)
    with pytest.raises(ValueError, match="state_intercept must have shape"):
        interval_states(A, B, b[:5], lower, upper)
    with pytest.raises(ValueError, match="lower and upper have 10 features"):
        interval_states(A, B, b, lower[:, :10], upper[:, :10])
    with pytest.raises(ValueError, match="same shape"):
        interval_states(A, B, b, lower, upper[:2])
    with pytest.raises(ValueError, match="lower must be <= upper"):
        interval_states(A, B, b, upper, lower)
    rng = np.random.default_rng(7)
    loop = rng.normal(size=(4, 4))  # not feed-forward and ||.||_inf > 1
    with pytest.raises(ValueError, match=r"A has \|\|A\|\|_inf = .* not strictly lower"):
        interval_states(loop, np.ones((4, 2)), np.zeros(4), np.zeros((1, 2)),
                        np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"coefs\[1\] has shape"):
        certified_mlp_predictions([np.ones((64, 5)), np.ones((4, 10))],
                                  [np.ones(5), np.ones(10)], X[:3], 0.1)
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 64\)"):
        certified_mlp_predictions([np.ones((64, 10))], [np.ones(10)], X[:3, :8], 0.1)


# ------------------------------------- examples/_experiments.py: attacks
@pytest.fixture(scope="module")
def experiments():
    pytest.importorskip("torch")
    if str(EXAMPLES) not in sys.path:  # the examples import their siblings
        sys.path.insert(0, str(EXAMPLES))
    import _experiments

    return _experiments


@pytest.fixture(scope="module")
def torch_mlp(experiments, digits):
    """A 64-32-10 ReLU MLP trained on 1,200 digits (a few seconds)."""
    import torch

    X, y = digits
    X = X.astype(np.float32)
    torch.manual_seed(0)
    model = experiments.shared.build_mlp(64, (32,), 10)
    experiments.train_mlp(model, X[:1200], y[:1200], epochs=30, seed=0, batch=64)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, X[:1200], y[:1200], X[1200:], y[1200:]


def test_strong_pgd_breaks_the_mlp_at_a_large_eps(experiments, torch_mlp):
    import torch

    model, _, _, X_test, y_test = torch_mlp
    double = copy.deepcopy(model).double()
    clean = experiments.strong_pgd_correct(double, X_test, y_test, 0.0, steps=1,
                                           restarts=1)
    assert clean.mean() > 0.85
    assert experiments.attack_sanity(double, X_test, y_test, 0.5) <= 0.02
    # float32 forward, and the strongest examples: in the clipped ball, and
    # misclassified wherever the sample is not robust
    eps = 0.05
    robust, examples = experiments.strong_pgd_correct(
        model, X_test, y_test, eps, dtype=torch.float32, return_examples=True)
    assert examples.shape == X_test.shape
    assert np.all(np.abs(examples - X_test) <= eps + 1e-6)
    assert examples.min() >= 0 and examples.max() <= 1
    predicted = experiments.torch_logits(model, examples.astype(np.float32)).argmax(1)
    assert np.all(predicted[~robust] != y_test[~robust])
    assert 0 < robust.mean() < clean.mean()
    # at least as strong as the one-restart pgd_correct with the same steps
    weak = experiments.pgd_correct(model, X_test, y_test, eps, steps=20)
    assert robust.mean() <= weak.mean() + 0.01


def test_ibp_certified_points_survive_strong_pgd(experiments, torch_mlp):
    model, _, _, X_test, y_test = torch_mlp
    coefs, intercepts = experiments.mlp_layers(model)
    assert [c.shape for c in coefs] == [(64, 32), (32, 10)]
    eps = 0.02
    certified = certified_mlp_predictions(coefs, intercepts, X_test, eps, clip=(0, 1))
    correct = experiments.torch_logits(model, X_test).argmax(1) == y_test
    assert (certified & correct).any()
    robust = experiments.strong_pgd_correct(copy.deepcopy(model).double(), X_test,
                                            y_test, eps)
    assert np.all(robust[certified & correct])
    assert certified_mlp_accuracy(coefs, intercepts, X_test, y_test, eps,
                                  clip=(0, 1)) <= robust.mean()


def test_mlp_layers_refuses_other_modules(experiments):
    import torch

    nn = torch.nn
    with pytest.raises(TypeError, match="Conv2d"):
        experiments.mlp_layers(nn.Sequential(nn.Flatten(), nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match="not a ReLU MLP"):
        experiments.mlp_layers(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)))
    coefs, intercepts = experiments.mlp_layers(
        nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False)))
    assert [c.shape for c in coefs] == [(4, 3), (3, 2)] and not intercepts[1].any()


def test_adversarial_fine_tune_runs_for_its_seconds(experiments, torch_mlp):
    model, X_train, y_train, _, _ = torch_mlp
    before = [p.clone() for p in model.parameters()]
    tuned, info = experiments.adversarial_fine_tune(model, X_train, y_train, 0.05,
                                                    seconds=1.0, steps=3)
    assert tuned is not model and info["batches"] > 0
    assert 1.0 <= info["seconds"] < 3.0 and info["epochs"] > 0
    assert all((a == b).all() for a, b in zip(before, model.parameters()))
    assert any((a != b).any() for a, b in zip(model.parameters(), tuned.parameters()))
    assert not tuned.training and not any(p.requires_grad for p in tuned.parameters())


def test_sim_forward64_and_certified_sim_points_survive_strong_pgd(experiments,
                                                                  torch_mlp):
    import torch

    from sksim import TorchBaseline

    model, X_train, y_train, X_test, y_test = torch_mlp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = SIMClassifier(TorchBaseline(model), alpha=1e-3).fit(X_train[:400],
                                                                  y_train[:400])
    forward = experiments.sim_forward64(est)
    with torch.no_grad():
        outputs = forward(torch.as_tensor(X_test, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(outputs, est.decision_function(X_test), rtol=0,
                               atol=1e-8)
    eps = 0.02
    X_test, y_test = X_test[:200], y_test[:200]
    certified = certified_predictions(est, X_test, eps, clip=(0, 1))
    good = certified & (est.predict(X_test) == y_test)
    assert good.any()
    robust = experiments.strong_pgd_correct(forward, X_test, y_test, eps, steps=10)
    assert np.all(robust[good])
