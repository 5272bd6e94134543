"""Perturbation-aware state matching (``perturbation=``): the perturbed inputs
(in the ball, ascending the teacher's loss, reproducible row by row), the row
problems (design from the perturbed run, targets from the clean one) checked
against cvxpy, and the same fit in memory, from a memmap and with weight
sharing."""

import numpy as np
import pytest
from helpers import digits_split, exact_inf_norm
from sklearn.frozen import FrozenEstimator
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.utils import check_random_state

from sksim import SIMClassifier, SIMClassifierCV, SIMRegressor
from sksim.baselines import mlp_forward
from sksim.perturbation import PGD_STEPS, Perturbation, loss_gradient, perturbed_inputs


@pytest.fixture(scope="module")
def digits():
    X_train, X_test, y_train, y_test = digits_split()
    return X_train[:300], y_train[:300], X_test, y_test


@pytest.fixture(scope="module")
def mlp(digits):
    X, y, _, _ = digits
    return MLPClassifier(hidden_layer_sizes=(16,), max_iter=400, random_state=0).fit(X, y)


def _teacher(mlp):
    return ("mlp", mlp.coefs_, mlp.intercepts_)


def _loss(mlp, X, reference, loss):
    _, outputs = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    if loss == "squared":
        return 0.5 * np.sum((outputs - reference) ** 2)
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -np.sum(log_p[np.arange(len(X)), reference.argmax(axis=1)])


@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_mlp_loss_gradient_matches_finite_differences(digits, mlp, loss):
    X = digits[0][:5]
    _, reference = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    reference = reference + (0.3 if loss == "squared" else 0.0)
    gradient = loss_gradient(_teacher(mlp), X, reference, loss)
    rng = np.random.default_rng(0)
    for _ in range(5):
        i, j, h = rng.integers(5), rng.integers(X.shape[1]), 1e-6
        up, down = X.copy(), X.copy()
        up[i, j] += h
        down[i, j] -= h
        numeric = (_loss(mlp, up, reference, loss) - _loss(mlp, down, reference, loss)) / (2 * h)
        assert numeric == pytest.approx(gradient[i, j], rel=1e-5, abs=1e-8)


def _perturbation(kind, eps=0.1, mix="both", seed=3):
    return Perturbation(kind, eps, 0.0, 1.0, "cross_entropy", seed, mix)


@pytest.mark.parametrize("kind", ["uniform", "fgsm", "pgd"])
def test_perturbed_inputs_stay_in_the_ball_and_range(digits, mlp, kind):
    X = digits[0][:50]
    _, outputs = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    X_p = perturbed_inputs(_perturbation(kind), _teacher(mlp), X, outputs)
    assert np.max(np.abs(X_p - X)) <= 0.1 + 1e-12
    assert X_p.min() >= 0.0 and X_p.max() <= 1.0
    assert np.mean(np.abs(X_p - X) > 1e-3) > 0.3  # most features move
    # row by row: a chunk of the rows is perturbed as in the whole
    part = perturbed_inputs(_perturbation(kind), _teacher(mlp), X[10:20], outputs[10:20])
    np.testing.assert_array_equal(part, X_p[10:20])


def test_attacks_ascend_the_teachers_loss(digits, mlp):
    X = digits[0][:200]
    _, outputs = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    losses = {kind: _loss(mlp, perturbed_inputs(_perturbation(kind, eps=0.05),
                                                _teacher(mlp), X, outputs),
                          outputs, "cross_entropy")
              for kind in ("uniform", "fgsm", "pgd")}
    clean = _loss(mlp, X, outputs, "cross_entropy")
    assert clean < losses["uniform"] < losses["fgsm"] < losses["pgd"]
    assert PGD_STEPS >= 10


def test_torch_gradient_equals_the_numpy_one(digits, mlp):
    torch = pytest.importorskip("torch")
    from sksim import TorchBaseline

    module = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 10)).double()
    with torch.no_grad():
        for layer, coef, intercept in zip(module[::2], mlp.coefs_, mlp.intercepts_):
            layer.weight.copy_(torch.as_tensor(coef.T))
            layer.bias.copy_(torch.as_tensor(intercept))
    X = digits[0][:40]
    _, reference = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    baseline = TorchBaseline(module, dtype="float64", batch_size=16)
    for loss in ("cross_entropy", "squared"):
        np.testing.assert_allclose(loss_gradient(baseline, X, reference + 0.1, loss),
                                   loss_gradient(_teacher(mlp), X, reference + 0.1, loss),
                                   rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------- row problems
def _reference_problems(est, mlp, X, mix):
    """The state rows' design and targets rebuilt in numpy: the perturbed
    run's ``[relu(Z'), X']`` (after the clean one for ``mix="both"``), the
    clean run's ``Z``."""
    seed = int(check_random_state(est.random_state).randint(2**31 - 1))
    p = Perturbation(est.perturbation, est.perturbation_eps, 0.0, 1.0, "squared", seed, mix)
    states, outputs = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    X_p = perturbed_inputs(p, _teacher(mlp), X, outputs)
    states_p, _ = mlp_forward(mlp.coefs_, mlp.intercepts_, X_p)
    scales = est.state_scales_
    design = np.hstack([np.maximum(states_p * scales, 0), X_p])
    if mix == "both":
        design = np.vstack([np.hstack([np.maximum(states * scales, 0), X]), design])
        states = np.vstack([states, states])
    return design, states * scales, X_p


@pytest.mark.parametrize("mix", ["perturbed", "both"])
def test_state_rows_solve_the_perturbed_design_against_clean_targets(digits, mix):
    """Each state row is the optimum (cvxpy + Clarabel) of the row problem on
    the perturbed run's design with the clean run's targets, and the model's
    kappa bound holds exactly."""
    pytest.importorskip("cvxpy")
    from test_exactness import cvxpy_optima, primal_objective

    X, y = digits[0][:150], digits[0][:150, :3] @ [1.0, -1.0, 0.5]
    mlp = MLPRegressor(hidden_layer_sizes=(12,), max_iter=300, random_state=0).fit(X, y)
    est = SIMRegressor(FrozenEstimator(mlp), alpha=3e-3, kappa=0.5, relax=1.0, tol=1e-10,
                       perturbation="pgd", perturbation_eps=0.1, perturbation_mix=mix,
                       perturbation_range=(0, 1), random_state=0).fit(X, y)
    design, targets, _ = _reference_problems(est, mlp, X, mix)
    rows = np.hstack([est.A_.toarray(), est.B_.toarray()])
    ours = np.array([primal_objective(design, z, w, 3e-3, 0.0, c)
                     for z, w, c in zip(targets.T, rows, est.state_intercept_)])
    reference = cvxpy_optima(design, targets.T, n_bounded=12, bound=0.5, l1=3e-3,
                             fit_intercept=True)
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    assert exact_inf_norm(est.A_) <= 0.5
    # the bound binds somewhere and the perturbation changed the problem
    unperturbed = SIMRegressor(FrozenEstimator(mlp), alpha=3e-3, kappa=0.5, relax=1.0,
                               tol=1e-10).fit(X, y)
    assert not np.allclose(unperturbed.B_.toarray(), est.B_.toarray(), atol=1e-6)


def test_output_rows_fit_the_models_states_on_the_perturbed_inputs(digits):
    X, y = digits[0][:150], digits[0][:150, :3] @ [1.0, -1.0, 0.5]
    mlp = MLPRegressor(hidden_layer_sizes=(12,), max_iter=300, random_state=0).fit(X, y)
    est = SIMRegressor(FrozenEstimator(mlp), alpha=3e-3, relax=1.0, tol=1e-10,
                       perturbation="uniform", perturbation_eps=0.1,
                       perturbation_mix="perturbed", perturbation_range=(0, 1),
                       random_state=0).fit(X, y)
    _, _, X_p = _reference_problems(est, mlp, X, "perturbed")
    design = np.hstack([est.equilibrium(X_p), X_p])
    _, clean_outputs = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    centred = design - design.mean(axis=0)
    residual = clean_outputs[:, 0] - clean_outputs[:, 0].mean() - centred @ np.hstack(
        [est.C_.toarray(), est.D_.toarray()])[0]
    # KKT of the (unbounded) Lasso output row: |W_j^T r| / m <= alpha, equality on the support
    score = centred.T @ residual / len(X)
    coef = np.hstack([est.C_.toarray(), est.D_.toarray()])[0]
    assert np.max(np.abs(score)) <= 3e-3 * (1 + 1e-5)
    np.testing.assert_allclose(score[coef != 0], 3e-3 * np.sign(coef[coef != 0]), rtol=1e-4)


@pytest.mark.parametrize("kind", ["uniform", "fgsm", "pgd"])
def test_streamed_fit_equals_the_in_memory_one(digits, mlp, kind, tmp_path):
    X, y, X_test, _ = digits
    memmap = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64,
                                       shape=X.shape)
    memmap[:] = X
    params = {"baseline": FrozenEstimator(mlp), "perturbation": kind,
              "perturbation_eps": 0.1, "perturbation_range": (0, 1), "random_state": 0}
    in_memory = SIMClassifier(**params).fit(X, y)
    streamed = SIMClassifier(**params).fit(memmap, y)
    for name in ("A_", "B_", "C_", "D_"):
        np.testing.assert_allclose(getattr(streamed, name).toarray(),
                                   getattr(in_memory, name).toarray(), atol=1e-9)
    np.testing.assert_array_equal(streamed.predict(X_test), in_memory.predict(X_test))


def test_perturbation_needs_its_radius_and_a_teacher(digits, mlp):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match="perturbation_eps > 0"):
        SIMClassifier(FrozenEstimator(mlp), perturbation="pgd").fit(X, y)
    states, _ = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    with pytest.raises(ValueError, match="precomputed states"):
        SIMClassifier(perturbation="uniform", perturbation_eps=0.1).fit(X, y, states=states)
    with pytest.raises(ValueError, match="perturbation_range"):
        SIMClassifier(FrozenEstimator(mlp), perturbation="uniform", perturbation_eps=0.1,
                      perturbation_range=(1, 0)).fit(X, y)
    with pytest.raises(ValueError, match="not along a path or by the CV"):
        SIMClassifierCV(FrozenEstimator(mlp), perturbation="uniform",
                        perturbation_eps=0.1).fit(X, y)


# --------------------------------------------------------- weight sharing
def test_weight_shared_perturbed_fit_streams_and_stays_exact(tmp_path):
    torch = pytest.importorskip("torch")
    from test_weight_sharing import _tiny_cnn

    from sksim import TorchBaseline

    module = _tiny_cnn()
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(40, 2 * 7 * 7))
    baseline = TorchBaseline(module, input_shape=(2, 7, 7), dtype="float64", batch_size=16)
    logits = baseline.record(X)[1]
    params = {"alpha": 1e-3, "kappa": 0.6, "perturbation": "pgd", "perturbation_eps": 0.05,
              "perturbation_range": (0, 1), "random_state": 0}
    in_memory = SIMRegressor(baseline, **params).fit(X, logits)
    memmap = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64,
                                       shape=X.shape)
    memmap[:] = X
    streamed = SIMRegressor(baseline, **params).fit(memmap, logits)
    plain = SIMRegressor(baseline, alpha=1e-3, kappa=0.6).fit(X, logits)
    assert in_memory.structure_ is not None
    for ours, theirs, unperturbed in zip(in_memory.kernels_, streamed.kernels_,
                                         plain.kernels_):
        for a, b, c in zip(ours, theirs, unperturbed):
            np.testing.assert_allclose(a, b, atol=1e-9)
    assert not all(np.allclose(a, c) for a, c in zip(in_memory.kernels_[0],
                                                      plain.kernels_[0]))
    assert exact_inf_norm(in_memory.A_) <= 0.6
    np.testing.assert_allclose(in_memory.predict(X), streamed.predict(X), atol=1e-9)
    del torch
