"""penalty="channel": the rows of a block solved together under a group
penalty over the states they read. The group solver against scikit-learn's
MultiTaskLasso and cvxpy, its certificate recomputed in numpy, the kappa bound
exact; the estimator's blocks against cvxpy; whole hidden units removed."""

import math
import warnings

import numpy as np
import pytest
from helpers import digits_split, exact_inf_norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import MultiTaskLasso

from sksim import SIMClassifier, SIMClassifierCV, SIMRegressor
from sksim.solvers.groups import solve_group_rows

cp = pytest.importorskip("cvxpy")


def _problem(seed=0, n=200, d=30, rows=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = np.zeros((d, rows))
    W[:6] = rng.normal(size=(6, rows))
    Y = X @ W + 0.1 * rng.normal(size=(n, rows))
    X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)
    return X, Y, X.T @ X / n, Y.T @ X / n, (Y ** 2).sum(axis=0) / n


def _objective(X, Y, W, group_l1, l1, groups):
    """The joint objective in sample form: squared residuals, group norms, L1."""
    residual = Y - X @ W.T
    group_term = sum(np.linalg.norm(W[:, g]) for g in groups)
    return ((residual ** 2).sum() / (2 * len(X)) + group_l1 * group_term
            + float(np.sum(np.abs(W) * l1)))


def test_unbounded_groups_equal_multitask_lasso():
    X, Y, G, C, t = _problem()
    ours = solve_group_rows(G, C, t, group_of=np.arange(30), group_l1=0.05, tol=1e-12)
    reference = MultiTaskLasso(alpha=0.05, tol=1e-12, max_iter=100000,
                               fit_intercept=False).fit(X, Y)
    assert ours.status == 0
    np.testing.assert_allclose(ours.coef, reference.coef_, atol=1e-8)
    assert np.sum(np.all(ours.coef == 0, axis=0)) >= 20  # whole columns removed


@pytest.mark.parametrize("l1, bound", [(0.0, 0.5), (0.01, 0.5), (0.001, 0.2), (0.0, 0.05)])
def test_bounded_groups_match_cvxpy_and_certify(l1, bound):
    X, Y, G, C, t = _problem()
    group_l1, n_bounded = 0.05, 10
    l1_columns = np.full(30, l1)
    ours = solve_group_rows(G, C, t, group_of=np.arange(30), group_l1=group_l1, l1=l1,
                            n_bounded=n_bounded, bound=bound, tol=1e-6)
    assert ours.status == 0
    for row in ours.coef:  # the bound, exactly, in any summation order
        assert math.fsum(np.abs(row[:n_bounded])) <= bound
    W = cp.Variable((4, 30))
    objective = (cp.sum_squares(Y - X @ W.T) / (2 * len(X))
                 + group_l1 * cp.sum(cp.norm(W, 2, axis=0)) + l1 * cp.sum(cp.abs(W)))
    problem = cp.Problem(cp.Minimize(objective),
                         [cp.sum(cp.abs(W[:, :n_bounded]), axis=1) <= bound])
    problem.solve(solver=cp.CLARABEL)
    value = _objective(X, Y, ours.coef, group_l1, l1_columns, [[j] for j in range(30)])
    assert value == pytest.approx(ours.objective, rel=1e-10)
    # certified: within the reported gap of the optimum, and the gap is small
    assert value - problem.value <= ours.duality_gap + 1e-7 * problem.value
    assert ours.duality_gap <= 1e-6 * value
    # the gap recomputed in numpy: the multipliers' dual bound at the scaled residual
    R = C - ours.coef @ G
    nu = np.full(R.shape, l1)
    nu[:, :n_bounded] += ours.multipliers[:, None]

    def feasible(s):
        return all(np.linalg.norm(np.maximum(np.abs(s * R[:, j]) - nu[:, j], 0))
                   <= group_l1 * (1 + 1e-12) for j in range(30))

    low, high = 0.0, 4.0
    for _ in range(60):
        low, high = ((low + high) / 2, high) if feasible((low + high) / 2) else \
            (low, (low + high) / 2)
    linear = np.sum(t - np.einsum("ij,ij->i", C, ours.coef))
    quadratic = np.sum(t - 2 * np.einsum("ij,ij->i", C, ours.coef)
                       + np.einsum("ij,jk,ik->i", ours.coef, G, ours.coef))
    s = min(max(linear / quadratic, 0.0), low)
    dual = s * linear - 0.5 * s * s * quadratic - bound * ours.multipliers.sum()
    assert dual <= problem.value * (1 + 1e-7)  # a true lower bound
    assert value - dual <= 2e-6 * value  # and a tight one at the returned multipliers


@pytest.fixture(scope="module")
def digits():
    return digits_split()


def test_channel_blocks_solve_the_joint_group_problem(digits):
    """relax=1: each feed-forward block's rows are the joint optimum (cvxpy) of
    the group problem on the block's design; kappa holds exactly."""
    X_train, _, _, _ = digits
    X = X_train[:300]
    from sklearn.neural_network import MLPRegressor

    from sksim.baselines import mlp_forward

    y = X[:, :2] @ [1.0, -1.0]
    mlp = MLPRegressor(hidden_layer_sizes=(12, 8), max_iter=300, random_state=0).fit(X, y)
    states, _ = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    alpha, kappa = 3e-3, 0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = SIMRegressor(structure="feedforward", state_blocks=[12, 8],
                             penalty="channel", alpha=alpha, kappa=kappa, relax=1.0,
                             tol=1e-6).fit(X, y, states=states)
    assert exact_inf_norm(model.A_) <= kappa
    # block 1 (8 states) reads the 12 states of block 0 and the inputs
    design = np.hstack([np.maximum(states[:, :12], 0), X])
    design = design - design.mean(axis=0)
    targets = states[:, 12:] - states[:, 12:].mean(axis=0)
    W = cp.Variable((8, design.shape[1]))
    objective = (cp.sum_squares(targets - design @ W.T) / (2 * len(X))
                 + alpha * np.sqrt(8) * cp.sum(cp.norm(W[:, :12], 2, axis=0))
                 + alpha * cp.sum(cp.abs(W[:, 12:])))
    reference = cp.Problem(cp.Minimize(objective),
                           [cp.sum(cp.abs(W[:, :12]), axis=1) <= kappa]).solve(
        solver=cp.CLARABEL)
    ours_W = np.hstack([model.A_.toarray()[12:, :12], model.B_.toarray()[12:]])
    ours = (((targets - design @ ours_W.T) ** 2).sum() / (2 * len(X))
            + alpha * np.sqrt(8) * np.linalg.norm(ours_W[:, :12], axis=0).sum()
            + alpha * np.abs(ours_W[:, 12:]).sum())
    # the block's certified gap bounds its distance to the optimum
    gap = model.state_duality_gaps_[12:].sum()
    assert ours == pytest.approx(model.state_objectives_[12:].sum(), rel=1e-9)
    assert ours - reference <= gap + 1e-7 * reference
    certified = gap <= 1e-6 * ours * (1 + 1e-9)
    warned = any("state rows did not reach" in str(w.message) for w in caught)
    assert certified != warned  # a block short of tol says so


def test_channel_penalty_removes_hidden_units(digits):
    torch = pytest.importorskip("torch")
    X_train, X_test, y_train, _ = digits
    plain_l1 = SIMClassifier(structure="feedforward", alpha=1e-2, random_state=0).fit(
        X_train, y_train)
    channel = SIMClassifier(structure="feedforward", penalty="channel", alpha=1e-2,
                            random_state=0).fit(X_train, y_train)

    def read(model):
        A, C = model.A_.toarray(), model.C_.toarray()
        return int(np.sum((np.abs(A).sum(axis=0) + np.abs(C).sum(axis=0)) > 0))

    assert read(channel) < read(plain_l1)
    module = channel.to_torch(plain=True, dtype=torch.float64)
    with torch.no_grad():
        outputs = module(torch.as_tensor(X_test)).numpy()
    np.testing.assert_allclose(outputs, channel.decision_function(X_test), atol=1e-10)


def test_channel_penalty_refusals(digits):
    X_train, _, y_train, _ = digits
    X, y = X_train[:200], y_train[:200]
    with pytest.raises(ValueError, match="needs structure='feedforward'"):
        SIMClassifier(penalty="channel").fit(X, y)
    with pytest.raises(ValueError, match="row_bound"):
        SIMClassifier(penalty="channel", structure="feedforward", row_bound=5.0).fit(X, y)
    with pytest.raises(ValueError, match="not along a path or by the CV"):
        SIMClassifierCV(penalty="channel", structure="feedforward").fit(X, y)


# ------------------------------------------------------------ weight-shared
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_weight_shared_block_rows_solve_the_joint_channel_problem(gamma):
    """A residual block's rows (its 3x3 conv link and the 1x1 shortcut from
    another block) under penalty="channel" on the streamed Gram reach the
    joint optimum (cvxpy + Clarabel) of the group problem on the explicit patch
    design: one group per (source block, channel) over every tap of every row,
    weighted alpha * sqrt(its entries); kappa exact per row. With ``gamma >
    0`` (adaptive_l1) every entry also pays its adaptive L1 weight."""
    pytest.importorskip("torch")
    from test_graph_teachers import _data, _teacher

    from sksim import weight_sharing as ws
    from sksim.blocks import link_patches
    from sksim.channels import link_groups

    baseline = _teacher("resnet")
    X = _data(40)
    maps = baseline.trace(X)
    structure = ws.fitting_structure(maps.structure)
    scales = ws.block_scales(structure, maps.kernels, 0.95)
    # the bound binds and some channels go, at either penalty
    block, kappa, alpha = 2, 0.01, 1e-3 if gamma == 0 else 5e-5
    links = structure.links[block]
    assert len({link.source for link in links}) == 2  # the conv and the shortcut
    problems = ws.accumulate_block_problems(
        structure, ((X[rows], pre) for rows, pre, _ in baseline.iter_batches(X)),
        scales, fit_intercept=True, blocks=[block])
    factors = (None if gamma == 0 else
               ws.adaptive_l1_factors(maps, structure, scales, block, gamma))
    kernels, intercept, rows = ws.solve_block_rows(
        structure, links, problems[0], alpha=alpha, l1_ratio=1.0, kappa=kappa,
        row_bound=np.inf, tol=1e-9, max_iter=100_000, penalty="channel",
        l1_factors=factors)
    assert np.all(rows.status == 0)
    group_of, group_columns = link_groups(structure, links)
    n_groups = sum(structure.block_shapes[s][0] for s in {link.source for link in links})
    assert group_columns.size == n_groups and np.all(group_of >= 0)
    states, _ = baseline.record(X)
    edges = np.cumsum([0, *structure.block_sizes()])
    post = [np.maximum(states[:, a:b] * s, 0.0) for a, b, s in zip(edges, edges[1:], scales)]
    P = np.hstack([link_patches(structure, link, post[link.source]) for link in links])
    channels = structure.block_shapes[block][0]
    Z = (states[:, edges[block]:edges[block + 1]] * scales[block]).reshape(
        len(X), channels, -1).transpose(0, 2, 1).reshape(-1, channels)
    weights = alpha * np.sqrt(channels * group_columns)
    members = [np.flatnonzero(group_of == g) for g in range(n_groups)]

    entry_weights = np.zeros((channels, P.shape[1])) if factors is None else alpha * factors

    def objective(W, b, norm, total, multiply, absolute):
        return (total((Z - P @ W.T - b) ** 2) / (2 * len(Z))
                + sum(w * norm(W[:, m]) for w, m in zip(weights, members))
                + total(multiply(entry_weights, absolute(W))))

    W, b = cp.Variable((channels, P.shape[1])), cp.Variable(channels)
    reference = cp.Problem(
        cp.Minimize(objective(W, b[None, :], lambda v: cp.norm(v, "fro"), cp.sum,
                              cp.multiply, cp.abs)),
        [cp.sum(cp.abs(W), axis=1) <= kappa]).solve(solver=cp.CLARABEL)
    coef = np.hstack(kernels)
    ours = objective(coef, intercept, np.linalg.norm, np.sum, np.multiply, np.abs)
    assert ours == pytest.approx(rows.objective.sum(), rel=1e-9)
    assert ours - reference <= rows.duality_gap.sum() + 1e-7 * reference
    assert rows.duality_gap.sum() <= 1e-9 * ours * (1 + 1e-9)
    for row in coef:
        assert math.fsum(np.abs(row)) <= kappa
    assert np.any(rows.multiplier > 0)  # the bound binds
    # whole channels go: a group is zero in every row or read by some
    read = np.array([np.any(coef[:, m] != 0) for m in members])
    assert 0 < read.sum() < n_groups


def test_weight_shared_channel_fit_removes_channels_and_exports_exactly():
    """A CNN teacher under penalty="channel": the fit is exact (kappa per
    unrolled row, the unrolled flat model), reads fewer channels than the plain
    L1 fit at a matching penalty, and its plain export drops them and equals
    predict."""
    torch = pytest.importorskip("torch")
    from helpers import assert_equals_unrolled
    from test_graph_teachers import _data, _fit

    from sksim.plain_export import count_flops

    kappa = 0.6
    channel, X = _fit("functional", penalty="channel", alpha=1e-3, kappa=kappa)
    plain_l1, _ = _fit("functional", alpha=1e-3, kappa=kappa)
    assert exact_inf_norm(channel.A_) <= kappa
    assert_equals_unrolled(channel, _data(25, seed=1))
    exports = [model.to_torch(plain=True, dtype=torch.float64) for model in (channel, plain_l1)]
    with torch.no_grad():
        outputs = exports[0](torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(outputs, channel.predict(X), rtol=0, atol=1e-10)
    flops = [count_flops(module, (X.shape[1],)) for module in exports]
    assert flops[0] < flops[1]


def test_weight_shared_channel_refusals():
    pytest.importorskip("torch")
    from test_graph_teachers import _fit

    with pytest.raises(ValueError, match="row_bound"):
        _fit("resnet", penalty="channel", row_bound=5.0)


def test_relaxed_channel_refit_keeps_the_inputs_the_group_solve_used(digits):
    """relax < 1 refits the kept states whole and, of the inputs, only the
    columns the L1 penalty kept: a flat block does not start reading every
    input (which made the plain export larger than the teacher)."""
    X_train, _, y_train, _ = digits
    X, y = X_train[:400], y_train[:400]
    options = {"structure": "feedforward", "penalty": "channel", "alpha": 1e-2,
               "random_state": 0}
    selected = SIMClassifier(relax=1.0, **options).fit(X, y)
    refitted = SIMClassifier(relax=0.01, **options).fit(X, y)

    def read(matrix):
        return np.flatnonzero(np.abs(matrix.toarray()).sum(axis=0) > 0)

    # the state rows' group solves are the same problems (the teacher's states)
    for name in ("A_", "B_"):
        assert set(read(getattr(refitted, name))) <= set(read(getattr(selected, name)))
    assert read(selected.B_).size < X.shape[1]  # the L1 penalty dropped some inputs
