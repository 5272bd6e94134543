"""The rows of a block fitted together under a group penalty over the columns
they read (``penalty="channel"``): one convex multi-output problem.

All ``r`` rows of a block share the Gram matrix ``G`` of their design; group
``g`` is a set of columns (the taps of one channel the block reads, or one
state of a flat block) across *all* rows, ``W[:, g]``. The problem is

    min_W  sum_i ( 1/2 w_i^T G w_i - c_i^T w_i + zz_i / 2 )
           + sum_g group_l1_g ||W[:, g]||_F + sum_ij l1_ij |W_ij|
    s.t.   ||w_i[:n_bounded]||_1 <= bound     for every row i

(scikit-learn's ``MultiTaskLasso`` with ``l1 = 0``, no bound and one column
per group, up to its scaling by the number of rows). A group whose Frobenius
norm is zero is a channel no row reads.

Solver: the bound of row ``i`` enters through its Lagrange multiplier
``mu_i >= 0`` (weight ``l1_ij + mu_i`` on its bounded columns). For fixed
multipliers the problem is a sparse-group Lasso, solved by block coordinate
descent over the groups: each visit takes one proximal-gradient step on the
group's columns with step ``1 / L_g`` (``L_g`` the largest eigenvalue of
``G[g, g]``), whose proximal map is exact (soft-thresholding by the row
weights, then the group shrinkage). Between sweeps the multipliers move by a
bracketing search per row on ``||w_i[:n_bounded]||_1 - bound``. Every iterate
is made feasible by projecting each row's bounded part onto the L1 ball, and
every multiplier vector gives a Lagrangian dual bound, so the solver stops on
a duality gap of the *constrained* problem:

    gap = P(W_feasible) - (D_mu(s * R) - bound * sum_i mu_i) <= tol * P(W_feasible),

with ``R = C - W G`` the residual correlations scaled by the largest ``s`` that
keeps them dual feasible (for every group, ``||S_nu(s R[:, g])||_F <=
group_l1_g`` with ``S_nu`` the soft-thresholding by each entry's L1 weight).
"""

from typing import NamedTuple

import numpy as np

from ._threads import kernel_njit
from .projection import enforce_l1_bound_inplace, inner_njit

CONVERGED = 0
MAX_ITER_REACHED = 1


class GroupSolution(NamedTuple):
    """Rows solved together under a group penalty.

    Attributes
    ----------
    coef : ndarray of shape (n_rows, n_columns)
        Feasible rows (each bounded part within ``bound`` in floating point).
    duality_gap : float
        Certified gap of the constrained problem at ``coef`` (all rows together).
    objective : float
        Its primal objective.
    multipliers : ndarray of shape (n_rows,)
        The bound multipliers of the dual bound.
    n_iter : int
        Sweeps over the groups.
    status : int
        0 when the relative gap reached ``tol``, 1 at ``max_iter``.
    """

    coef: np.ndarray
    duality_gap: float
    objective: float
    multipliers: np.ndarray
    n_iter: int
    status: int


class Groups(NamedTuple):
    """Columns by group: group ``g`` is ``columns[starts[g]:starts[g + 1]]``,
    penalised by ``weights[g]`` (0 for a column outside every group, which
    is then its own group), with ``lipschitz[g]`` the largest eigenvalue of
    its block of the Gram matrix."""

    starts: np.ndarray
    columns: np.ndarray
    weights: np.ndarray
    lipschitz: np.ndarray


def make_groups(gram, group_of, group_l1):
    """:class:`Groups` from ``group_of[j]`` (the group id of column ``j``, or
    -1 for a column penalised by the L1 weight alone) and ``group_l1`` (one
    weight for every group, or ``group_l1[g]`` for group id ``g``)."""
    group_of = np.asarray(group_of)
    ids = [g for g in np.unique(group_of) if g >= 0]
    group_l1 = np.asarray(group_l1, dtype=np.float64)
    if group_l1.ndim == 0:
        group_l1 = np.full(max(ids, default=-1) + 1, float(group_l1))
    members = [np.flatnonzero(group_of == g) for g in ids]
    members += [np.array([j]) for j in np.flatnonzero(group_of < 0)]
    weights = [group_l1[g] for g in ids] + [0.0] * (len(members) - len(ids))
    lipschitz = [float(np.linalg.eigvalsh(gram[np.ix_(m, m)])[-1]) if len(m) > 1
                 else float(gram[m[0], m[0]]) for m in members]
    starts = np.cumsum([0] + [len(m) for m in members])
    return Groups(starts.astype(np.int64), np.concatenate(members).astype(np.int64),
                  np.asarray(weights, dtype=np.float64),
                  np.maximum(np.asarray(lipschitz), 1e-300))


@inner_njit
def _row_weight(l1, multipliers, i, j, n_bounded):
    return l1[i, j] + multipliers[i] if j < n_bounded else l1[i, j]


@inner_njit
def _group_step(W, R, gram, groups_starts, groups_columns, weight, lipschitz, g, l1,
                multipliers, n_bounded, block, previous):
    """One proximal-gradient step on group ``g``'s columns; updates W and R."""
    start, stop = groups_starts[g], groups_starts[g + 1]
    n_rows = W.shape[0]
    norm_sq = 0.0
    for i in range(n_rows):
        for k in range(start, stop):
            j = groups_columns[k]
            previous[i, k - start] = W[i, j]
            value = W[i, j] + R[i, j] / lipschitz
            threshold = _row_weight(l1, multipliers, i, j, n_bounded) / lipschitz
            if value > threshold:
                value -= threshold
            elif value < -threshold:
                value += threshold
            else:
                value = 0.0
            block[i, k - start] = value
            norm_sq += value * value
    shrink = 0.0
    if norm_sq > 0.0:
        shrink = max(0.0, 1.0 - weight / lipschitz / np.sqrt(norm_sq))
    changed = False
    for i in range(n_rows):
        for k in range(start, stop):
            j = groups_columns[k]
            new = block[i, k - start] * shrink
            delta = new - previous[i, k - start]
            if delta != 0.0:
                changed = True
                W[i, j] = new
                for col in range(gram.shape[0]):
                    R[i, col] -= delta * gram[j, col]
    return changed


@inner_njit
def _primal(W, gram, correlations, target_sq, groups_starts, groups_columns, weights,
            l1):
    total = 0.0
    n_rows, n_cols = W.shape
    for i in range(n_rows):
        quad = 0.0
        for j in range(n_cols):
            if W[i, j] != 0.0:
                gw = 0.0
                for k in range(n_cols):
                    gw += gram[j, k] * W[i, k]
                quad += W[i, j] * gw
                total -= correlations[i, j] * W[i, j]
                total += l1[i, j] * abs(W[i, j])
        total += 0.5 * quad + 0.5 * target_sq[i]
    for g in range(len(weights)):
        if weights[g] > 0.0:
            norm_sq = 0.0
            for i in range(n_rows):
                for k in range(groups_starts[g], groups_starts[g + 1]):
                    norm_sq += W[i, groups_columns[k]] ** 2
            total += weights[g] * np.sqrt(norm_sq)
    return total


@inner_njit
def _largest_scale(R, groups_starts, groups_columns, weights, l1, multipliers,
                   n_bounded):
    """Largest s with s * R dual feasible: per group, ``||S_nu(s R_g)||_F <=
    weight`` (bisection; the map is nondecreasing in s)."""
    best = np.inf
    n_rows = R.shape[0]
    for g in range(len(weights)):
        start, stop = groups_starts[g], groups_starts[g + 1]
        largest = 0.0
        for i in range(n_rows):
            for k in range(start, stop):
                largest = max(largest, abs(R[i, groups_columns[k]]))
        if largest == 0.0:
            continue
        if weights[g] == 0.0:  # a plain L1 column: |s R_ij| <= nu_ij
            for i in range(n_rows):
                j = groups_columns[start]
                if R[i, j] != 0.0:
                    best = min(best, _row_weight(l1, multipliers, i, j, n_bounded)
                               / abs(R[i, j]))
            continue
        # any positive start will do: grow high until infeasible
        low, high = 0.0, (weights[g] + l1[0, groups_columns[start]]) / largest
        for _ in range(200):
            if _excess(R, groups_starts, groups_columns, g, high, l1, multipliers,
                       n_bounded) > weights[g]:
                break
            low, high = high, 2.0 * high
        for _ in range(60):
            mid = 0.5 * (low + high)
            if _excess(R, groups_starts, groups_columns, g, mid, l1, multipliers,
                       n_bounded) > weights[g]:
                high = mid
            else:
                low = mid
        best = min(best, low)
    return best


@inner_njit
def _excess(R, groups_starts, groups_columns, g, s, l1, multipliers, n_bounded):
    norm_sq = 0.0
    for i in range(R.shape[0]):
        for k in range(groups_starts[g], groups_starts[g + 1]):
            j = groups_columns[k]
            value = abs(s * R[i, j]) - _row_weight(l1, multipliers, i, j, n_bounded)
            if value > 0.0:
                norm_sq += value * value
    return np.sqrt(norm_sq)


@inner_njit
def _certificate(W, gram, correlations, target_sq, groups_starts, groups_columns, weights,
                 group_index, l1, multipliers, n_bounded, bound, feasible, R_feasible):
    """``(gap, primal)`` at the feasible projection of W."""
    n_rows, n_cols = W.shape
    for i in range(n_rows):
        for j in range(n_cols):
            feasible[i, j] = W[i, j]
        if n_bounded > 0:
            enforce_l1_bound_inplace(feasible[i], 0, n_bounded, bound)
    for i in range(n_rows):
        for j in range(n_cols):
            R_feasible[i, j] = correlations[i, j]
        for k in range(n_cols):
            if feasible[i, k] != 0.0:
                for j in range(n_cols):
                    R_feasible[i, j] -= feasible[i, k] * gram[k, j]
    primal = _primal(feasible, gram, correlations, target_sq, groups_starts,
                     groups_columns, weights, l1)
    linear, quadratic = _dual_terms(feasible, R_feasible, correlations, target_sq)
    dual = _dual_bound(R_feasible, linear, quadratic, groups_starts, groups_columns,
                       weights, l1, multipliers, n_bounded, bound)
    if n_bounded > 0:  # the multipliers the KKT conditions give at this point
        for how in range(3):
            estimate = _kkt_multipliers(feasible, R_feasible, groups_starts,
                                        groups_columns, weights, group_index, l1,
                                        n_bounded, bound, how)
            dual = max(dual, _dual_bound(R_feasible, linear, quadratic, groups_starts,
                                         groups_columns, weights, l1, estimate,
                                         n_bounded, bound))
    return max(primal - dual, 0.0), primal


@inner_njit
def _dual_bound(R, linear, quadratic, groups_starts, groups_columns, weights, l1,
                multipliers, n_bounded, bound):
    """The Lagrangian dual bound at the residual direction ``R`` scaled to be
    feasible for ``multipliers``."""
    s_max = _largest_scale(R, groups_starts, groups_columns, weights, l1, multipliers,
                           n_bounded)
    s = min(max(linear / quadratic if quadratic > 0.0 else 0.0, 0.0), s_max)
    dual = s * linear - 0.5 * s * s * quadratic
    for i in range(R.shape[0]):
        dual -= bound * multipliers[i] if n_bounded > 0 else 0.0
    return dual


@inner_njit
def _kkt_multipliers(W, R, groups_starts, groups_columns, weights, group_index, l1,
                     n_bounded, bound, how):
    """Per row on its bound, the multiplier its bounded support asks for
    (``|R_ij| - l1 - group_l1 |w_ij| / ||W_g||`` on each entry: the largest
    (``how`` 0), the mean (1) or the smallest (2)); 0 off the bound."""
    estimate = np.zeros(W.shape[0])
    count = np.zeros(W.shape[0])
    if how == 2:
        estimate[:] = np.inf
    for i in range(W.shape[0]):
        norm = 0.0
        for j in range(n_bounded):
            norm += abs(W[i, j])
        if norm < bound * (1.0 - 1e-9):
            continue
        for j in range(n_bounded):
            if W[i, j] == 0.0:
                continue
            g = group_index[j]
            shrink = 0.0
            if weights[g] > 0.0:
                norm_sq = 0.0
                for k in range(groups_starts[g], groups_starts[g + 1]):
                    for r in range(W.shape[0]):
                        norm_sq += W[r, groups_columns[k]] ** 2
                shrink = weights[g] * abs(W[i, j]) / np.sqrt(norm_sq)
            value = abs(R[i, j]) - l1[i, j] - shrink
            if how == 0:
                estimate[i] = max(estimate[i], value)
            elif how == 1:
                estimate[i] += value
            else:
                estimate[i] = min(estimate[i], value)
            count[i] += 1
    for i in range(W.shape[0]):
        if count[i] == 0:
            estimate[i] = 0.0
        elif how == 1:
            estimate[i] /= count[i]
        estimate[i] = max(estimate[i], 0.0)
    return estimate


@inner_njit
def _lagrangian_gap(W, R, gram, correlations, target_sq, groups_starts, groups_columns,
                    weights, l1, multipliers, n_bounded):
    """Gap of the problem with the bounds replaced by their multipliers (the
    weights ``l1 + mu_i`` on row ``i``'s bounded columns), at ``W``."""
    primal = _primal(W, gram, correlations, target_sq, groups_starts, groups_columns,
                     weights, l1)
    for i in range(W.shape[0]):
        for j in range(n_bounded):
            primal += multipliers[i] * abs(W[i, j])
    linear, quadratic = _dual_terms(W, R, correlations, target_sq)
    # no bound term: the multipliers' penalty is in the primal
    dual = _dual_bound(R, linear, quadratic, groups_starts, groups_columns, weights, l1,
                       multipliers, n_bounded, 0.0)
    return max(primal - dual, 0.0), primal


@inner_njit
def _dual_terms(W, R, correlations, target_sq):
    """``(sum_i zz_i - c_i.w_i, sum_i zz_i - 2 c_i.w_i + w_i G w_i)``: the
    linear and quadratic coefficients of the dual at the scaled residual ``s R``
    (``R = C - W G``, so ``w_i G w_i = w_i.(c_i - r_i)``)."""
    linear, quadratic = 0.0, 0.0
    for i in range(W.shape[0]):
        cw, wgw = 0.0, 0.0
        for j in range(W.shape[1]):
            cw += correlations[i, j] * W[i, j]
            wgw += W[i, j] * (correlations[i, j] - R[i, j])
        linear += target_sq[i] - cw
        quadratic += target_sq[i] - 2.0 * cw + wgw
    return linear, quadratic


@kernel_njit
def _solve_group_rows(gram, correlations, target_sq, groups_starts, groups_columns,
                      weights, lipschitz, group_index, l1, n_bounded, bound, tol, max_iter):
    n_rows, n_cols = correlations.shape
    W = np.zeros((n_rows, n_cols))
    R = correlations.copy()
    multipliers = np.zeros(n_rows)
    search = np.zeros((n_rows, 5))  # low, g_low, high, g_high, side (Illinois)
    search[:, 2] = np.inf
    width = 0
    for g in range(len(weights)):
        width = max(width, groups_starts[g + 1] - groups_starts[g])
    block = np.empty((n_rows, width))
    previous = np.empty((n_rows, width))
    feasible = np.empty((n_rows, n_cols))
    R_feasible = np.empty((n_rows, n_cols))
    best_gap, best_primal = np.inf, np.inf
    best = np.zeros((n_rows, n_cols))
    best_multipliers = np.zeros(n_rows)
    status = MAX_ITER_REACHED
    sweep = 0
    while sweep < max_iter:
        # the problem at these multipliers, to a fraction of the target gap
        for _ in range(max_iter - sweep):
            sweep += 1
            changed = False
            for g in range(len(weights)):
                changed |= _group_step(W, R, gram, groups_starts, groups_columns,
                                       weights[g], lipschitz[g], g, l1, multipliers,
                                       n_bounded, block, previous)
            if sweep % 5 == 0 or not changed:
                inner, inner_primal = _lagrangian_gap(
                    W, R, gram, correlations, target_sq, groups_starts, groups_columns,
                    weights, l1, multipliers, n_bounded)
                # inexact while the multipliers are far: a tenth of the gap so far
                target = 0.1 * max(tol, min(best_gap / max(best_primal, 1e-300), 1e-2))
                if inner <= target * max(inner_primal, 1e-300) or not changed:
                    break
        gap, primal = _certificate(W, gram, correlations, target_sq, groups_starts,
                                   groups_columns, weights, group_index, l1, multipliers,
                                   n_bounded, bound, feasible, R_feasible)
        if gap < best_gap:
            best_gap, best_primal = gap, primal
            best[:, :] = feasible
            best_multipliers[:] = multipliers
        if best_gap <= tol * max(best_primal, 1e-300):
            status = CONVERGED
            break
        if n_bounded == 0 or not _move_multipliers(W, R, gram, multipliers, search,
                                                   n_bounded, bound, l1):
            break  # nothing left to move: the gap is the inner solver's floor
    return best, best_gap, best_primal, best_multipliers, sweep, status


@inner_njit
def _move_multipliers(W, R, gram, multipliers, search, n_bounded, bound, l1):
    """One regula falsi (Illinois) step per row on ``||w_i[:n_bounded]||_1 -
    bound``, non-increasing in ``mu_i``; the first bracket is ``[0, mu_max]``
    with ``mu_max`` the weight that zeroes the row's bounded part. Returns
    whether any multiplier moved."""
    moved = False
    for i in range(W.shape[0]):
        norm = 0.0
        for j in range(n_bounded):
            norm += abs(W[i, j])
        excess = norm - bound
        mu = multipliers[i]
        if abs(excess) <= 1e-12 * bound or (excess < 0.0 and mu == 0.0):
            continue
        if excess > 0.0:
            search[i, 0], search[i, 1] = mu, excess
            if not np.isfinite(search[i, 2]):
                largest = 0.0
                for j in range(n_bounded):
                    largest = max(largest, abs(R[i, j] + gram[j, j] * W[i, j]) - l1[i, j])
                search[i, 2], search[i, 3] = max(largest, mu), -bound
            if search[i, 4] > 0:
                search[i, 3] *= 0.5  # the same end twice: Illinois
            search[i, 4] = 1.0
        else:
            search[i, 2], search[i, 3] = mu, excess
            if search[i, 4] < 0:
                search[i, 1] *= 0.5
            search[i, 4] = -1.0
        low, g_low, high, g_high = search[i, 0], search[i, 1], search[i, 2], search[i, 3]
        if high <= low or g_low <= 0.0 or g_high >= 0.0:  # a stale bracket: open it again
            largest = 0.0
            for j in range(n_bounded):
                largest = max(largest, abs(R[i, j] + gram[j, j] * W[i, j]) - l1[i, j])
            low, g_low, high, g_high = 0.0, 1.0, max(largest, mu, 1e-12), -bound
            search[i, 0], search[i, 1], search[i, 2], search[i, 3] = low, g_low, high, g_high
        new = low + (high - low) * g_low / (g_low - g_high)
        if new != mu:
            multipliers[i] = new
            moved = True
    return moved


def _group_index(groups, n_columns):
    """The index of each column's group in ``groups``."""
    index = np.empty(n_columns, dtype=np.int64)
    for g in range(len(groups.weights)):
        index[groups.columns[groups.starts[g]:groups.starts[g + 1]]] = g
    return index


def solve_group_rows(gram, correlations, target_sq, *, group_of, group_l1, l1=0.0,
                     n_bounded=0, bound=np.inf, tol=1e-6, max_iter=20000):
    """Solve the rows of a block together under the group penalty (see the
    module's docstring).

    Parameters
    ----------
    gram : ndarray of shape (n_columns, n_columns)
    correlations : ndarray of shape (n_rows, n_columns)
    target_sq : ndarray of shape (n_rows,)
    group_of : array-like of int of shape (n_columns,)
        Group id of each column; -1 for a column outside every group.
    group_l1 : float or array-like of shape (n_groups,)
        Weight of each group's Frobenius norm (``group_l1[g]`` for group id
        ``g``).
    l1 : float or array-like of shape (n_columns,) or (n_rows, n_columns), default=0.0
        Weight of the plain L1 norm of each column's entries (or of each
        entry).
    n_bounded : int, default=0
        The first ``n_bounded`` columns of every row carry the bound.
    bound : float, default=inf
    tol : float, default=1e-6
        Stop when the duality gap is at most ``tol`` times the objective.
    max_iter : int, default=20000
        Most sweeps over the groups.

    Returns
    -------
    GroupSolution
    """
    gram = np.ascontiguousarray(gram, dtype=np.float64)
    correlations = np.ascontiguousarray(correlations, dtype=np.float64)
    target_sq = np.ascontiguousarray(target_sq, dtype=np.float64)
    groups = make_groups(gram, group_of, group_l1)
    bounded = n_bounded > 0 and np.isfinite(bound)
    coef, gap, primal, multipliers, n_iter, status = _solve_group_rows(
        gram, correlations, target_sq, groups.starts, groups.columns, groups.weights,
        groups.lipschitz, _group_index(groups, gram.shape[0]),
        np.ascontiguousarray(np.broadcast_to(np.asarray(l1, dtype=np.float64),
                                             correlations.shape)),
        int(n_bounded if bounded else 0),
        float(bound if bounded else 0.0), float(tol), int(max_iter))
    return GroupSolution(coef, float(gap), float(primal), multipliers, int(n_iter),
                         int(status))
