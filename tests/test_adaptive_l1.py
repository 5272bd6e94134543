"""Adaptive L1 weights (``solve_rows(l1_factors=...)``, the estimators'
``adaptive_l1``): each row is the weighted Lasso ``1/(2m)||z - W w||^2 +
l1 sum_j f_ij |w_j|`` under the same kappa bound. Checked against cvxpy with
the weighted norm, against scikit-learn's Lasso on rescaled columns (no
bound), and by a KKT residual recomputed in numpy; a residual block's weighted
rows against cvxpy on its explicit patch design are in test_graph_teachers
(``test_residual_block_rows_match_cvxpy_on_the_patch_design``)."""

import math
import warnings

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from sksim.solvers import solve_rows

from test_exactness import assert_l1_bound_exact, gram_problem, make_row_problem

cp = pytest.importorskip("cvxpy")


def _weighted_objective(W, z, w, l1, factors):
    r = z - W @ w
    return r @ r / (2 * W.shape[0]) + l1 * np.sum(factors * np.abs(w))


def _cvxpy_weighted(W, targets, factors, l1, n_bounded, bound):
    """A feasible point's objective per row (an upper bound on the optimum)."""
    values = []
    for z, f in zip(targets, factors):
        w = cp.Variable(W.shape[1])
        objective = cp.sum_squares(z - W @ w) / (2 * W.shape[0]) + l1 * cp.sum(
            cp.multiply(f, cp.abs(w)))
        problem = cp.Problem(cp.Minimize(objective), [cp.norm1(w[:n_bounded]) <= bound])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Solution may be inaccurate")
            problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                          tol_feas=1e-12, max_iter=500)
        coef = np.array(w.value)
        norm = math.fsum(np.abs(coef[:n_bounded]))
        if norm > bound:
            coef[:n_bounded] *= bound / norm * (1 - 1e-15)
        values.append(_weighted_objective(W, z, coef, l1, f))
    return np.array(values)


def _problem(seed=0):
    W, targets = make_row_problem(seed, m=120, n_bounded=8, n_free=4, degenerate=False)
    factors = np.random.default_rng(seed).uniform(0.0, 3.0, size=(targets.shape[0], W.shape[1]))
    factors[:, 3] = 0.0  # an unpenalised column
    return W, targets, factors


@pytest.mark.parametrize("relax", [1.0, 0.1])
def test_weighted_rows_match_cvxpy_and_keep_the_bound(relax):
    W, targets, factors = _problem()
    l1, bound = 0.02, 0.6
    rows = solve_rows(*gram_problem(W, targets), n_bounded=8, bound=bound, l1=l1, tol=1e-10,
                      max_iter=20000, l1_factors=factors, relax=1.0)
    assert np.all(rows.status == 0)
    assert_l1_bound_exact(rows.coef[:, :8], bound)
    ours = np.array([_weighted_objective(W, z, w, l1, f)
                     for z, w, f in zip(targets, rows.coef, factors)])
    reference = _cvxpy_weighted(W, targets, factors, l1, 8, bound)
    assert np.all(ours <= reference * (1 + 1e-7) + 1e-12)
    assert np.any(np.abs(rows.coef[:, :8]).sum(1) > bound * (1 - 1e-9))  # the bound binds
    if relax < 1.0:  # the relaxed rows: the same weighted problem on the support
        relaxed = solve_rows(*gram_problem(W, targets), n_bounded=8, bound=bound, l1=l1,
                             tol=1e-10, max_iter=20000, l1_factors=factors, relax=relax)
        assert np.all((relaxed.coef != 0) <= (rows.coef != 0))
        assert_l1_bound_exact(relaxed.coef[:, :8], bound)


def test_weighted_rows_satisfy_kkt_recomputed_in_numpy():
    W, targets, factors = _problem(1)
    l1, bound = 0.02, 0.6
    rows = solve_rows(*gram_problem(W, targets), n_bounded=8, bound=bound, l1=l1, tol=1e-12,
                      max_iter=50000, l1_factors=factors)
    m = W.shape[0]
    for z, w, f, mu in zip(targets, rows.coef, factors, rows.multiplier):
        weights = l1 * f + np.r_[np.full(8, mu), np.zeros(4)]
        gradient = W.T @ (z - W @ w) / m
        on = w != 0
        scale = np.abs(gradient).max()
        assert np.all(np.abs(gradient[on] - weights[on] * np.sign(w[on])) <= 1e-6 * scale)
        assert np.all(np.abs(gradient[~on]) <= weights[~on] + 1e-6 * scale)
        if mu > 0:  # complementary slackness
            assert abs(np.abs(w[:8]).sum() - bound) <= 1e-9


def test_without_a_bound_weights_equal_lasso_on_rescaled_columns():
    W, targets, factors = _problem(2)
    factors[:, 3] = 0.5  # Lasso on rescaled columns needs positive factors
    l1 = 0.01
    rows = solve_rows(*gram_problem(W, targets), l1=l1, tol=1e-12, max_iter=50000,
                      l1_factors=factors)
    for z, w, f in zip(targets, rows.coef, factors):
        lasso = Lasso(alpha=l1, fit_intercept=False, tol=1e-14, max_iter=200000)
        lasso.fit(W / f, z)
        np.testing.assert_allclose(w, lasso.coef_ / f, atol=1e-7)


def test_unit_factors_reproduce_the_plain_rows():
    W, targets, _ = _problem(3)
    data = gram_problem(W, targets)
    plain = solve_rows(*data, n_bounded=8, bound=0.6, l1=0.02, solver="cd")
    ones = solve_rows(*data, n_bounded=8, bound=0.6, l1=0.02,
                      l1_factors=np.ones((targets.shape[0], W.shape[1])))
    np.testing.assert_array_equal(plain.coef, ones.coef)


@pytest.mark.parametrize("bad", [np.full((8, 12), -1.0), np.full((8, 12), np.inf),
                                 np.ones((3, 12))])
def test_bad_factors_are_refused(bad):
    W, targets, _ = _problem()
    with pytest.raises(ValueError, match="l1_factors"):
        solve_rows(*gram_problem(W, targets), l1=0.02, l1_factors=bad)


# ------------------------------------------------------ estimators: adaptive_l1
torch = pytest.importorskip("torch")

from sksim import SIMClassifier, SIMRegressor, sim_path  # noqa: E402
from sksim import weight_sharing as ws  # noqa: E402

from helpers import assert_equals_unrolled, exact_inf_norm  # noqa: E402
from test_graph_teachers import _data, _teacher  # noqa: E402


def test_factors_follow_the_teachers_rescaled_kernels():
    baseline = _teacher("resnet")
    maps = baseline.trace(_data(20))
    structure = ws.fitting_structure(maps.structure)
    scales = ws.block_scales(structure, maps.kernels, 0.95)
    block = 2  # a 3x3 conv link and the identity shortcut
    links = structure.links[block]
    assert len(links) == 2
    factors = ws.adaptive_l1_factors(maps, structure, scales, block, 2.0)
    rescaled = [np.abs(k) * scales[block] / scales[link.source]
                for link, k in zip(maps.structure.links[block], maps.kernels[block])]
    magnitude = np.hstack(rescaled)
    rms = np.sqrt((magnitude ** 2).mean(axis=1, keepdims=True))
    np.testing.assert_allclose(factors, (magnitude / rms + 1e-3) ** -2.0, rtol=1e-12)
    shortcut = factors[:, -rescaled[1].shape[1]:]
    off_diagonal = ~np.eye(shortcut.shape[0], dtype=bool)
    np.testing.assert_allclose(shortcut[off_diagonal], 1e6)  # the teacher has no such entry
    head = ws.adaptive_l1_factors(maps, structure, scales, None, 1.0)
    assert head.shape == (structure.n_outputs, sum(k.shape[1] for k in maps.head_kernels))


def test_adaptive_fit_is_exact_and_keeps_the_teachers_large_entries():
    baseline = _teacher("resnet")
    X = _data()
    _, outputs = baseline.record(X)
    params = {"alpha": 3e-3, "kappa": 0.6}
    plain = SIMRegressor(baseline, **params).fit(X, outputs, baseline_outputs=outputs)
    adaptive = SIMRegressor(baseline, adaptive_l1=2.0, **params).fit(
        X, outputs, baseline_outputs=outputs)
    assert exact_inf_norm(adaptive.A_) <= 0.6
    assert np.all(adaptive.state_duality_gaps_ <= 1e-6 * adaptive.state_objectives_ + 1e-12)
    assert_equals_unrolled(adaptive, _data(25, seed=1))
    maps = baseline.trace(X)

    def mean_teacher_rank(model):
        """Mean percentile, in its row of the teacher's kernel, of a kept entry."""
        ranks = []
        for block, kernels in enumerate(model.kernels_):
            teacher = np.abs(maps.kernels[block][0])
            kept = kernels[0] != 0
            order = teacher.argsort(axis=1).argsort(axis=1) / max(teacher.shape[1] - 1, 1)
            ranks.append(order[kept])
        return np.concatenate(ranks).mean()

    assert mean_teacher_rank(adaptive) > mean_teacher_rank(plain)


def test_adaptive_l1_is_refused_where_no_teacher_kernel_exists():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 5)), np.arange(60) % 2
    with pytest.raises(ValueError, match="adaptive_l1"):
        SIMClassifier(adaptive_l1=1.0).fit(X, y)
    with pytest.raises(ValueError, match="adaptive_l1"):
        sim_path(SIMClassifier(adaptive_l1=1.0), X, y)
