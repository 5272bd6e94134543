"""Exactness of the row solver and of the fitted SIM models.

Every row problem of a SIM model is a small convex program. These tests
recompute objectives from the returned coefficients with explicit residuals
(never through the Gram matrix the package uses) and compare them with an
independent interior-point solution (cvxpy + Clarabel at tight tolerances)
or with scikit-learn's Lasso / ElasticNet, rebuild duality certificates in
plain numpy, check the L1 bound on ``A`` without any tolerance, and recover a
feed-forward ReLU teacher that is itself feasible.
"""

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet, Lasso

from sksim import SIMClassifier, SIMRegressor
from sksim.solvers import solve_rows

cp = pytest.importorskip("cvxpy")

# Clarabel's own settings, forwarded by cvxpy's ``solve(**kwargs)``.
CLARABEL_OPTIONS = dict(
    tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, tol_ktratio=1e-10,
    max_iter=500,
)
OBJECTIVE_RTOL = 1e-6
SOLVER_TOL = 1e-8
ESTIMATOR_TOL = 1e-8

# Largest |P_package - P_reference| / P_reference seen, per reference kind
# (printed at the end of the module with ``pytest -s``).
_WORST = {"cvxpy": 0.0, "sklearn": 0.0}


def _record(kind, rel):
    _WORST[kind] = max(_WORST[kind], float(np.max(np.abs(rel), initial=0.0)))


@pytest.fixture(scope="module", autouse=True)
def _report_worst():
    yield
    print(f"\n[test_exactness] largest relative objective error: "
          f"vs cvxpy {_WORST['cvxpy']:.3e}, vs sklearn {_WORST['sklearn']:.3e}")


# --------------------------------------------------------------------- helpers
def primal_objective(W, z, w, l1, l2, intercept=0.0):
    """1/(2m)||z - W w - c||^2 + l1 ||w||_1 + l2/2 ||w||^2, explicit residual."""
    m = W.shape[0]
    r = z - W @ w - intercept
    return r @ r / (2 * m) + l1 * np.abs(w).sum() + 0.5 * l2 * (w @ w)


def cvxpy_optima(W, targets, *, n_bounded=0, bound=np.inf, l1=0.0, l2=0.0,
                 fit_intercept=False):
    """Optimal value of each row by cvxpy + Clarabel.

    The interior-point solution may violate the bound by ~tol_feas, so it is
    pulled back into the feasible set (shrinking the bounded block) and its
    objective recomputed in numpy: every returned value is the objective of a
    *feasible* point, hence an upper bound on the true optimum.
    """
    m, d = W.shape
    w = cp.Variable(d)
    z = cp.Parameter(m)
    c = cp.Variable() if fit_intercept else 0.0
    objective = (cp.sum_squares(z - W @ w - c) / (2 * m)
                 + l1 * cp.norm1(w) + 0.5 * l2 * cp.sum_squares(w))
    bounded = n_bounded > 0 and np.isfinite(bound)
    constraints = [cp.norm1(w[:n_bounded]) <= bound] if bounded else []
    problem = cp.Problem(cp.Minimize(objective), constraints)
    values = []
    for target in targets:
        z.value = np.asarray(target, dtype=float)
        with warnings.catch_warnings():
            # "optimal_inaccurate" is fine: only a feasible point is used.
            warnings.filterwarnings("ignore", "Solution may be inaccurate")
            problem.solve(solver=cp.CLARABEL, **CLARABEL_OPTIONS)
        assert problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE), problem.status
        coef = np.array(w.value, dtype=float)
        if bounded:
            norm = math.fsum(np.abs(coef[:n_bounded]))
            if norm > bound:
                coef[:n_bounded] *= bound / norm * (1 - 1e-15)
            assert math.fsum(np.abs(coef[:n_bounded])) <= bound
        intercept = np.mean(target - W @ coef) if fit_intercept else 0.0
        values.append(primal_objective(W, target, coef, l1, l2, intercept))
    return np.array(values)


def assert_l1_bound_exact(block, bound):
    """``sum_j |block[i, j]| <= bound`` in float64 for three summation orders."""
    block = np.abs(np.asarray(block, dtype=float))
    assert block.sum(axis=1).max(initial=0.0) <= bound
    for row in block:
        assert math.fsum(row) <= bound
        total = 0.0
        for value in row[::-1]:
            total += value
        assert total <= bound
        total = 0.0
        for value in row:
            total += value
        assert total <= bound


def independent_dual(W, z, r, n_bounded, bound, l1, l2, multiplier):
    """Lagrangian dual bound from the residual ``r``, built in plain numpy.

    For the multiplier ``mu >= 0`` of the bound, the Lagrangian is a weighted
    elastic net with weights ``lam_j = l1 + mu`` (bounded block) or ``l1``;
    its Fenchel dual at ``nu`` is
    ``nu^T z - m/2 ||nu||^2 - sum_j h_j^*(W_j^T nu) - mu * bound`` with
    ``h_j^*(t) = (|t| - lam_j)_+^2 / (2 l2)`` (the indicator of
    ``|t| <= lam_j`` when ``l2 == 0``). Returns the best of the dual points
    ``nu = s r / m`` with ``s`` the best dual-feasible scaling (no penalty
    term) and, when ``l2 > 0``, ``nu = r / m`` with the penalty. Whatever
    ``r`` and ``mu``, this is a lower bound on the constrained optimum.
    """
    m, d = W.shape
    bounded = n_bounded > 0 and np.isfinite(bound)
    mu = float(multiplier) if bounded else 0.0
    lam = np.full(d, float(l1))
    lam[:n_bounded] += mu
    g = W.T @ r / m
    nonzero = np.abs(g) > 0
    s_feasible = float(np.min(lam[nonzero] / np.abs(g[nonzero]), initial=np.inf))
    rz, rr = r @ z / m, r @ r / m
    s_best = min(s_feasible, max(0.0, rz / rr)) if rr > 0 else 0.0
    offset = mu * bound if bounded else 0.0
    candidates = [s_best * rz - 0.5 * s_best ** 2 * rr - offset]
    if l2 > 0:
        excess = np.maximum(np.abs(g) - lam, 0.0)
        candidates.append(rz - 0.5 * rr - (excess @ excess) / (2 * l2) - offset)
    return max(candidates)


def best_independent_dual(W, z, r, n_bounded, bound, l1, l2, multiplier):
    """``independent_dual`` maximised over the multiplier for this residual
    (bounded scalar search), never below its value at ``multiplier``."""
    at_given = independent_dual(W, z, r, n_bounded, bound, l1, l2, multiplier)
    if not (n_bounded > 0 and np.isfinite(bound)):
        return at_given
    upper = 2.0 * float(np.abs(W[:, :n_bounded].T @ r).max() / W.shape[0]) + 1.0
    result = minimize_scalar(
        lambda mu: -independent_dual(W, z, r, n_bounded, bound, l1, l2, mu),
        bounds=(0.0, upper), method="bounded",
        options=dict(xatol=1e-13 * upper, maxiter=500))
    return max(at_given, -result.fun)


def kkt_polished(W, z, w, n_bounded, bound, l1, l2, multiplier):
    """Residual and multiplier of the exact KKT point on the support and signs
    of ``w`` (a numpy least-squares solve, bordered by the bound when the
    multiplier is positive). Only used to build a better dual point, so it
    needs no feasibility: any residual gives a valid dual bound."""
    m = W.shape[0]
    support = np.flatnonzero(w)
    if support.size == 0:
        return z.copy(), multiplier
    sign = np.sign(w[support])
    in_block = support < n_bounded
    gram = W[:, support].T @ W[:, support] / m + l2 * np.eye(support.size)
    rhs = W[:, support].T @ z / m - l1 * sign
    active = multiplier > 0 and np.isfinite(bound) and in_block.any()
    if active:
        border = np.where(in_block, sign, 0.0)
        system = np.block([[gram, border[:, None]],
                           [border[None, :], np.zeros((1, 1))]])
        solution = np.linalg.lstsq(system, np.append(rhs, bound), rcond=None)[0]
        coef, mu = solution[:-1], max(float(solution[-1]), 0.0)
    else:
        rhs = rhs - multiplier * np.where(in_block, sign, 0.0)
        coef, mu = np.linalg.lstsq(gram, rhs, rcond=None)[0], multiplier
    return z - W[:, support] @ coef, mu


def relu(a):
    return np.maximum(a, 0.0)


# ----------------------------------------------------------- solver problems
# (seed, m, n_bounded, n_free, l1, l2, bound, degenerate columns)
SOLVER_CASES = [
    (0, 40, 6, 4, 1e-3, 0.0, 0.5, True),
    (1, 40, 6, 4, 5e-3, 5e-3, 0.9, False),
    (2, 80, 10, 8, 1e-2, 0.0, 0.7, True),
    (3, 80, 10, 8, 2e-3, 2e-3, 0.3, True),
    (4, 30, 12, 5, 1e-2, 1e-2, 0.95, False),
    (5, 30, 12, 5, 3e-2, 0.0, 0.6, True),
    (6, 20, 12, 10, 5e-3, 0.0, 0.8, True),   # more columns than samples
    (7, 20, 12, 10, 5e-3, 5e-3, 0.4, False),  # more columns than samples
]
SOLVER_IDS = [f"seed{c[0]}-m{c[1]}-nb{c[2]}-nf{c[3]}-l2{'+' if c[5] else '0'}"
              for c in SOLVER_CASES]


def make_row_problem(seed, m, n_bounded, n_free, degenerate):
    """Design W = [P, U] with ReLU-like nonnegative P, and row targets.

    Targets mix P and U through coefficients whose bounded block ranges from
    well inside to well outside typical bounds, so some rows have an active
    bound and others not. With ``degenerate`` one P column is identically
    zero (a dead unit) and one is a copy of another.
    """
    rng = np.random.default_rng(seed)
    P = relu(rng.normal(0.3, 1.0, size=(m, n_bounded)))
    U = rng.normal(size=(m, n_free))
    if degenerate:
        P[:, 0] = 0.0
        P[:, 2] = P[:, 1]
    W = np.hstack([P, U])
    n_rows = n_bounded
    A = rng.normal(size=(n_rows, n_bounded)) * rng.uniform(0.05, 0.6, (n_rows, 1))
    B = rng.normal(size=(n_rows, n_free)) * 0.5
    targets = A @ P.T + B @ U.T + 0.3 * rng.normal(size=(n_rows, m))
    targets[0] = rng.normal(size=m)  # a pure-noise row
    return W, targets


def gram_problem(W, targets):
    m = W.shape[0]
    return (W.T @ W / m, targets @ W / m,
            np.einsum("ij,ij->i", targets, targets) / m)


# Every exactness test runs against each row solver.
SOLVERS = ("cd", "homotopy")
_REFERENCES = {}  # cvxpy optima per case, shared by the solvers


@pytest.fixture(scope="module", params=[(case, solver) for case in SOLVER_CASES
                                        for solver in SOLVERS],
                ids=[f"{case_id}-{solver}" for case_id in SOLVER_IDS
                     for solver in SOLVERS])
def solved_rows(request):
    case, solver = request.param
    seed, m, nb, nf, l1, l2, bound, degenerate = case
    W, targets = make_row_problem(seed, m, nb, nf, degenerate)
    solution = solve_rows(*gram_problem(W, targets), n_bounded=nb, bound=bound,
                          l1=l1, l2=l2, tol=SOLVER_TOL, max_iter=100000, solver=solver)
    if case not in _REFERENCES:
        _REFERENCES[case] = cvxpy_optima(W, targets, n_bounded=nb, bound=bound, l1=l1,
                                         l2=l2)
    reference = _REFERENCES[case]
    primal = np.array([primal_objective(W, t, w, l1, l2)
                       for t, w in zip(targets, solution.coef)])
    return dict(W=W, targets=targets, nb=nb, l1=l1, l2=l2, bound=bound,
                solution=solution, reference=reference, primal=primal)


# ---------------------------------------------------------- 1. solver vs cvxpy
def test_solver_rows_match_cvxpy_objective(solved_rows):
    """Each constrained row reaches the cvxpy/Clarabel optimum to 1e-6 relative,
    with the objective recomputed from an explicit residual; all rows converge
    and the reported objective is the true objective at the returned coef."""
    sol, ref, primal = (solved_rows[k] for k in ("solution", "reference", "primal"))
    assert np.all(sol.status == 0), sol.status
    rel = (primal - ref) / ref
    _record("cvxpy", rel)
    np.testing.assert_array_less(np.abs(rel), OBJECTIVE_RTOL)
    energy = np.einsum("ij,ij->i", solved_rows["targets"],
                       solved_rows["targets"]) / solved_rows["W"].shape[0]
    np.testing.assert_allclose(sol.objective, primal, rtol=0,
                               atol=1e-10 * np.max(energy))


def test_solver_rows_satisfy_l1_bound_exactly(solved_rows):
    """``||w[:n_bounded]||_1 <= bound`` with no tolerance, for numpy's sum,
    ``math.fsum`` and plain sequential sums in both orders."""
    sol = solved_rows["solution"]
    assert_l1_bound_exact(sol.coef[:, :solved_rows["nb"]], solved_rows["bound"])


def test_solver_problems_exercise_the_bound(solved_rows):
    """Sanity of the fixture: the generated problems have binding bounds (a
    positive multiplier and a bounded block at the radius) on some rows."""
    sol, nb, bound = solved_rows["solution"], solved_rows["nb"], solved_rows["bound"]
    norms = np.abs(sol.coef[:, :nb]).sum(axis=1)
    active = sol.multiplier > 0
    assert active.any()
    np.testing.assert_allclose(norms[active], bound, rtol=1e-6)


# ---------------------------------------------------- 2. certificates in numpy
def test_solver_certificates_recomputed_in_numpy(solved_rows):
    """Dual bounds rebuilt in numpy certify every row independently of cvxpy.

    The dual point ``nu = s r / m`` at the returned coef's explicit residual
    with the reported multiplier must obey weak duality (P(w) - D >= 0). The
    best numpy certificate (that residual or the exact KKT point on the
    returned support, each with the best multiplier) must show
    ``P(w) - D <= 10 * tol * P(w)``: the solution is as good as claimed.
    """
    sol = solved_rows["solution"]
    W, targets = solved_rows["W"], solved_rows["targets"]
    args = (solved_rows["nb"], solved_rows["bound"], solved_rows["l1"],
            solved_rows["l2"])
    for i, (z, w) in enumerate(zip(targets, sol.coef)):
        primal = solved_rows["primal"][i]
        residual = z - W @ w
        reported = independent_dual(W, z, residual, *args, sol.multiplier[i])
        assert primal - reported >= -1e-12 * primal, (i, primal - reported)
        polished, polished_mu = kkt_polished(W, z, w, *args, sol.multiplier[i])
        best = max(best_independent_dual(W, z, residual, *args, sol.multiplier[i]),
                   best_independent_dual(W, z, polished, *args, polished_mu))
        gap = primal - best
        assert gap >= -1e-12 * primal, (i, gap, primal)
        assert gap <= 10 * SOLVER_TOL * primal, (i, gap / primal)


def test_solver_reported_gap_bounds_suboptimality(solved_rows):
    """The reported duality gap is an honest upper bound on the suboptimality
    measured against cvxpy (a feasible point, so an upper bound on P*)."""
    sol, ref, primal = (solved_rows[k] for k in ("solution", "reference", "primal"))
    assert np.all(sol.duality_gap >= -1e-12 * sol.objective)  # roundoff only
    slack = 1e-11 * np.maximum(primal, ref)
    np.testing.assert_array_less(primal - ref - slack, sol.duality_gap)
    np.testing.assert_array_less(sol.duality_gap,
                                 SOLVER_TOL * sol.objective + 1e-12 * primal)


def test_independent_dual_detects_a_suboptimal_point(solved_rows):
    """The numpy certificate is not vacuous: at a perturbed coef w' the dual
    built from w''s own residual leaves a gap P(w') - D above the tolerance."""
    sol = solved_rows["solution"]
    W, targets = solved_rows["W"], solved_rows["targets"]
    args = (solved_rows["nb"], solved_rows["bound"], solved_rows["l1"],
            solved_rows["l2"])
    i = int(np.argmax(sol.multiplier))
    w = sol.coef[i].copy()
    w[-1] += 0.05
    z = targets[i]
    primal = primal_objective(W, z, w, solved_rows["l1"], solved_rows["l2"])
    dual = best_independent_dual(W, z, z - W @ w, *args, sol.multiplier[i])
    assert primal - dual > 10 * SOLVER_TOL * primal


# -------------------------------------- 3. unconstrained rows vs scikit-learn
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("seed, m, nb, nf, l1, l2, degenerate", [
    (10, 40, 6, 4, 1e-2, 0.0, True),
    (11, 80, 10, 8, 5e-3, 5e-3, True),
    (12, 30, 12, 5, 2e-2, 0.0, False),
    (13, 20, 12, 10, 1e-2, 1e-2, True),
])
def test_unbounded_rows_match_sklearn(seed, m, nb, nf, l1, l2, degenerate, solver):
    """With ``bound=inf`` (output rows) each row matches scikit-learn's Lasso /
    ElasticNet on the explicit design to 1e-6 relative in objective."""
    W, targets = make_row_problem(seed, m, nb, nf, degenerate)
    sol = solve_rows(*gram_problem(W, targets), n_bounded=nb, bound=np.inf,
                     l1=l1, l2=l2, tol=SOLVER_TOL, max_iter=100000, solver=solver)
    assert np.all(sol.status == 0)
    assert np.all(sol.multiplier == 0)
    alpha = l1 + l2
    if l2 == 0:
        model = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=10**6)
    else:
        model = ElasticNet(alpha=alpha, l1_ratio=l1 / alpha, fit_intercept=False,
                           tol=1e-12, max_iter=10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(W, targets.T)
    reference = np.array([primal_objective(W, t, w, l1, l2)
                          for t, w in zip(targets, model.coef_)])
    primal = np.array([primal_objective(W, t, w, l1, l2)
                       for t, w in zip(targets, sol.coef)])
    rel = (primal - reference) / reference
    _record("sklearn", rel)
    np.testing.assert_array_less(np.abs(rel), OBJECTIVE_RTOL)
    # Gap is honest against sklearn's point as well.
    np.testing.assert_array_less(primal - reference - 1e-11 * primal,
                                 sol.duality_gap)


# ------------------------------------------------------ 4. estimator level
def make_estimator_data(seed, m, n_states, n_features, n_dead=2):
    """Inputs U and states Z driven by U (plus noise); ``n_dead`` columns of Z
    are always negative, so their ReLU columns of the design are zero."""
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(m, n_features))
    Z = U @ rng.normal(size=(n_features, n_states)) / np.sqrt(n_features)
    Z += 0.5 * rng.normal(size=(m, n_states)) + 0.2
    Z[:, :n_dead] = -np.abs(Z[:, :n_dead]) - 0.1
    return rng, U, Z


def check_state_rows(est, U, Z, alpha, l1_ratio, kappa):
    """State rows of a fitted model against cvxpy with a free intercept."""
    n_states = Z.shape[1]
    A, B = est.A_.toarray(), est.B_.toarray()
    assert A.shape == (n_states, n_states) and B.shape == (n_states, U.shape[1])
    assert_l1_bound_exact(A, kappa)
    assert float(np.max(abs(est.A_).sum(axis=1))) <= kappa
    W = np.hstack([relu(Z), U])
    l1, l2 = alpha * l1_ratio, alpha * (1 - l1_ratio)
    coef = np.hstack([A, B])
    primal = np.array([
        primal_objective(W, Z[:, i], coef[i], l1, l2, est.state_intercept_[i])
        for i in range(n_states)])
    reference = cvxpy_optima(W, Z.T, n_bounded=n_states, bound=kappa, l1=l1,
                             l2=l2, fit_intercept=True)
    rel = (primal - reference) / reference
    _record("cvxpy", rel)
    np.testing.assert_array_less(np.abs(rel), OBJECTIVE_RTOL)
    np.testing.assert_allclose(est.state_objectives_, primal, rtol=1e-9)
    np.testing.assert_array_less(primal - reference - 1e-11 * primal,
                                 est.state_duality_gaps_)
    # Dead units: their (constant zero) design columns get no weight.
    dead = np.all(Z <= 0, axis=0)
    assert np.all(A[:, dead] == 0)
    return rel


def check_output_rows(est, U, Z, targets, output_alpha, l1_ratio, refit):
    """Output rows against sklearn's ElasticNet/Lasso with an intercept."""
    states = est.equilibrium(U) if refit else relu(Z)
    W = np.hstack([states, U])
    coef = np.hstack([est.C_.toarray(), est.D_.toarray()])
    assert coef.shape[0] == targets.shape[1]
    l1, l2 = output_alpha * l1_ratio, output_alpha * (1 - l1_ratio)
    if l1_ratio == 1.0:
        model = Lasso(alpha=output_alpha, tol=1e-12, max_iter=10**6)
    else:
        model = ElasticNet(alpha=output_alpha, l1_ratio=l1_ratio, tol=1e-12,
                           max_iter=10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(W, targets)
    ref_coef = np.atleast_2d(model.coef_)
    ref_intercept = np.atleast_1d(model.intercept_)
    primal, reference = [], []
    for k in range(targets.shape[1]):
        t = targets[:, k]
        primal.append(primal_objective(W, t, coef[k], l1, l2, est.intercept_[k]))
        reference.append(primal_objective(W, t, ref_coef[k], l1, l2,
                                          ref_intercept[k]))
    primal, reference = np.array(primal), np.array(reference)
    rel = (primal - reference) / reference
    _record("sklearn", rel)
    np.testing.assert_array_less(np.abs(rel), OBJECTIVE_RTOL)
    np.testing.assert_allclose(est.output_objectives_, primal, rtol=1e-9)


# (seed, m, n_states, n_features, alpha, output_alpha, l1_ratio, kappa, refit)
REGRESSOR_CASES = [
    (20, 40, 6, 4, 1e-2, None, 1.0, 0.5, True),
    (21, 80, 10, 8, 3e-3, 1e-2, 0.5, 0.9, False),
    (22, 30, 12, 5, 2e-2, None, 0.5, 0.3, True),
    (23, 30, 12, 5, 5e-3, 3e-2, 1.0, 0.7, False),
]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    "seed, m, n_states, n_features, alpha, output_alpha, l1_ratio, kappa, refit",
    REGRESSOR_CASES)
def test_regressor_rows_are_optimal(seed, m, n_states, n_features, alpha,
                                    output_alpha, l1_ratio, kappa, refit, solver):
    """SIMRegressor: every state row matches cvxpy (free intercept on the
    un-centred data) to 1e-6 relative with ``||A||_inf <= kappa`` exactly;
    every output row matches scikit-learn on [equilibrium(X), X] (refit) or
    [relu(Z), X] to 1e-6 relative."""
    rng, U, Z = make_estimator_data(seed, m, n_states, n_features)
    y = np.column_stack([relu(Z) @ rng.normal(size=n_states) + U[:, 0],
                         rng.normal(size=m)])
    est = SIMRegressor(alpha=alpha, output_alpha=output_alpha, kappa=kappa,
                       l1_ratio=l1_ratio, refit_outputs=refit, relax=1.0,
                       tol=ESTIMATOR_TOL, max_iter=50000, solver=solver)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(U, y, states=Z)
    rel = check_state_rows(est, U, Z, alpha, l1_ratio, kappa)
    assert np.any(est.state_multipliers_ > 0)  # the bound binds somewhere
    out_alpha = alpha if output_alpha is None else output_alpha
    check_output_rows(est, U, Z, y, out_alpha, l1_ratio, refit)
    assert np.isfinite(rel).all()


@pytest.mark.parametrize("seed, m, n_states, n_features, n_classes, alpha, "
                         "l1_ratio, kappa, refit", [
                             (30, 40, 6, 4, 2, 1e-2, 1.0, 0.6, True),
                             (31, 80, 10, 8, 3, 3e-3, 0.5, 0.9, True),
                             (32, 30, 12, 5, 2, 1e-2, 0.5, 0.4, False),
                         ])
@pytest.mark.parametrize("solver", SOLVERS)
def test_classifier_rows_are_optimal(seed, m, n_states, n_features, n_classes,
                                     alpha, l1_ratio, kappa, refit, solver):
    """SIMClassifier: state rows as for the regressor; the output rows fit
    one 0/1 indicator column per class (two columns for two classes) and
    match scikit-learn to 1e-6 relative."""
    rng, U, Z = make_estimator_data(seed, m, n_states, n_features)
    labels = np.array(["a", "b", "c"][:n_classes])
    y = labels[np.argmax(U[:, :n_classes] + 0.5 * rng.normal(size=(m, n_classes)),
                         axis=1)]
    assert len(np.unique(y)) == n_classes
    est = SIMClassifier(alpha=alpha, kappa=kappa, l1_ratio=l1_ratio,
                        refit_outputs=refit, relax=1.0, tol=ESTIMATOR_TOL,
                        max_iter=50000, solver=solver)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(U, y, states=Z)
    check_state_rows(est, U, Z, alpha, l1_ratio, kappa)
    targets = (y[:, None] == est.classes_[None, :]).astype(float)
    assert est.C_.shape[0] == n_classes
    check_output_rows(est, U, Z, targets, alpha, l1_ratio, refit)


# --------------------------------------------- 5. feasible teacher recovered
def make_teacher(seed, m=120, p=5, n1=8, n2=6, always_active=False):
    """A random 2-hidden-layer ReLU MLP ``y = w3 . relu(W2 relu(W1 u + b1) +
    b2) + b3`` whose hidden-to-hidden rows have L1 norms in [0.4, 0.8].

    Biases put each unit's activity fraction in [0.3, 0.7] on the training
    inputs. With ``always_active`` the last second-layer unit is positive on
    every sample, so its ReLU column equals an affine function of the
    first-layer columns: an exactly collinear (singular) design.
    """
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(m, p))
    W1 = rng.normal(size=(n1, p))
    b1 = -np.array([np.quantile(h, q) for h, q in
                    zip((U @ W1.T).T, rng.uniform(0.3, 0.7, n1))])
    W2 = rng.normal(size=(n2, n1))
    W2 *= rng.uniform(0.4, 0.8, size=(n2, 1)) / np.abs(W2).sum(axis=1, keepdims=True)
    drive = relu(U @ W1.T + b1) @ W2.T
    b2 = -np.array([np.quantile(h, q) for h, q in
                    zip(drive.T, rng.uniform(0.3, 0.7, n2))])
    if always_active:
        b2[-1] = 0.1 - drive[:, -1].min()
    w3, b3 = rng.normal(size=n2), 0.7

    def forward(inputs):
        h1 = inputs @ W1.T + b1
        h2 = relu(h1) @ W2.T + b2
        return np.hstack([h1, h2]), relu(h2) @ w3 + b3

    return rng, U, W2, forward


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("seed", [40, 41, 42])
def test_feasible_relu_teacher_is_reproduced(seed, solver):
    """A 2-hidden-layer ReLU MLP whose hidden-to-hidden rows have L1 norm
    < kappa is itself a feasible SIM model; with alpha=1e-8 the fit recovers
    its hidden-to-hidden weights, its equilibrium equals the teacher's
    post-activations, and predictions reproduce its outputs to 1e-4."""
    rng, U, W2, forward = make_teacher(seed)
    Z, y = forward(U)
    n1 = W2.shape[1]
    kappa = np.abs(W2).sum(axis=1).max() + 0.05
    est = SIMRegressor(alpha=1e-8, kappa=kappa, refit_outputs=True,
                       tol=ESTIMATOR_TOL, max_iter=50000, solver=solver)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(U, y, states=Z)
    assert_l1_bound_exact(est.A_.toarray(), kappa)
    np.testing.assert_allclose(est.A_.toarray()[n1:, :n1], W2, atol=1e-4)
    states, residual = est.equilibrium(U, return_residual=True)
    assert residual.max() <= 1e-9
    np.testing.assert_allclose(states, relu(Z), atol=1e-4 * np.abs(Z).max())
    assert np.linalg.norm(est.predict(U) - y) <= 1e-4 * np.linalg.norm(y)
    # The recovered model is the teacher, so it generalises like it.
    U_new = rng.normal(size=(50, U.shape[1]))
    y_new = forward(U_new)[1]
    assert np.linalg.norm(est.predict(U_new) - y_new) <= 1e-4 * np.linalg.norm(y_new)


@pytest.mark.parametrize("solver", SOLVERS)
def test_singular_teacher_design_is_certified_or_flagged(solver):
    """An always-active unit makes the design exactly singular; with a tiny
    penalty coordinate descent may not converge. Whatever happens, the
    reported state gaps must bound the true suboptimality (vs cvxpy), rows
    whose gap meets ``tol`` must match cvxpy to 1e-6, and any row that does
    not must be announced by a ConvergenceWarning."""
    _, U, W2, forward = make_teacher(43, always_active=True)
    Z, y = forward(U)
    assert np.all(Z[:, -1] > 0)
    kappa = np.abs(W2).sum(axis=1).max() + 0.05
    alpha = 1e-8
    est = SIMRegressor(alpha=alpha, kappa=kappa, tol=ESTIMATOR_TOL, max_iter=5000,
                       solver=solver)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(U, y, states=Z)
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    assert_l1_bound_exact(est.A_.toarray(), kappa)
    W = np.hstack([relu(Z), U])
    coef = np.hstack([est.A_.toarray(), est.B_.toarray()])
    primal = np.array([primal_objective(W, Z[:, i], coef[i], alpha, 0.0,
                                        est.state_intercept_[i])
                       for i in range(Z.shape[1])])
    reference = cvxpy_optima(W, Z.T, n_bounded=Z.shape[1], bound=kappa, l1=alpha,
                             fit_intercept=True)
    np.testing.assert_array_less(primal - reference - 1e-11 * primal,
                                 est.state_duality_gaps_ + 1e-15)
    # The solver accepts gap <= tol * P plus its roundoff floor (the Gram form
    # of ||r||^2 / m loses ~1e-13 of the target energy); these near-perfect
    # fits (P ~ 1e-8 of an energy ~ 1) sit on that floor.
    centred = Z - Z.mean(axis=0)
    floor = 1e-12 * (centred**2).mean(axis=0)
    certified = est.state_duality_gaps_ <= ESTIMATOR_TOL * primal + floor
    rel = (primal - reference) / reference
    _record("cvxpy", rel[certified])
    np.testing.assert_array_less(np.abs(primal - reference)[certified],
                                 OBJECTIVE_RTOL * reference[certified] + floor[certified])
    if not certified.all():
        assert warned


# ------------------------------------------------- robust mode: the row bound
def cvxpy_optima_two_bounds(W, targets, *, n_bounded, bound, row_bound, l1, l2,
                            fit_intercept=False):
    """Optimal values with ``||w[:n_bounded]||_1 <= bound`` and
    ``||w||_1 <= row_bound`` by cvxpy + Clarabel, at feasible points (the
    solution is shrunk into both balls before its objective is recomputed)."""
    m, d = W.shape
    w = cp.Variable(d)
    z = cp.Parameter(m)
    c = cp.Variable() if fit_intercept else 0.0
    objective = (cp.sum_squares(z - W @ w - c) / (2 * m)
                 + l1 * cp.norm1(w) + 0.5 * l2 * cp.sum_squares(w))
    constraints = [cp.norm1(w) <= row_bound]
    if n_bounded:
        constraints.append(cp.norm1(w[:n_bounded]) <= bound)
    problem = cp.Problem(cp.Minimize(objective), constraints)
    values = []
    for target in targets:
        z.value = np.asarray(target, dtype=float)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Solution may be inaccurate")
            problem.solve(solver=cp.CLARABEL, **CLARABEL_OPTIONS)
        assert problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE), problem.status
        coef = np.array(w.value, dtype=float)
        for stop, radius in ((n_bounded, bound), (d, row_bound)):
            norm = math.fsum(np.abs(coef[:stop]))
            if stop and norm > radius:
                coef *= radius / norm * (1 - 1e-15)
        assert math.fsum(np.abs(coef)) <= row_bound
        assert math.fsum(np.abs(coef[:n_bounded])) <= bound
        intercept = np.mean(target - W @ coef) if fit_intercept else 0.0
        values.append(primal_objective(W, target, coef, l1, l2, intercept))
    return np.array(values)


# (solver case index, l1, l2, row_bound): penalised and pure constrained
# (alpha = 0) forms, with row bounds that bind on most rows.
ROW_BOUND_CASES = [
    (0, 1e-3, 0.0, 1.0), (1, 5e-3, 5e-3, 0.3), (2, 0.0, 0.0, 0.7),
    (3, 2e-3, 2e-3, 1.0), (5, 0.0, 0.0, 0.5), (6, 5e-3, 0.0, 0.3),
    (7, 0.0, 0.0, 0.7),
]


def _assert_rows_match_cvxpy(W, targets, solution, l1, l2, n_bounded, bound, row_bound):
    """Every row's objective within OBJECTIVE_RTOL of cvxpy+Clarabel's optimum
    under both bounds; returns (objectives, cvxpy optima)."""
    reference = cvxpy_optima_two_bounds(W, targets, n_bounded=n_bounded, bound=bound,
                                        row_bound=row_bound, l1=l1, l2=l2)
    primal = np.array([primal_objective(W, t, w, l1, l2)
                       for t, w in zip(targets, solution.coef)])
    rel = (primal - reference) / reference
    _record("cvxpy", rel)
    np.testing.assert_array_less(np.abs(rel), OBJECTIVE_RTOL)
    return primal, reference


@pytest.mark.parametrize("index, l1, l2, row_bound", ROW_BOUND_CASES)
def test_row_bound_rows_match_cvxpy(index, l1, l2, row_bound):
    """Both bounds at once: every row converges, matches cvxpy+Clarabel to
    1e-6 relative, satisfies both L1 bounds exactly (three summation orders),
    and its reported gap bounds its suboptimality."""
    seed, m, nb, nf, _, _, bound, degenerate = SOLVER_CASES[index]
    W, targets = make_row_problem(seed, m, nb, nf, degenerate)
    solution = solve_rows(*gram_problem(W, targets), n_bounded=nb, bound=bound,
                          row_bound=row_bound, l1=l1, l2=l2, tol=SOLVER_TOL,
                          max_iter=100000)
    assert np.all(solution.status == 0), solution.status
    primal, reference = _assert_rows_match_cvxpy(W, targets, solution, l1, l2, nb, bound,
                                                 row_bound)
    assert_l1_bound_exact(solution.coef[:, :nb], bound)
    assert_l1_bound_exact(solution.coef, row_bound)
    assert np.all(primal - solution.duality_gap <= reference * (1 + 1e-9))
    assert np.all(solution.duality_gap <= SOLVER_TOL * solution.objective * 1.01
                  + 1e-12)
    # the row bound binds (a positive multiplier) on most rows
    assert np.mean(solution.row_multiplier > 0) >= 0.5


@pytest.mark.parametrize("index, l1, l2, row_bound", [
    (0, 1e-3, 0.0, 1.0), (1, 5e-3, 5e-3, 0.3), (2, 0.0, 0.0, 0.7), (6, 5e-3, 0.0, 0.3)])
def test_row_bound_alone_by_the_homotopy_matches_cvxpy(index, l1, l2, row_bound):
    """Rows with the row bound and no bounded block (output rows under
    row_bound): the homotopy follows the row bound's multiplier over the
    whole row, lands exactly on it, matches cvxpy+Clarabel, and reports the
    multiplier as the row bound's."""
    seed, m, nb, nf, _, _, _, degenerate = SOLVER_CASES[index]
    W, targets = make_row_problem(seed, m, nb, nf, degenerate)
    solution = solve_rows(*gram_problem(W, targets), row_bound=row_bound, l1=l1, l2=l2,
                          tol=SOLVER_TOL, max_iter=100000, solver="homotopy")
    assert np.all(solution.status == 0), solution.status
    assert np.all(solution.method == 1)  # no coordinate-descent fallback
    _assert_rows_match_cvxpy(W, targets, solution, l1, l2, 0, np.inf, row_bound)
    assert_l1_bound_exact(solution.coef, row_bound)
    assert np.all(solution.multiplier == 0)
    active = solution.row_multiplier > 0
    assert np.mean(active) >= 0.5
    norms = np.abs(solution.coef).sum(axis=1)
    np.testing.assert_allclose(norms[active], row_bound, rtol=1e-12)


def test_row_bound_estimator_matches_cvxpy_and_bounds_sensitivity():
    """SIMRegressor(row_bound=R): state rows (free intercept) and output rows
    match cvxpy with both bounds; every row of [A B] and [C D] has L1 norm
    <= R exactly, so lipschitz_bound_ <= R^2 / (1 - kappa) + R."""
    rng, U, Z = make_estimator_data(24, 40, 6, 4)
    y = np.column_stack([relu(Z) @ rng.normal(size=6) + U[:, 0], rng.normal(size=40)])
    alpha, kappa, row_bound = 3e-3, 0.6, 0.8
    est = SIMRegressor(alpha=alpha, kappa=kappa, row_bound=row_bound,
                       tol=ESTIMATOR_TOL, max_iter=50000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(U, y, states=Z)
    W = np.hstack([relu(Z), U])
    coef = np.hstack([est.A_.toarray(), est.B_.toarray()])
    reference = cvxpy_optima_two_bounds(W, Z.T, n_bounded=6, bound=kappa,
                                        row_bound=row_bound, l1=alpha, l2=0.0,
                                        fit_intercept=True)
    primal = np.array([primal_objective(W, Z[:, i], coef[i], alpha, 0.0,
                                        est.state_intercept_[i]) for i in range(6)])
    rel = (primal - reference) / reference
    _record("cvxpy", rel)
    np.testing.assert_array_less(np.abs(rel), OBJECTIVE_RTOL)
    W_out = np.hstack([est.equilibrium(U), U])
    out_coef = np.hstack([est.C_.toarray(), est.D_.toarray()])
    out_reference = cvxpy_optima_two_bounds(W_out, y.T, n_bounded=0, bound=np.inf,
                                            row_bound=row_bound, l1=alpha, l2=0.0,
                                            fit_intercept=True)
    out_primal = np.array([primal_objective(W_out, y[:, k], out_coef[k], alpha, 0.0,
                                            est.intercept_[k]) for k in range(2)])
    rel = (out_primal - out_reference) / out_reference
    np.testing.assert_array_less(np.abs(rel), OBJECTIVE_RTOL)
    assert_l1_bound_exact(est.A_.toarray(), kappa)
    assert_l1_bound_exact(coef, row_bound)
    assert_l1_bound_exact(out_coef, row_bound)
    assert np.any(est.state_row_bound_multipliers_ > 0)
    assert est.lipschitz_bound_ <= row_bound**2 / (1 - kappa) + row_bound


# ---------------------------------------------------------- relaxed Lasso
# (solver case index, relax, row_bound)
RELAX_CASES = [(0, 0.05, np.inf), (2, 0.01, np.inf), (4, 0.2, np.inf),
               (6, 0.05, np.inf), (3, 0.05, 1.0)]


@pytest.mark.parametrize("index, relax, row_bound", RELAX_CASES)
def test_relaxed_rows_are_optimal_on_their_support(index, relax, row_bound):
    """``relax < 1``: every row keeps (a subset of) the support of the plain
    solve, matches cvxpy+Clarabel on the design restricted to that support
    with the penalties scaled by ``relax``, keeps both L1 bounds exactly, its
    gap bounds its suboptimality, and it fits its target at least as well
    as the plain solution."""
    seed, m, nb, nf, l1, l2, bound, degenerate = SOLVER_CASES[index]
    W, targets = make_row_problem(seed, m, nb, nf, degenerate)
    problem = gram_problem(W, targets)
    options = dict(n_bounded=nb, bound=bound, row_bound=row_bound, l1=l1, l2=l2,
                   tol=SOLVER_TOL, max_iter=100000)
    plain = solve_rows(*problem, **options)
    relaxed = solve_rows(*problem, relax=relax, **options)
    assert np.all(relaxed.status == 0), relaxed.status
    assert np.all((relaxed.coef != 0) <= (plain.coef != 0))
    for i, target in enumerate(targets):
        support = np.flatnonzero(plain.coef[i])
        if support.size == 0:
            assert not relaxed.coef[i].any()
            continue
        kept = int(np.sum(support < nb))
        solve = cvxpy_optima if np.isinf(row_bound) else cvxpy_optima_two_bounds
        extra = {} if np.isinf(row_bound) else dict(row_bound=row_bound)
        reference = solve(W[:, support], [target], n_bounded=kept,
                          bound=bound if kept else np.inf, l1=l1 * relax,
                          l2=l2 * relax, **extra)[0]
        primal = primal_objective(W[:, support], target, relaxed.coef[i, support],
                                  l1 * relax, l2 * relax)
        assert abs(primal - reference) <= OBJECTIVE_RTOL * reference
        assert math.isclose(primal, relaxed.objective[i], rel_tol=1e-9)
        assert primal - relaxed.duality_gap[i] <= reference * (1 + 1e-9)
        fit_relaxed = np.sum((target - W @ relaxed.coef[i]) ** 2)
        fit_plain = np.sum((target - W @ plain.coef[i]) ** 2)
        assert fit_relaxed <= fit_plain * (1 + 1e-6) + 1e-12
    assert_l1_bound_exact(relaxed.coef[:, :nb], bound)
    if np.isfinite(row_bound):
        assert_l1_bound_exact(relaxed.coef, row_bound)
    assert np.all(relaxed.n_iter >= plain.n_iter)
    again = solve_rows(*problem, relax=1.0, **options)
    np.testing.assert_array_equal(again.coef, plain.coef)


def test_relaxed_estimator_rows_and_bound():
    """SIMRegressor(relax=0.05): state rows optimal on their supports (free
    intercept, cvxpy), ``||A||_inf <= kappa`` exactly, and a lower training
    error of the states than the plain fit at the same alpha."""
    rng, U, Z = make_estimator_data(31, 60, 6, 4)
    y = relu(Z) @ rng.normal(size=6) + U[:, 0]
    alpha, kappa, relax = 3e-2, 0.6, 0.05
    plain = SIMRegressor(alpha=alpha, kappa=kappa, relax=1.0, tol=ESTIMATOR_TOL,
                         max_iter=50000).fit(U, y, states=Z)
    est = SIMRegressor(alpha=alpha, kappa=kappa, relax=relax, tol=ESTIMATOR_TOL,
                       max_iter=50000).fit(U, y, states=Z)
    W = np.hstack([relu(Z), U])
    coef = np.hstack([est.A_.toarray(), est.B_.toarray()])
    plain_coef = np.hstack([plain.A_.toarray(), plain.B_.toarray()])
    assert np.all((coef != 0) <= (plain_coef != 0))
    for i in range(6):
        support = np.flatnonzero(plain_coef[i])
        if support.size == 0:
            continue
        kept = int(np.sum(support < 6))
        reference = cvxpy_optima(W[:, support], [Z[:, i]], n_bounded=kept,
                                 bound=kappa if kept else np.inf, l1=alpha * relax,
                                 fit_intercept=True)[0]
        primal = primal_objective(W[:, support], Z[:, i], coef[i, support],
                                  alpha * relax, 0.0, est.state_intercept_[i])
        assert abs(primal - reference) <= OBJECTIVE_RTOL * reference
    assert_l1_bound_exact(est.A_.toarray(), kappa)
    state_error = np.sum((Z - W @ coef.T - est.state_intercept_) ** 2)
    plain_error = np.sum((Z - W @ plain_coef.T - plain.state_intercept_) ** 2)
    assert state_error < plain_error
