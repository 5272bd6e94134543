"""structure="feedforward": each block of states reads only earlier blocks and
the inputs, so A is strictly block lower triangular, the equilibrium is one
forward pass, and every row is optimal for its restricted problem."""

import cvxpy as cp
import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator
from sklearn.neural_network import MLPClassifier

from sksim import SIMClassifier, SIMRegressor, sim_path
from sksim.baselines import mlp_forward

BLOCKS = (8, 6, 4)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int) + (X[:, 2] > 0.5)
    mlp = MLPClassifier(hidden_layer_sizes=BLOCKS, max_iter=2000, random_state=0)
    mlp.fit(X, y)
    states, logits = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    return X, y, states, logits, mlp


def _block_of(blocks):
    return np.repeat(np.arange(len(blocks)), blocks)


def _forward_pass(model, X, blocks):
    """The states computed block by block in numpy: one pass, no iteration."""
    A, B = model.A_.toarray(), model.B_.toarray()
    states = np.zeros((X.shape[0], A.shape[0]))
    start = 0
    for size in blocks:
        rows = slice(start, start + size)
        states[:, rows] = np.maximum(states @ A[rows].T + X @ B[rows].T
                                     + model.state_intercept_[rows], 0.0)
        start += size
    return states


def test_feedforward_model_is_cycle_free_and_one_pass(problem):
    X, y, states, logits, _ = problem
    model = SIMClassifier(structure="feedforward", state_blocks=BLOCKS, alpha=1e-3,
                          kappa=0.9).fit(X, y, states=states, baseline_outputs=logits)
    block = _block_of(BLOCKS)
    rows, columns = model.A_.nonzero()
    assert rows.size > 0
    assert np.all(block[columns] < block[rows])  # only earlier blocks: no cycles
    assert np.abs(model.A_).sum(axis=1).max() <= 0.9
    np.testing.assert_allclose(model.equilibrium(X), _forward_pass(model, X, BLOCKS),
                               rtol=0, atol=1e-12)
    implicit = SIMClassifier(alpha=1e-3, kappa=0.9).fit(X, y, states=states,
                                                       baseline_outputs=logits)
    assert np.any(block[implicit.A_.nonzero()[1]] >= block[implicit.A_.nonzero()[0]])


def _assert_blocks_match_cvxpy(model, X, states, design_states, alpha, kappa):
    """Block b's rows reach the cvxpy optimum of the kappa-bounded Lasso on the
    centred design ``[design_states of earlier blocks, X]`` against ``states``."""
    start = 0
    for size in BLOCKS:
        W = np.hstack([design_states[:, :start], X])
        W = W - W.mean(axis=0)
        for i in range(start, start + size):
            z = states[:, i] - states[:, i].mean()
            w = cp.Variable(W.shape[1])
            objective = cp.sum_squares(z - W @ w) / (2 * len(z)) + alpha * cp.norm1(w)
            constraints = [cp.norm1(w[:start]) <= kappa] if start else []
            reference = cp.Problem(cp.Minimize(objective), constraints).solve(
                solver=cp.CLARABEL)
            ours = np.r_[model.A_.toarray()[i, :start], model.B_.toarray()[i]]
            value = np.sum((z - W @ ours) ** 2) / (2 * len(z)) + alpha * np.abs(ours).sum()
            assert value <= reference * (1 + 1e-6) + 1e-12
        start += size


def test_feedforward_rows_match_cvxpy_on_their_restricted_design(problem):
    """Block b's rows solve the kappa-bounded Lasso on [relu(earlier states), X]."""
    X, _, states, _, _ = problem
    alpha, kappa = 3e-3, 0.5
    model = SIMRegressor(structure="feedforward", state_blocks=BLOCKS, alpha=alpha,
                         kappa=kappa, relax=1.0, tol=1e-10).fit(X, states[:, 0],
                                                                states=states)
    _assert_blocks_match_cvxpy(model, X, states, np.maximum(states, 0.0), alpha, kappa)


def test_teacher_layers_are_the_blocks(problem):
    X, y, _, _, mlp = problem
    model = SIMClassifier(FrozenEstimator(mlp), structure="feedforward").fit(X, y)
    block = _block_of(BLOCKS)
    rows, columns = model.A_.nonzero()
    assert np.all(block[columns] < block[rows])
    np.testing.assert_allclose(model.equilibrium(X), _forward_pass(model, X, BLOCKS),
                               rtol=0, atol=1e-12)


def test_torch_teacher_blocks_come_from_its_activations():
    torch = pytest.importorskip("torch")
    from sksim import TorchBaseline

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(),
                                 torch.nn.Linear(7, 3), torch.nn.ReLU(),
                                 torch.nn.Linear(3, 2)).double()
    X = np.random.default_rng(1).normal(size=(100, 5))
    baseline = TorchBaseline(module, dtype="float64")
    _, outputs = baseline.record(X)
    model = SIMRegressor(baseline, structure="feedforward", alpha=1e-3).fit(X, outputs)
    block = _block_of((7, 3))
    rows, columns = model.A_.nonzero()
    assert np.all(block[columns] < block[rows])


def test_feedforward_path_equals_single_fits(problem):
    X, y, states, logits, _ = problem
    options = dict(structure="feedforward", state_blocks=BLOCKS)
    path = sim_path(SIMClassifier(**options), X, y, alphas=[1e-2, 1e-3], states=states,
                    baseline_outputs=logits)
    for alpha, model in zip(path.alphas, path.models):
        single = SIMClassifier(alpha=alpha, **options).fit(X, y, states=states,
                                                          baseline_outputs=logits)
        # block 0 reads only the inputs (well conditioned: auto picks CD, warm-
        # started along the path, so the two agree within its tolerance)
        assert abs(model.A_ - single.A_).max() <= 1e-6
        assert abs(model.B_ - single.B_).max() <= 1e-6


@pytest.mark.parametrize("state_blocks, message", [
    (None, "needs state_blocks"), ((8, 6), "summing to the 18 states"),
    ((8, 6, 4.5), "positive integers"), ((20, -2), "positive integers")])
def test_bad_state_blocks_raise(problem, state_blocks, message):
    X, y, states, _, _ = problem
    with pytest.raises(ValueError, match=message):
        SIMClassifier(structure="feedforward", state_blocks=state_blocks).fit(
            X, y, states=states)


def test_feedforward_model_round_trips_without_pickle(problem, tmp_path):
    from sksim import load_model, save_model

    X, y, states, logits, _ = problem
    model = SIMClassifier(structure="feedforward", state_blocks=np.array(BLOCKS)).fit(
        X, y, states=states, baseline_outputs=logits)
    save_model(model, tmp_path / "ff.npz")
    loaded = load_model(tmp_path / "ff.npz")
    assert loaded.get_params()["state_blocks"] == list(BLOCKS)
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))


def test_one_pass_equals_the_iterative_equilibrium(problem):
    """The block-product pass that predict uses for a strictly block lower
    triangular A equals the Gauss-Seidel solver's equilibrium to 1e-12, and
    a model with feedback (implicit) is still solved iteratively."""
    from sksim._arrays import forward_blocks
    from sksim.solvers import solve_equilibrium

    X, y, states, logits, _ = problem
    model = SIMClassifier(structure="feedforward", state_blocks=BLOCKS).fit(
        X, y, states=states, baseline_outputs=logits)
    blocks = forward_blocks(model.A_)
    assert blocks is not None and len(blocks) <= len(BLOCKS)
    assert blocks[0][0] == 0 and blocks[-1][1] == sum(BLOCKS)
    drive = X @ model.B_.toarray().T + model.state_intercept_
    iterative = solve_equilibrium(model.A_, drive, tol=1e-14, max_iter=100)
    one_pass, residual = model.equilibrium(X, return_residual=True)
    np.testing.assert_allclose(one_pass, iterative.states, rtol=0, atol=1e-12)
    assert np.all(residual == 0)
    implicit = SIMClassifier().fit(X, y, states=states, baseline_outputs=logits)
    assert forward_blocks(implicit.A_) is None


def test_rows_fitted_on_the_models_own_states(problem, tmp_path):
    """state_inputs="model": block b's rows solve the kappa-bounded Lasso on the
    fitted model's own states of the earlier blocks (its one-pass equilibrium),
    against the teacher's states of block b; block 0 is as with the teacher's
    inputs. A flat implicit model or a streamed fit refuses it."""
    X, _, states, _, _ = problem
    alpha, kappa = 3e-3, 0.5
    params = dict(structure="feedforward", state_blocks=BLOCKS, alpha=alpha, kappa=kappa,
                  relax=1.0, tol=1e-10)
    model = SIMRegressor(state_inputs="model", **params).fit(X, states[:, 0], states=states)
    teacher_inputs = SIMRegressor(**params).fit(X, states[:, 0], states=states)
    np.testing.assert_allclose(model.B_.toarray()[:BLOCKS[0]],
                               teacher_inputs.B_.toarray()[:BLOCKS[0]], atol=1e-10)
    assert not np.allclose(model.A_.toarray(), teacher_inputs.A_.toarray(), atol=1e-6)
    own = model.equilibrium(X)
    np.testing.assert_allclose(own, _forward_pass(model, X, BLOCKS), atol=1e-12)
    _assert_blocks_match_cvxpy(model, X, states, own, alpha, kappa)
    for i in range(model.n_states_):  # the intercept centres the row on its own design
        residual = states[:, i] - own @ model.A_.toarray()[i] - X @ model.B_.toarray()[i]
        assert model.state_intercept_[i] == pytest.approx(residual.mean(), abs=1e-10)
    assert np.max(np.abs(model.A_.toarray()).sum(axis=1)) <= kappa
    with pytest.raises(ValueError, match="needs structure='feedforward'"):
        SIMRegressor(state_inputs="model").fit(X, states[:, 0], states=states)
    memmap = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64,
                                       shape=X.shape)
    memmap[:] = X
    with pytest.raises(ValueError, match="needs the data in memory"):
        SIMRegressor(state_inputs="model", **params).fit(memmap, states[:, 0],
                                                         states=states)
