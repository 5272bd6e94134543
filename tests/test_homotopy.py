"""The exact homotopy row solver (sksim.solvers.homotopy): the alpha path
against scikit-learn's LARS-Lasso, the constrained (multiplier) path against
the coordinate-descent solver at a tight tolerance, and the optimality
conditions rebuilt in numpy, on random and degenerate designs."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import lars_path_gram

from sksim.solvers import solve_rows, solve_rows_path
from sksim.solvers.homotopy import lasso_homotopy


def _problem(seed, degenerate, m=200, n=30, n_relu=20):
    rng = np.random.default_rng(seed)
    W = np.maximum(rng.normal(0.3, 1.0, size=(m, n)), 0.0)
    W[:, n_relu:] = rng.normal(size=(m, n - n_relu))
    if degenerate:  # a duplicate, a dead unit, a sum of two columns
        W[:, 3] = W[:, 2]
        W[:, 5] = 0.0
        W[:, 7] = W[:, 8] + W[:, 9]
    z = W[:, :6] @ rng.normal(size=6) + W[:, n_relu + 2] + rng.normal(size=m)
    return W.T @ W / m, W.T @ z / m, z @ z / m, m


def _kkt_violation(gram, correlation, coef, alpha, l2, n_bounded, multiplier):
    """Largest violation of the optimality conditions of the weighted
    elastic net at the multiplier: ``g_j = lam_j sign(w_j)`` on the support,
    ``|g_j| <= lam_j`` off it, with ``g = c - (G + l2 I) w``."""
    g = correlation - gram @ coef - l2 * coef
    lam = np.full(coef.shape, alpha)
    lam[:n_bounded] += multiplier
    on = coef != 0
    return max(np.abs(g[on] - lam[on] * np.sign(coef[on])).max(initial=0.0),
               (np.abs(g[~on]) - lam[~on]).max(initial=0.0))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha", [0.3, 0.05, 0.005, 0.0005])
def test_alpha_path_matches_lars_path_gram(seed, alpha):
    """Unconstrained rows: the same breakpoints and the same coefficients as
    scikit-learn's exact homotopy (``lars_path_gram``, method ``"lasso"``)."""
    gram, correlation, _, m = _problem(seed, degenerate=False)
    ours = lasso_homotopy(gram, correlation, alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        alphas, _, coefs = lars_path_gram(Xy=correlation * m, Gram=gram * m, n_samples=m,
                                          alpha_min=alpha, method="lasso")
    assert ours.status == 0
    assert ours.n_breakpoints == len(alphas) - 1
    np.testing.assert_allclose(ours.coef, coefs[:, -1], rtol=0, atol=1e-12)
    assert _kkt_violation(gram, correlation, ours.coef, alpha, 0.0, 0, 0.0) < 1e-12


@pytest.mark.parametrize("seed, degenerate, l2, n_bounded, bound", [
    (0, False, 0.0, 10, 0.5), (1, False, 0.0, 10, 0.2), (2, True, 0.0, 12, 0.3),
    (3, False, 0.05, 10, 0.4), (4, True, 0.0, 20, 1.0), (5, True, 0.01, 20, 0.1),
    (6, False, 0.0, 20, 50.0)])
@pytest.mark.parametrize("alpha", [0.1, 0.01, 0.001])
def test_constrained_path_is_optimal(seed, degenerate, l2, n_bounded, bound, alpha):
    """With the L1 bound on the first block: the multiplier path lands on the
    bound exactly when it is active (mu > 0), the optimality conditions hold
    to rounding, and the objective is no worse than coordinate descent's at
    a tight tolerance (the two agree to 1e-9 relative)."""
    gram, correlation, target_sq, _ = _problem(seed, degenerate)
    ours = lasso_homotopy(gram, correlation, alpha, l2=l2, n_bounded=n_bounded,
                          bound=bound)
    assert ours.status == 0
    norm = np.abs(ours.coef[:n_bounded]).sum()
    if ours.multiplier > 0:
        assert abs(norm - bound) <= 1e-12 * bound
    else:
        assert norm <= bound * (1 + 1e-12)
    assert _kkt_violation(gram, correlation, ours.coef, alpha, l2, n_bounded,
                          ours.multiplier) < 1e-10
    reference = solve_rows(gram, correlation[None], np.array([target_sq]), l1=alpha,
                           l2=l2, n_bounded=n_bounded, bound=bound, tol=1e-13,
                           max_iter=100_000)

    def objective(w):
        return (0.5 * w @ gram @ w - correlation @ w + 0.5 * target_sq
                + alpha * np.abs(w).sum() + 0.5 * l2 * w @ w)

    ours_value, reference_value = objective(ours.coef), objective(reference.coef[0])
    assert ours_value <= reference_value + 1e-9 * abs(reference_value)
    assert abs(ours.multiplier - reference.multiplier[0]) <= 1e-6 * max(
        1.0, reference.multiplier[0])


@pytest.mark.parametrize("seed, degenerate, n_bounded, bound", [
    (0, False, 10, 0.5), (2, True, 12, 0.3), (4, True, 20, 1.0), (6, False, 0, np.inf)])
def test_path_equals_independent_solves(seed, degenerate, n_bounded, bound):
    """solve_rows_path: at every alpha of a grid, each row equals the
    independent homotopy solve at that alpha (coefficients to 1e-10), is
    certified, and the bounded block meets the bound exactly."""
    gram, correlation, target_sq, _ = _problem(seed, degenerate)
    rng = np.random.default_rng(seed)
    correlations = np.vstack([correlation, correlation * 0.5 + 0.01 * rng.normal(
        size=correlation.shape)])
    targets = np.array([target_sq, 0.25 * target_sq + 0.01])
    alphas = np.geomspace(0.2, 1e-4, 12)
    ordered, path = solve_rows_path(gram, correlations, targets, alphas[::-1],
                                    n_bounded=n_bounded, bound=bound, tol=1e-10)
    np.testing.assert_array_equal(ordered, alphas)
    independent_breakpoints = 0
    for alpha, rows in zip(ordered, path):
        single = solve_rows(gram, correlations, targets, l1=alpha, n_bounded=n_bounded,
                            bound=bound, tol=1e-10, solver="homotopy")
        np.testing.assert_allclose(rows.coef, single.coef, rtol=0, atol=1e-10)
        independent_breakpoints += single.n_breakpoints.sum()
        assert np.all(rows.status == 0) and np.all(rows.method == 1)
        if n_bounded:
            assert np.all(np.abs(rows.coef[:, :n_bounded]).sum(axis=1) <= bound)
    # one path shares its breakpoints across the grid
    assert path[-1].n_breakpoints.sum() < independent_breakpoints / 3


def _iid_gram(m, n, seed=0):
    W = np.random.default_rng(seed).normal(size=(m, n))
    return W.T @ W / m


@pytest.mark.parametrize("n", [40, 300])
def test_condition_test_agrees_with_all_eigenvalues(n):
    """auto_solver's condition test (Lanczos for lambda_max, then a Cholesky
    of the shifted matrix) says what all eigenvalues of the matrix say, on
    matrices with condition numbers on both sides of the limit, and on a
    singular one."""
    from sksim.solvers.rows import _condition_at_most

    rng = np.random.default_rng(n)
    basis, _ = np.linalg.qr(rng.normal(size=(n, n)))
    for condition in (10.0, 0.5e4, 2e4, 1e8, np.inf):
        spectrum = np.geomspace(1.0, 1.0 / min(condition, 1e300), n)
        if np.isinf(condition):
            spectrum[-3:] = 0.0
        matrix = (basis * spectrum) @ basis.T
        eigenvalues = np.linalg.eigvalsh(matrix)
        expected = eigenvalues[0] * 1e4 >= eigenvalues[-1]
        assert _condition_at_most(matrix.copy(), 1e4) == expected, condition
        assert expected == (condition <= 1e4)


@pytest.mark.parametrize("case, expected", [
    ("row_bound", "homotopy"),     # one bound: the whole row is the bounded block
    ("both_bounds", "cd"),         # two multipliers: coordinate descent
    ("bounded", "homotopy"),       # the kappa-bounded state rows
    ("iid", "cd"),                 # well conditioned (condition number ~7)
    ("iid_ridge", "cd"),
    ("singular", "homotopy"),      # duplicate and sum-of-two columns
    ("near_square", "homotopy"),   # m = n + 2: condition number > 1e4
])
def test_auto_solver_choice(case, expected):
    """solver="auto": the rule of auto_solver on designs where its answer is
    known, and solve_rows(solver="auto") returns exactly what the chosen
    solver returns."""
    from sksim.solvers import auto_solver

    gram = (_problem(0, degenerate=True)[0] if case == "singular" else
            _iid_gram(402, 400) if case == "near_square" else _iid_gram(2000, 60))
    options = {"row_bound": {"row_bound": 1.0}, "bounded": {"n_bounded": 20, "bound": 0.5},
               "both_bounds": {"n_bounded": 20, "bound": 0.5, "row_bound": 1.0},
               "iid_ridge": {"l2": 0.1}}.get(case, {})
    assert auto_solver(gram, **options) == expected
    rng = np.random.default_rng(1)
    # in the range of the Gram, as c = W^T z / m always is
    correlations = 0.1 * rng.normal(size=(3, gram.shape[0])) @ gram
    target_sq = np.full(3, 10.0)
    l1 = 0.01 if case != "iid_ridge" else 0.005
    l2 = options.pop("l2", 0.0)
    auto = solve_rows(gram, correlations, target_sq, l1=l1, l2=l2, solver="auto",
                      **options)
    chosen = solve_rows(gram, correlations, target_sq, l1=l1, l2=l2, solver=expected,
                        **options)
    np.testing.assert_array_equal(auto.coef, chosen.coef)
    np.testing.assert_array_equal(auto.method, chosen.method)
    assert np.all(auto.status == 0)
