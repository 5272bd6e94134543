"""The equilibrium promises of the README, checked against known answers.

* A strictly lower-triangular ``A`` (a feed-forward teacher's states stored
  layer by layer) is solved exactly by one Gauss-Seidel sweep: residual 0, no
  warning, states equal to the forward substitution.
* For any well-posed ``A`` the residual certificate bounds the distance to
  the exact fixed point: ``||x - x*||_inf <= residual / (1 - ||A||_inf)``.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from sksim import SIMRegressor
from sksim.solvers import solve_equilibrium


def _scaled_to(A, norm):
    return A * (norm / np.abs(A).sum(axis=1).max())


def _forward_substitution(A, drive):
    """x_i = relu(sum_{j<i} A_ij x_j + drive_i), in plain numpy."""
    x = np.zeros_like(drive)
    for i in range(A.shape[0]):
        x[:, i] = np.maximum(x[:, :i] @ A[i, :i] + drive[:, i], 0.0)
    return x


def _layered_A(rng, sizes=(6, 5, 4), norm=0.9):
    """Strictly block lower-triangular A of a feed-forward net with layer sizes."""
    n = sum(sizes)
    A = np.zeros((n, n))
    start = 0
    for before, width in zip(sizes[:-1], sizes[1:]):
        rows = slice(start + before, start + before + width)
        A[rows, start:start + before] = rng.normal(size=(width, before))
        start += before
    return _scaled_to(A + np.tril(rng.normal(size=(n, n)), -1) * 0.1, norm)


def test_one_sweep_is_exact_for_strictly_lower_triangular_A():
    rng = np.random.default_rng(0)
    A = _layered_A(rng)
    drive = rng.normal(size=(50, A.shape[0]))
    solution = solve_equilibrium(sp.csr_array(A), drive, tol=1e-300, max_iter=1)
    assert np.all(solution.n_iter == 1)
    assert np.all(solution.residual == 0.0)
    np.testing.assert_allclose(solution.states, _forward_substitution(A, drive),
                               rtol=1e-13, atol=1e-13)


def test_estimator_one_sweep_is_exact_for_layer_ordered_states():
    """Through the estimator: equilibrium_max_iter=1 on a layer-ordered A
    gives the exact states, residual 0 and no warning."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    Z = X @ rng.normal(size=(3, 15))
    model = SIMRegressor(alpha=1e-2).fit(X, X[:, 0], states=Z)
    A = _layered_A(rng)
    model.A_ = sp.csr_array(A)
    model.set_params(equilibrium_max_iter=1, equilibrium_tol=1e-300)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        states, residual = model.equilibrium(X, return_residual=True)
        predictions = model.predict(X)
    assert np.all(residual == 0.0)
    drive = X @ model.B_.toarray().T + model.state_intercept_
    expected = _forward_substitution(A, drive)
    np.testing.assert_allclose(states, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(
        predictions, expected @ model.C_.toarray().ravel() + X @ model.D_.toarray().ravel()
        + model.intercept_[0], rtol=1e-12, atol=1e-12)


def _known_fixed_point(rng, n_states, n_samples, norm):
    """A well-posed cyclic A and drives whose equilibrium x* is known: x*
    is drawn (about a third of its entries zero) and the drive set so that
    x* = relu(A x* + drive), with a margin below zero for the zero entries."""
    A = _scaled_to(rng.normal(size=(n_states, n_states)), norm)
    x_star = np.maximum(rng.normal(size=(n_samples, n_states)) + 0.4, 0.0)
    pre = x_star @ A.T
    drive = np.where(x_star > 0, x_star - pre, -pre - rng.uniform(0.1, 1.0, x_star.shape))
    return A, x_star, drive


@pytest.mark.parametrize("norm", [0.5, 0.9, 0.99])
def test_residual_bounds_the_distance_to_the_fixed_point(norm):
    rng = np.random.default_rng(int(norm * 100))
    A, x_star, drive = _known_fixed_point(rng, 12, 30, norm)
    a_norm = np.abs(A).sum(axis=1).max()
    assert not np.allclose(np.tril(A, -1), A)  # cycles: iterations are needed
    for sweeps in (1, 2, 3, 5, 8):
        solution = solve_equilibrium(sp.csr_array(A), drive, tol=1e-300,
                                     max_iter=sweeps)
        distance = np.abs(solution.states - x_star).max(axis=1)
        bound = solution.residual / (1.0 - a_norm)
        assert np.all(distance <= bound * (1 + 1e-9) + 1e-13), (sweeps, distance, bound)
        # the residual is the one of the returned states, recomputed in numpy
        recomputed = np.abs(solution.states - np.maximum(
            solution.states @ A.T + drive, 0.0)).max(axis=1)
        np.testing.assert_allclose(solution.residual, recomputed, rtol=1e-9, atol=1e-14)
    converged = solve_equilibrium(sp.csr_array(A), drive, tol=1e-13, max_iter=10_000)
    np.testing.assert_allclose(converged.states, x_star, atol=1e-11)


def test_estimator_warns_when_the_equilibrium_is_cut_short_and_bound_still_holds():
    rng = np.random.default_rng(5)
    A, x_star, drive = _known_fixed_point(rng, 8, 20, 0.95)
    X = rng.normal(size=(20, 3))
    model = SIMRegressor(alpha=1e-2).fit(X, X[:, 0], states=X @ rng.normal(size=(3, 8)))
    model.A_ = sp.csr_array(A)
    # route the known drive through B and the intercept: drive = X B^T + b
    B = np.linalg.lstsq(X - X.mean(axis=0), drive - drive.mean(axis=0), rcond=None)[0].T
    model.B_ = sp.csr_array(B)
    model.state_intercept_ = drive.mean(axis=0) - X.mean(axis=0) @ B.T
    drive = X @ B.T + model.state_intercept_
    model.set_params(equilibrium_max_iter=2, equilibrium_tol=1e-14)
    with pytest.warns(ConvergenceWarning, match="equilibrium_max_iter=2"):
        states, residual = model.equilibrium(X, return_residual=True)
    exact = solve_equilibrium(sp.csr_array(A), drive, tol=1e-14, max_iter=10_000).states
    distance = np.abs(states - exact).max(axis=1)
    assert np.all(distance <= residual / (1 - np.abs(A).sum(axis=1).max()) * (1 + 1e-9)
                  + 1e-13)


def _jacobi_fixed_point(A, drive, n_iter=2000):
    """x = relu(A x + drive) by plain Jacobi iteration (contracts: ||A||_inf < 1)."""
    x = np.zeros_like(drive)
    for _ in range(n_iter):
        x = np.maximum(x @ A.T + drive, 0.0)
    return x


def _chain_cycle_chain(rng, norm=0.9):
    """Permuted states: 4 singletons feeding a 5-state cycle (with self-loops)
    feeding 3 singletons, so index order is not a topological order."""
    n = 12
    A = np.zeros((n, n))
    A[1, 0] = A[2, 1] = A[3, 0] = 1.0
    cycle = np.arange(4, 9)
    A[np.ix_(cycle, cycle)] = rng.normal(size=(5, 5))
    A[cycle, 3] = 1.0
    A[9, 8] = A[10, 9] = A[11, 4] = 1.0
    permutation = rng.permutation(n)
    A = _scaled_to(A, norm)[np.ix_(permutation, permutation)]
    return A, np.argsort(permutation)[cycle]


def test_components_are_solved_once_their_inputs_are_final():
    """Each state outside the cycle needs one update, whatever the index
    order; the cycle is iterated; the states are the fixed point."""
    from sksim.solvers.equilibrium import component_order

    rng = np.random.default_rng(7)
    A, cycle = _chain_cycle_chain(rng)
    order, bounds = component_order(sp.csr_array(A))
    sizes = np.diff(bounds)
    assert sorted(sizes.tolist()) == [1] * 7 + [5]
    assert set(order[np.repeat(sizes, sizes) == 5]) == set(cycle)
    rank = np.empty(A.shape[0], dtype=int)
    rank[order] = np.repeat(np.arange(sizes.size), sizes)
    reads = np.nonzero(A)
    assert np.all(rank[reads[1]] <= rank[reads[0]])  # nothing reads a later component

    drive = rng.normal(size=(40, A.shape[0]))
    solution = solve_equilibrium(sp.csr_array(A), drive, tol=1e-13)
    np.testing.assert_allclose(solution.states, _jacobi_fixed_point(A, drive),
                               rtol=0, atol=1e-11)
    residual = np.abs(solution.states
                      - np.maximum(solution.states @ A.T + drive, 0.0)).max(axis=1)
    np.testing.assert_allclose(solution.residual, residual, rtol=1e-6, atol=1e-15)

    # a permuted strictly triangular A (no cycle at all): one update per state
    triangular = A.copy()
    triangular[np.ix_(cycle, cycle)] = 0.0
    solution = solve_equilibrium(sp.csr_array(triangular), drive, tol=1e-300, max_iter=1)
    assert np.all(solution.n_iter == 1)
    assert np.all(solution.residual == 0.0)
    np.testing.assert_allclose(solution.states, _jacobi_fixed_point(triangular, drive, 20),
                               rtol=0, atol=1e-13)


def test_forward_substitution_refuses_feedback():
    from sksim.solvers import forward_substitution

    rng = np.random.default_rng(3)
    A, _ = _chain_cycle_chain(rng)
    with pytest.raises(ValueError, match="strictly lower triangular"):
        forward_substitution(sp.csr_array(A), rng.normal(size=(3, A.shape[0])))


def test_topological_ranks_order_any_numbering():
    """The fallback of component_order when scipy's numbering is not a
    topological order: Kahn's ranks put every edge upwards."""
    from sksim.solvers.equilibrium import topological_ranks

    rng = np.random.default_rng(5)
    n = 30
    ranks_true = rng.permutation(n)  # a hidden order; edges go up in it
    pairs = rng.integers(0, n, size=(200, 2))
    earlier = np.where(ranks_true[pairs[:, 0]] < ranks_true[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
    later = np.where(ranks_true[pairs[:, 0]] < ranks_true[pairs[:, 1]], pairs[:, 1], pairs[:, 0])
    ranks = topological_ranks(n, earlier, later)
    assert sorted(ranks.tolist()) == list(range(n))
    keep = earlier != later
    assert np.all(ranks[earlier[keep]] < ranks[later[keep]])
