"""Gram-based coordinate descent for all rows of a SIM model (numba kernels).

Every row ``i`` (a state row of ``[A B]`` or an output row of ``[C D]``) solves

    min_w  1/2 w^T G w - c_i^T w + zz_i / 2
           + l1 * ||w||_1 + l2 / 2 * ||w||_2^2
    s.t.   ||w[:n_bounded]||_1 <= bound

with ``G = W^T W / m`` the shared Gram matrix of the (centred) design
``W = [X, U]``, ``c_i = W^T z_i / m`` and ``zz_i = ||z_i||^2 / m``. This is
exactly ``1/(2m) ||z_i - W w||^2 + l1 ||w||_1 + l2/2 ||w||^2``, scikit-learn's
ElasticNet objective, with ``l1 = alpha * l1_ratio`` and
``l2 = alpha * (1 - l1_ratio)``.

The bound is handled exactly through its Lagrange multiplier ``mu >= 0``: for a
fixed ``mu`` the row is a weighted elastic net (weight ``l1 + mu`` on the bounded
block), solved by cyclic coordinate descent on the Gram matrix with active-set
sweeps; ``||w_mu[:n_bounded]||_1`` is non-increasing in ``mu``, so a bracketing
search (Illinois regula falsi; the map is piecewise linear) finds the multiplier.
Every iterate is made feasible by a Euclidean projection onto the L1 ball, and
every multiplier yields a Lagrangian dual bound, so each row stops on a true
duality gap of the *constrained* problem:

    gap = P(w_feasible) - max_mu (D_mu(nu) - mu * bound)  <=  tol * P(w_feasible).

The returned rows satisfy the bound in floating point for any summation order
(see ``enforce_l1_bound_inplace``).

An optional second bound ``||w||_1 <= row_bound`` on the whole row (the robust
fitting mode) is handled the same way one level up: its multiplier ``t >= 0``
adds a uniform weight to the L1 penalty, so for a fixed ``t`` the row is the
problem above with ``l1 + t``; ``||w_t||_1`` is non-increasing in ``t`` and an
outer bracketing search finds ``t``. Each inner dual bound ``D_t`` gives the
outer bound ``D_t - t * row_bound``, and each inner solution, projected onto the
row ball (which only shrinks entries, so the first bound still holds), is an
outer feasible point.
"""

from typing import NamedTuple

import numba
import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ._blas import single_threaded_blas
from ._threads import kernel_njit, run_on_threads
from .projection import (
    EPS,
    copy_into,
    enforce_l1_bound_inplace,
    inner_njit,
    l1_norm,
    soft_threshold,
)

# Status codes of a row.
CONVERGED = 0
MAX_ITER_REACHED = 1
SEARCH_STALLED = 2

_ANDERSON_DEPTH = 5
_NEWTON_EVERY = 20
_MAX_NEWTON_MULTIPLIERS = 8
_MAX_MULTIPLIER_STEPS = 200
_ROUNDOFF = 1e-13


class RowSolution(NamedTuple):
    """Result record of :func:`solve_rows`.

    Attributes
    ----------
    coef : ndarray of shape (n_rows, n_columns)
        Row solutions ``w_i``.
    duality_gap : ndarray of shape (n_rows,)
        ``P(coef_i)`` minus the best Lagrangian dual bound found during the
        solve (at any multiplier and dual point, not necessarily one built
        from ``coef_i``): an upper bound on ``P(coef_i) - P*``.
    objective : ndarray of shape (n_rows,)
        Primal objective ``P(coef_i)``.
    multiplier : ndarray of shape (n_rows,)
        Lagrange multiplier of the L1 bound at which the best dual bound was
        found (0 when the bound is inactive or absent).
    n_iter : ndarray of shape (n_rows,)
        Coordinate-descent epochs used per row (full and active-set sweeps).
    status : ndarray of shape (n_rows,)
        0 converged, 1 ``max_iter`` reached, 2 multiplier search stalled.
    row_multiplier : ndarray of shape (n_rows,)
        Multiplier of the whole-row bound ``row_bound`` at the best dual bound
        (0 when that bound is inactive or absent).
    n_breakpoints : ndarray of shape (n_rows,)
        Breakpoints followed by the homotopy (0 for rows it did not solve).
    method : ndarray of shape (n_rows,)
        How the row was solved: 0 coordinate descent, 1 homotopy, 2 homotopy
        then coordinate descent (the homotopy's point was not certified, e.g.
        ``max_steps`` reached or rounding on a near-singular support).
    """

    coef: np.ndarray
    duality_gap: np.ndarray
    objective: np.ndarray
    multiplier: np.ndarray
    n_iter: np.ndarray
    status: np.ndarray
    row_multiplier: np.ndarray
    n_breakpoints: np.ndarray
    method: np.ndarray


def stack_rows(parts, n_columns):
    """One RowSolution of ``n_columns`` from ``(columns, RowSolution)``
    pieces of consecutive rows, each solved on its own ``columns``."""
    coef = np.zeros((sum(rows.coef.shape[0] for _, rows in parts), n_columns))
    start = 0
    for columns, rows in parts:
        coef[start:start + rows.coef.shape[0], columns] = rows.coef
        start += rows.coef.shape[0]
    return RowSolution(coef, *[np.concatenate([getattr(rows, field) for _, rows in parts])
                               for field in RowSolution._fields[1:]])


class RowProblem(NamedTuple):
    """The data of one row problem: the shared Gram ``G`` (n_columns,
    n_columns), the row's correlations ``c_i`` (n_columns,) and ``zz_i``."""

    gram: np.ndarray
    correlation: np.ndarray
    target_sq: float


class RowPenalty(NamedTuple):
    """The penalty and the bounds of a row problem.

    ``weights[j]`` is the L1 weight of column ``j`` (``l1`` on every column;
    built once per problem by :func:`row_penalty`), which every kernel reads;
    ``l1`` itself only seeds the multiplier searches. The first ``n_bounded``
    columns carry ``||w[:n_bounded]||_1 <= bound``, the whole row
    ``||w||_1 <= row_bound`` (``np.inf`` for none).
    """

    weights: np.ndarray
    l1: float
    l2: float
    n_bounded: int
    bound: float
    row_bound: float


class CDOptions(NamedTuple):
    """Relative duality-gap tolerance and epoch budget of a row."""

    tol: float
    max_iter: int


class RowResult(NamedTuple):
    """What a row solver returns (one row of the ``records`` array)."""

    gap: float
    objective: float
    multiplier: float
    epochs: int
    status: int
    row_multiplier: float


class Certificate(NamedTuple):
    """The best feasible objective and the best dual bound found so far for a
    row, the multiplier of that dual bound and the roundoff floor of that
    primal point."""

    primal: float
    dual: float
    multiplier: float
    roundoff: float


class RowWork(NamedTuple):
    """Scratch arrays of one row, allocated once per row."""

    gram_coef: np.ndarray
    candidate: np.ndarray
    candidate_gram_coef: np.ndarray
    trial: np.ndarray
    trial_gram_coef: np.ndarray
    point: np.ndarray
    point_gram_coef: np.ndarray
    weights: np.ndarray  # the Lagrangian's: penalty weights + multiplier
    row_weights: np.ndarray  # the inner problem's under a row bound
    active: np.ndarray
    history: np.ndarray
    gram_history: np.ndarray


class Bracket(NamedTuple):
    """A bracketing search for the multiplier ``x`` of an L1 bound: ``low``
    has the norm above the radius, ``high`` (-1 until found) at or below it.
    The ``norm_*`` values carry the Illinois halving (``side`` is the end
    moved last), which keeps regula falsi from sticking to one end."""

    low: float
    norm_low: float
    high: float
    norm_high: float
    side: int


def row_penalty(n_columns, n_bounded=0, bound=np.inf, row_bound=np.inf, l1=0.0, l2=0.0):
    """The :class:`RowPenalty` of rows with ``n_columns`` columns."""
    return RowPenalty(np.full(n_columns, float(l1)), float(l1), float(l2), int(n_bounded),
                      float(bound), float(row_bound))


@inner_njit
def _gap_met(primal, dual, tol, scale, floor):
    """The convergence test: the duality gap is at most ``tol`` relative to
    ``scale`` plus a rounding ``floor``."""
    return primal - dual <= tol * scale + floor


@inner_njit
def _certified(best, tol):
    """A row's stopping test on its best :class:`Certificate`. The dual is
    already discounted by the roundoff floor of its point once, so a gap of
    twice the floor is the best that can be certified."""
    return _gap_met(best.primal, best.dual, tol, best.primal, 2.0 * best.roundoff)


@inner_njit
def _lagrangian_weights(penalty, multiplier, out):
    """The weights of the Lagrangian at ``multiplier``: the bound's
    multiplier adds to the weight of each bounded column."""
    copy_into(out, penalty.weights)
    for j in range(penalty.n_bounded):
        out[j] += multiplier
    return out


@inner_njit
def _shifted(penalty, shift, out):
    """``penalty`` with ``shift`` added to every weight (a row bound's
    multiplier, or a path's alpha on a zero penalty), weights into ``out``."""
    for j in range(out.shape[0]):
        out[j] = penalty.weights[j] + shift
    return RowPenalty(out, penalty.l1 + shift, penalty.l2, penalty.n_bounded, penalty.bound,
                      np.inf)


@inner_njit
def _restricted(problem, penalty, support):
    """The row problem restricted to the columns ``support`` (increasing):
    the principal sub-Gram, and the kept bounded columns stay first, under
    the same bound (none when no bounded column is kept)."""
    kept_bounded = 0
    for j in support:
        if j < penalty.n_bounded:
            kept_bounded += 1
    sub_problem = RowProblem(np.ascontiguousarray(problem.gram[support][:, support]),
                             problem.correlation[support], problem.target_sq)
    sub_penalty = RowPenalty(penalty.weights[support], penalty.l1, penalty.l2, kept_bounded,
                             penalty.bound if kept_bounded else np.inf, penalty.row_bound)
    return sub_problem, sub_penalty


@inner_njit
def _zero_row_result(target_sq):
    """The result of a row whose only point is zero (an empty support): exact."""
    return RowResult(0.0, 0.5 * target_sq, 0.0, np.int64(0), np.int64(CONVERGED), 0.0)


@inner_njit
def _quadratic_terms(problem, coef, gram_coef):
    """Return (||r||^2 / m, r^T z / m, roundoff) from Gram quantities."""
    correlation = problem.correlation
    c_dot_w = 0.0
    w_dot_q = 0.0
    for j in range(coef.shape[0]):
        c_dot_w += correlation[j] * coef[j]
        w_dot_q += coef[j] * gram_coef[j]
    residual_sq = max(problem.target_sq - 2.0 * c_dot_w + w_dot_q, 0.0)
    roundoff = _ROUNDOFF * (problem.target_sq + abs(c_dot_w) + abs(w_dot_q))
    return residual_sq, problem.target_sq - c_dot_w, roundoff


@inner_njit
def _primal(coef, residual_sq, weights, l2):
    """Weighted elastic-net objective from its pieces."""
    weighted_l1 = 0.0
    sq_norm = 0.0
    for j in range(coef.shape[0]):
        weighted_l1 += weights[j] * abs(coef[j])
        sq_norm += coef[j] * coef[j]
    return 0.5 * residual_sq + weighted_l1 + 0.5 * l2 * sq_norm


@inner_njit
def _limit_scale(scale, gradient, weight):
    """The largest ``s <= scale`` with ``s |gradient| <= weight``: the dual
    point ``s r / m`` stays feasible for this column."""
    gradient = abs(gradient)
    if gradient * scale > weight:
        return weight / gradient
    return scale


@inner_njit
def _scaled_dual(s_feasible, residual_sq, r_dot_z):
    """``max D(s) = s r^T z/m - s^2 ||r||^2/(2m)`` over ``0 <= s <= s_feasible``."""
    s_best = s_feasible
    if residual_sq > 0.0:
        s_best = min(s_feasible, max(0.0, r_dot_z / residual_sq))
    return s_best * r_dot_z - 0.5 * s_best * s_best * residual_sq


@inner_njit
def _dual(correlation, gram_coef, residual_sq, r_dot_z, weights, l2):
    """Best of a few dual points ``nu = s * r / m`` of the weighted elastic net.

    ``D(s) = s r^T z/m - s^2 ||r||^2/(2m) - sum_j (s |g_j| - lam_j)_+^2 / (2 l2)``
    with ``g = W^T r / m = c - G w``. For ``l2 == 0`` the last term is the
    indicator of ``s |g_j| <= lam_j``.
    """
    n_columns = correlation.shape[0]
    s_feasible = 1.0
    for j in range(n_columns):
        s_feasible = _limit_scale(s_feasible, correlation[j] - gram_coef[j], weights[j])
    best = _scaled_dual(s_feasible, residual_sq, r_dot_z)
    if l2 > 0.0 and s_feasible < 1.0:
        penalty = 0.0
        for j in range(n_columns):
            excess = abs(correlation[j] - gram_coef[j]) - weights[j]
            if excess > 0.0:
                penalty += excess * excess
        unscaled = r_dot_z - 0.5 * residual_sq - 0.5 * penalty / l2
        if unscaled > best:  # noqa: PLR1730 (max() would differ on a nan)
            best = unscaled
    return best


@inner_njit
def _dual_subset(problem, coef, gram_coef, weights, active, n_active):
    """Dual bound of the problem restricted to the ``active`` coordinates."""
    residual_sq, r_dot_z, _ = _quadratic_terms(problem, coef, gram_coef)
    s_feasible = 1.0
    for t in range(n_active):
        j = active[t]
        s_feasible = _limit_scale(s_feasible, problem.correlation[j] - gram_coef[j],
                                  weights[j])
    return _scaled_dual(s_feasible, residual_sq, r_dot_z)


@inner_njit
def _lagrangian_gap(problem, coef, gram_coef, weights, l2):
    """(primal, dual, roundoff) of the weighted elastic net at ``coef``."""
    residual_sq, r_dot_z, roundoff = _quadratic_terms(problem, coef, gram_coef)
    primal = _primal(coef, residual_sq, weights, l2)
    dual = _dual(problem.correlation, gram_coef, residual_sq, r_dot_z, weights, l2)
    return primal, dual, roundoff


@inner_njit
def _update_coordinate(gram, correlation, coef, gram_coef, j, weight, l2):
    """Exact minimisation along coordinate ``j``; keeps ``gram_coef = G coef``."""
    diagonal = gram[j, j]
    if diagonal <= 0.0:
        return 0.0  # an all-zero column: the coordinate stays at 0
    old = coef[j]
    partial = correlation[j] - gram_coef[j] + diagonal * old
    new = soft_threshold(partial, weight) / (diagonal + l2)
    delta = new - old
    if delta != 0.0:
        coef[j] = new
        gram_row = gram[j]
        for k in range(gram_coef.shape[0]):
            gram_coef[k] += delta * gram_row[k]
    return abs(delta)


@inner_njit
def _anderson_weights(history, n_active, active, depth):
    """Anderson extrapolation weights from ``depth + 1`` stored iterates.

    Solves ``(U U^T + reg I) z = 1`` with ``U`` the successive differences of
    the iterates on the active coordinates, by Gaussian elimination (``depth``
    is tiny). Returns ``z / sum(z)``, or an empty array when degenerate.
    """
    gram_u = np.zeros((depth, depth))
    for a in range(depth):
        for b in range(a, depth):
            total = 0.0
            for t in range(n_active):
                j = active[t]
                total += ((history[a + 1, j] - history[a, j])
                          * (history[b + 1, j] - history[b, j]))
            gram_u[a, b] = total
            gram_u[b, a] = total
    trace = 0.0
    for a in range(depth):
        trace += gram_u[a, a]
    if trace <= 0.0:
        return np.empty(0)
    for a in range(depth):
        gram_u[a, a] += 1e-10 * trace
    rhs = np.ones(depth)
    for col in range(depth):  # elimination; the matrix is symmetric positive definite
        pivot = gram_u[col, col]
        if pivot <= 0.0:
            return np.empty(0)
        for row in range(col + 1, depth):
            factor = gram_u[row, col] / pivot
            for k in range(col, depth):
                gram_u[row, k] -= factor * gram_u[col, k]
            rhs[row] -= factor * rhs[col]
    weights = np.zeros(depth)
    for row in range(depth - 1, -1, -1):
        total = rhs[row]
        for k in range(row + 1, depth):
            total -= gram_u[row, k] * weights[k]
        weights[row] = total / gram_u[row, row]
    total = weights.sum()
    if total == 0.0 or not np.isfinite(total):
        return np.empty(0)
    return weights / total


@inner_njit
def _weighted_enet_cd(problem, weights, l2, coef, work, rel_tol, offset, max_sweeps):
    """CD on one weighted elastic net until its duality gap meets the target.

    The target is ``rel_tol * (primal - offset)`` plus roundoff; ``offset`` is
    ``mu * bound`` so that the target is relative to the Lagrangian value, an
    estimate of the constrained optimum. A full sweep is followed by epochs
    over its support only (cost O(nnz d) instead of O(d^2)), accelerated by
    Anderson extrapolation of the last iterates (accepted only when it lowers
    the objective), until the support's own gap is small; then a full sweep
    again. ``work.gram_coef`` holds ``G coef``. Returns (sweeps, primal, dual).
    """
    gram, correlation = problem.gram, problem.correlation
    gram_coef, active = work.gram_coef, work.active
    history, gram_history = work.history, work.gram_history
    n_columns = coef.shape[0]
    depth = history.shape[0] - 1
    sweeps = 0
    primal, dual, roundoff = np.inf, -np.inf, 0.0
    while sweeps < max_sweeps:
        # At least one full sweep per call, as scikit-learn's CD does.
        if sweeps > 0 and _gap_met(primal, dual, rel_tol, max(primal - offset, 0.0), roundoff):
            break
        for j in range(n_columns):
            _update_coordinate(gram, correlation, coef, gram_coef, j, weights[j], l2)
        sweeps += 1
        primal, dual, roundoff = _lagrangian_gap(problem, coef, gram_coef, weights, l2)
        n_active = 0
        for j in range(n_columns):
            if coef[j] != 0.0:
                active[n_active] = j
                n_active += 1
        if n_active == 0 or n_active == n_columns:
            continue
        stored = 0
        while sweeps < max_sweeps:
            scale = max(primal - offset, 0.0)
            if _gap_met(primal, dual, rel_tol, scale, roundoff):
                break
            # The support's own gap: stop polishing it once it is well below
            # the target, and let a full sweep look for missing coordinates.
            sub_dual = _dual_subset(problem, coef, gram_coef, weights, active, n_active)
            if _gap_met(primal, sub_dual, 0.25 * rel_tol, scale, 0.25 * roundoff):
                break
            for t in range(n_active):
                j = active[t]
                _update_coordinate(gram, correlation, coef, gram_coef, j, weights[j], l2)
            sweeps += 1
            slot = min(stored, depth)
            if stored > depth:
                for k in range(depth):
                    copy_into(history[k], history[k + 1])
                    copy_into(gram_history[k], gram_history[k + 1])
            copy_into(history[slot], coef)
            copy_into(gram_history[slot], gram_coef)
            stored += 1
            primal, dual, roundoff = _lagrangian_gap(problem, coef, gram_coef, weights, l2)
            if stored > depth and stored % depth == 1:
                mixing = _anderson_weights(history, n_active, active, depth)
                if mixing.shape[0] == depth:
                    trial = np.zeros(n_columns)
                    trial_gram = np.zeros(n_columns)
                    for k in range(depth):
                        trial += mixing[k] * history[k + 1]
                        trial_gram += mixing[k] * gram_history[k + 1]
                    t_primal, _, _ = _lagrangian_gap(problem, trial, trial_gram, weights, l2)
                    if t_primal < primal:
                        copy_into(coef, trial)
                        # Recompute G w exactly so rounding does not accumulate.
                        _recompute_gram_coef(gram, coef, gram_coef)
                        primal, dual, roundoff = _lagrangian_gap(problem, coef, gram_coef,
                                                                 weights, l2)
    return sweeps, primal, dual


@inner_njit
def _recompute_gram_coef(gram, coef, gram_coef):
    gram_coef[:] = 0.0
    for j in range(coef.shape[0]):
        if coef[j] != 0.0:
            gram_coef += coef[j] * gram[j]


@inner_njit
def _support_newton(problem, penalty, coef, multiplier, free_multiplier, weights, trial):
    """Solve the KKT system on the current support and signs of ``coef``.

    With support ``S`` and signs ``s`` fixed, optimality is linear:
    ``(G_SS + l2 I) w_S = c_S - lam_S s_S - mu s_S^bounded``, and when the bound
    is active (``free_multiplier``) also ``s_S^bounded . w_S = radius`` with
    ``mu`` unknown (a bordered system). This is exact in one step once CD has
    found the support, where CD alone crawls on ill-conditioned Gram matrices.
    ``weights`` are the Lagrangian's at ``multiplier``. Writes the candidate
    into ``trial`` and returns its multiplier, or -1 when the system is
    singular or the signs or the multiplier are inconsistent (the caller
    then certifies and keeps CD's iterate instead).
    """
    gram, correlation = problem.gram, problem.correlation
    n_bounded, bound, l2 = penalty.n_bounded, penalty.bound, penalty.l2
    n_columns = coef.shape[0]
    support = np.empty(n_columns, dtype=np.int64)
    size = 0
    n_bounded_support = 0
    for j in range(n_columns):
        if coef[j] != 0.0:
            support[size] = j
            size += 1
            if j < n_bounded:
                n_bounded_support += 1
    if size == 0:
        return -1.0
    bordered = free_multiplier and n_bounded_support > 0
    dim = size + 1 if bordered else size
    system = np.zeros((dim, dim))
    rhs = np.zeros(dim)
    for a in range(size):
        ja = support[a]
        sign_a = 1.0 if coef[ja] > 0.0 else -1.0
        for b in range(size):
            system[a, b] = gram[ja, support[b]]
        system[a, a] += l2
        rhs[a] = correlation[ja] - penalty.weights[ja] * sign_a
        if ja < n_bounded:
            if bordered:
                system[a, size] = sign_a
                system[size, a] = sign_a
            else:
                rhs[a] -= multiplier * sign_a
    if bordered:
        rhs[size] = bound * (1.0 - 8.0 * (n_bounded + 1) * EPS)
    try:
        solution = np.linalg.solve(system, rhs)
    except Exception:  # noqa: BLE001 (numba catches no narrower class)
        # singular support system: CD's iterate stands
        return -1.0
    if bordered and not np.isfinite(solution[size]):
        return -1.0
    new_multiplier = solution[size] if bordered else multiplier
    if not np.isfinite(new_multiplier) or new_multiplier < 0.0:
        return -1.0
    trial[:] = 0.0
    consistent = True
    for a in range(size):
        ja = support[a]
        value = solution[a]
        if not np.isfinite(value):
            return -1.0
        if value * coef[ja] <= 0.0:
            consistent = False
        trial[ja] = value
    if consistent:
        return new_multiplier
    if bordered:
        return -1.0
    # Signs changed (fixed multiplier): feature-sign line search along the
    # segment from coef to the Newton point. The objective is convex along it
    # and piecewise quadratic, with kinks where coordinates cross zero; the
    # best of those kinks and the end point is kept.
    _feature_sign_search(problem, coef, support[:size], weights, l2, trial)
    return multiplier


@inner_njit
def _feature_sign_search(problem, coef, support, weights, l2, trial):
    """Replace ``trial`` by the best point of the segment [coef, trial].

    Only the ``support`` coordinates move, so the objective along the
    segment is evaluated in O(|S|) per point from ``G`` restricted to the
    support.
    """
    gram = problem.gram
    size = support.shape[0]
    direction = np.empty(size)
    start = np.empty(size)
    gram_start = np.zeros(size)
    gram_direction = np.zeros(size)
    for a in range(size):
        start[a] = coef[support[a]]
        direction[a] = trial[support[a]] - start[a]
    for a in range(size):
        ja = support[a]
        total_start = 0.0
        total_direction = 0.0
        for b in range(size):
            g = gram[ja, support[b]]
            total_start += g * start[b]
            total_direction += g * direction[b]
        gram_start[a] = total_start
        gram_direction[a] = total_direction
    segment = (start, direction, gram_start, gram_direction)
    # Objective minus the constant zz/2 as a function of t on the segment.
    best_t = 0.0
    best_value = _segment_objective(0.0, segment, problem.correlation, support, weights, l2)
    for a in range(size + 1):
        if a < size:
            if start[a] * (start[a] + direction[a]) >= 0.0:
                continue
            t = start[a] / (start[a] - (start[a] + direction[a]))
        else:
            t = 1.0
        value = _segment_objective(t, segment, problem.correlation, support, weights, l2)
        if value < best_value:
            best_value = value
            best_t = t
    trial[:] = 0.0
    for a in range(size):
        value = start[a] + best_t * direction[a]
        # A coordinate whose kink is the chosen point is exactly zero there.
        if start[a] * (start[a] + direction[a]) < 0.0:
            kink = start[a] / (start[a] - (start[a] + direction[a]))
            if kink == best_t:
                value = 0.0
        trial[support[a]] = value


@inner_njit
def _segment_objective(t, segment, correlation, support, weights, l2):
    """The objective (less ``zz/2``) at ``start + t direction``; ``segment``
    is (start, direction, G start, G direction) on the support."""
    start, direction, gram_start, gram_direction = segment
    value = 0.0
    for a in range(support.shape[0]):
        w = start[a] + t * direction[a]
        q = gram_start[a] + t * gram_direction[a]
        ja = support[a]
        value += 0.5 * w * q - correlation[ja] * w + weights[ja] * abs(w) + 0.5 * l2 * w * w
    return value


@inner_njit
def _new_bracket():
    return Bracket(0.0, np.inf, -1.0, 0.0, 0)


@inner_njit
def _bracket_update(bracket, x, norm, radius):
    """Record the multiplier ``x`` whose solution has L1 norm ``norm``: the
    new ``low`` when it is above ``radius``, else the new ``high``. Moving
    the same end twice in a row halves the other end's distance to the
    radius (Illinois). (Halving an end not found yet is harmless: finding it
    overwrites it.)"""
    if norm > radius:
        norm_high = bracket.norm_high
        if bracket.side == -1:
            norm_high = radius + 0.5 * (norm_high - radius)
        return Bracket(x, norm, bracket.high, norm_high, -1)
    norm_low = bracket.norm_low
    if bracket.side == 1:
        norm_low = radius + 0.5 * (norm_low - radius)
    return Bracket(bracket.low, norm_low, x, norm, 1)


@inner_njit
def _bracket_stalled(bracket):
    return bracket.high - bracket.low <= 1e-15 * bracket.high


@inner_njit
def _bracket_next(bracket, radius):
    """The next multiplier: regula falsi on the piecewise-linear,
    non-increasing map from the multiplier to the norm, the midpoint when
    that leaves the bracket or no end above the radius is known."""
    low, high = bracket.low, bracket.high
    x = high
    if np.isfinite(bracket.norm_low):
        x = low + (bracket.norm_low - radius) * (high - low) / (bracket.norm_low
                                                                 - bracket.norm_high)
    if not (low < x < high):
        x = 0.5 * (low + high)
    return x


@inner_njit
def _solve_row(problem, penalty, options, coef, work):
    """Solve one row; ``coef`` holds the warm start and receives the solution.

    CD runs in chunks of epochs at the current multiplier; after each chunk a
    support-Newton step proposes an exact solution and a multiplier, and every
    iterate is certified (feasible primal point, Lagrangian dual bound). When
    Newton cannot help, the multiplier follows a bracketing search once CD has
    solved the current weighted problem. Returns a :class:`RowResult`.
    """
    n_bounded, bound, l2, tol = penalty.n_bounded, penalty.bound, penalty.l2, options.tol
    bounded = n_bounded > 0 and np.isfinite(bound)
    gram_coef, weights, trial, trial_gram_coef = (work.gram_coef, work.weights, work.trial,
                                                  work.trial_gram_coef)
    _recompute_gram_coef(problem.gram, coef, gram_coef)
    solution = coef.copy()
    multiplier = 0.0
    bracket = _new_bracket()
    sweeps = 0
    status = MAX_ITER_REACHED
    # The warm start (zero by default) is a candidate too, so a row stopped
    # by max_iter is never worse than where it started.
    best = _keep_best(problem, penalty, coef, work, solution,
                      Certificate(np.inf, -np.inf, 0.0, 0.0))
    newton_guides = True
    newton_updates = 0
    chunks_at_multiplier = 0
    for _ in range(100 * _MAX_MULTIPLIER_STEPS):
        chunk = min(_NEWTON_EVERY, options.max_iter - sweeps)
        if chunk <= 0:
            break
        inner_target = 0.5 * tol if bounded else tol
        # The Lagrangian's constant term; a row without a finite bound has
        # none (multiplier * inf would be nan and fail every stop test).
        offset = multiplier * bound if bounded else 0.0
        _lagrangian_weights(penalty, multiplier, weights)
        steps, lagrangian_primal, lagrangian_dual = _weighted_enet_cd(
            problem, weights, l2, coef, work, inner_target, offset, chunk)
        sweeps += steps
        inner_done = _gap_met(lagrangian_primal, lagrangian_dual, inner_target,
                              max(lagrangian_primal - offset, 0.0),
                              _ROUNDOFF * (problem.target_sq + abs(lagrangian_primal)))
        # Certify CD's iterate. Dual bounds are discounted by the rounding
        # error of the Gram form of ||r||^2 at the point (which cancels), so
        # they stay valid lower bounds even for points with huge coefficients.
        cd_dual = (lagrangian_dual - offset
                   - _quadratic_terms(problem, coef, gram_coef)[2])
        best = _keep_best(problem, penalty, coef, work, solution,
                          _offer_dual(best, cd_dual, multiplier))
        if _certified(best, tol):
            status = CONVERGED
            break
        phi = l1_norm(coef, 0, n_bounded)
        # Support-Newton step. While the multiplier is unknown and the bound
        # binds, the bordered system also proposes the multiplier; once the
        # bracketing search has started, Newton only polishes CD at the current
        # multiplier (accepted when it lowers that Lagrangian, so no cycling).
        free = bounded and newton_guides and (phi > bound or multiplier > 0.0)
        newton_multiplier = _support_newton(problem, penalty, coef, multiplier, free,
                                            weights, trial)
        if newton_multiplier < 0.0 and free:
            # The bordered system failed (signs or multiplier inconsistent):
            # still polish at the current multiplier.
            free = False
            newton_multiplier = _support_newton(problem, penalty, coef, multiplier, False,
                                                weights, trial)
        if newton_multiplier >= 0.0:
            _recompute_gram_coef(problem.gram, trial, trial_gram_coef)
            _lagrangian_weights(penalty, newton_multiplier, weights)
            t_primal, t_dual, t_roundoff = _lagrangian_gap(problem, trial, trial_gram_coef,
                                                           weights, l2)
            t_dual -= (newton_multiplier * bound if bounded else 0.0) + t_roundoff
            best = _keep_best(problem, penalty, trial, work, solution,
                              _offer_dual(best, t_dual, newton_multiplier))
            if _certified(best, tol):
                status = CONVERGED
                break
            if free:
                if newton_multiplier != multiplier:
                    multiplier = newton_multiplier
                    newton_updates += 1
                    # On a wrong support the proposals can wander; after a few
                    # the bracketing search takes over the multiplier.
                    if newton_updates >= _MAX_NEWTON_MULTIPLIERS:
                        newton_guides = False
                    chunks_at_multiplier = 0
                    continue
            elif t_primal < lagrangian_primal:
                copy_into(coef, trial)
                copy_into(gram_coef, trial_gram_coef)
        chunks_at_multiplier += 1
        # The unconstrained problem (mu = 0) can be very slow to solve on
        # singular designs (flat valleys); when its iterate is clearly outside
        # the bound, the bound is active and the search can start. (Deciding
        # so at mu > 0 from inexact iterates was measured to mislead the
        # bracket on digits.)
        clearly_one_side = (multiplier == 0.0 and chunks_at_multiplier >= 3
                            and phi > 1.05 * bound)
        if not (bounded and (inner_done or clearly_one_side)):
            continue
        newton_guides = False
        chunks_at_multiplier = 0
        # CD solved the weighted problem at this multiplier but Newton did
        # not close the gap: move the multiplier.
        if phi <= bound and multiplier == 0.0:
            if not inner_done:
                continue  # the bound looks inactive: keep solving at mu = 0
            status = SEARCH_STALLED  # bound inactive yet gap not met
            break
        bracket = _bracket_update(bracket, multiplier, phi, bound)
        if bracket.high < 0.0:  # no multiplier large enough yet
            multiplier = 4.0 * multiplier if multiplier > 0.0 else max(
                penalty.l1, 1e-3 * _max_abs_gradient(problem.correlation, gram_coef, n_bounded),
                1e-300)
            continue
        if _bracket_stalled(bracket):
            status = SEARCH_STALLED
            break
        multiplier = _bracket_next(bracket, bound)
    copy_into(coef, solution)
    return RowResult(best.primal - best.dual, best.primal, best.multiplier, sweeps, status, 0.0)


@inner_njit
def _feasible_objective(problem, penalty, point, n_projected, radius, out, out_gram_coef):
    """``point`` made feasible for ``||out[:n_projected]||_1 <= radius`` (into
    ``out``, with ``G out``) and its objective. Returns (primal, ||r||^2 / m,
    r^T z / m, roundoff) at ``out``."""
    copy_into(out, point)
    if n_projected > 0 and np.isfinite(radius):
        enforce_l1_bound_inplace(out, 0, n_projected, radius)
    _recompute_gram_coef(problem.gram, out, out_gram_coef)
    residual_sq, r_dot_z, roundoff = _quadratic_terms(problem, out, out_gram_coef)
    return _primal(out, residual_sq, penalty.weights, penalty.l2), residual_sq, r_dot_z, roundoff


@inner_njit
def _offer_dual(best, dual, multiplier):
    """``best`` with the dual bound ``dual`` (at ``multiplier``) if it is higher."""
    if dual > best.dual:
        return Certificate(best.primal, dual, multiplier, best.roundoff)
    return best


@inner_njit
def _keep_best(problem, penalty, point, work, solution, best):
    """Certify ``point`` made feasible (in ``work.candidate``) with the dual
    bound at multiplier 0 at its residual; the best feasible point goes to
    ``solution``. Returns the updated :class:`Certificate`."""
    candidate, candidate_gram_coef = work.candidate, work.candidate_gram_coef
    primal, residual_sq, r_dot_z, roundoff = _feasible_objective(
        problem, penalty, point, penalty.n_bounded, penalty.bound, candidate,
        candidate_gram_coef)
    dual = _dual(problem.correlation, candidate_gram_coef, residual_sq, r_dot_z,
                 penalty.weights, penalty.l2) - roundoff
    best = _offer_dual(best, dual, 0.0)
    if primal < best.primal:
        best = Certificate(primal, best.dual, best.multiplier, roundoff)
        copy_into(solution, candidate)
    return best


@inner_njit
def _max_abs_gradient(correlation, gram_coef, n_bounded):
    largest = 0.0
    for j in range(n_bounded):
        largest = max(largest, abs(correlation[j] - gram_coef[j]))
    return largest


@inner_njit
def _keep_best_in_row_ball(problem, penalty, point, out, out_gram_coef, solution, best):
    """Certify ``point`` projected onto the row ball ``||w||_1 <= row_bound``
    (into ``out``) and keep it in ``solution`` if its objective is the best
    so far. ``point`` must already satisfy the first bound, which the
    projection keeps (it only shrinks entries). Returns the updated
    :class:`Certificate`."""
    primal, _, _, roundoff = _feasible_objective(problem, penalty, point, point.shape[0],
                                                 penalty.row_bound, out, out_gram_coef)
    if primal < best.primal:
        copy_into(solution, out)
        return Certificate(primal, best.dual, best.multiplier, roundoff)
    return best


@inner_njit
def _solve_row_bounded(problem, penalty, options, coef, work):
    """Solve one row with the extra bound ``||w||_1 <= row_bound``.

    Outer bracketing search on the bound's multiplier ``t``: each step solves
    the row at L1 weights ``weights + t`` with ``_solve_row`` (warm started
    from the previous step), and certifies with the outer Lagrangian dual.
    Returns a :class:`RowResult`.
    """
    correlation, row_bound, tol = problem.correlation, penalty.row_bound, options.tol
    n_columns = coef.shape[0]
    solution = coef.copy()
    low_point = np.zeros(n_columns)
    high_point = np.zeros(n_columns)
    sweeps = 0
    status = MAX_ITER_REACHED
    # The warm start (zero by default) made feasible is the first candidate.
    point = work.point
    copy_into(point, coef)
    if penalty.n_bounded > 0 and np.isfinite(penalty.bound):
        enforce_l1_bound_inplace(point, 0, penalty.n_bounded, penalty.bound)
    best = _keep_best_in_row_ball(problem, penalty, point, work.candidate,
                                  work.candidate_gram_coef, solution,
                                  Certificate(np.inf, -np.inf, 0.0, 0.0))
    best_row_multiplier = 0.0
    # Start where the row is sparse (half the largest gradient), as a path
    # would: a tight row bound then needs few, cheap inner solves.
    _recompute_gram_coef(problem.gram, coef, work.gram_coef)
    largest_gradient = 0.0
    for j in range(n_columns):
        largest_gradient = max(largest_gradient, abs(correlation[j] - work.gram_coef[j]))
    t = max(0.5 * largest_gradient - penalty.l1, 1e-300)
    bracket = _new_bracket()
    for _ in range(_MAX_MULTIPLIER_STEPS):
        remaining = options.max_iter - sweeps
        if remaining <= 0:
            break
        # The inner gap is relative to the inner objective, which exceeds the
        # outer one by about t * row_bound: tighten it accordingly.
        inner_tol = 0.5 * tol
        if np.isfinite(best.primal) and best.primal > 0.0:
            inner_tol *= best.primal / (best.primal + t * row_bound)
        inner = _solve_row(problem, _shifted(penalty, t, work.row_weights),
                           CDOptions(inner_tol, remaining), coef, work)
        sweeps += max(inner.epochs, 1)
        dual = inner.objective - inner.gap - t * row_bound
        if dual > best.dual:
            best = Certificate(best.primal, dual, inner.multiplier, best.roundoff)
            best_row_multiplier = t
        best = _keep_best_in_row_ball(problem, penalty, coef, point, work.point_gram_coef,
                                      solution, best)
        if _certified(best, tol):
            status = CONVERGED
            break
        if inner.status == MAX_ITER_REACHED:
            break  # the inner solve used the whole budget
        # (A stalled inner search still leaves a near-optimal inner row whose
        # norm steers the outer search.)
        phi = l1_norm(coef, 0, n_columns)
        if phi <= row_bound and t == 0.0:
            # Bound inactive and the inner row certified, yet the outer gap
            # is not met: nothing left to search.
            status = SEARCH_STALLED
            break
        bracket = _bracket_update(bracket, t, phi, row_bound)
        copy_into(low_point if phi > row_bound else high_point, coef)
        if bracket.high < 0.0:  # no multiplier large enough yet
            t *= 4.0
            continue
        if not np.isfinite(bracket.norm_low):
            # No point outside the ball yet: try the bound inactive when
            # the inner problem is well posed there, else go down the
            # path (warm starts keep each step cheap; a direct jump to a
            # tiny t was measured to stall CD on ill-conditioned rows).
            t = 0.0 if (penalty.l1 > 0.0 or penalty.l2 > 0.0) else 0.125 * t
            continue
        if _bracket_stalled(bracket):
            status = SEARCH_STALLED
            break
        # Both bracket ends solve nearly the same inner problem; the convex
        # combination on the sphere ||w||_1 = row_bound is then nearly optimal
        # for the outer one (it matters when inexact inner solves make the
        # norm jump across the bound).
        theta = (bracket.norm_low - row_bound) / (bracket.norm_low - bracket.norm_high)
        candidate = work.candidate
        for j in range(n_columns):
            candidate[j] = theta * high_point[j] + (1.0 - theta) * low_point[j]
        best = _keep_best_in_row_ball(problem, penalty, candidate, point,
                                      work.point_gram_coef, solution, best)
        if _certified(best, tol):
            status = CONVERGED
            break
        t = _bracket_next(bracket, row_bound)
    copy_into(coef, solution)
    return RowResult(best.primal - best.dual, best.primal, best.multiplier, sweeps, status,
                     best_row_multiplier)


@inner_njit
def _row_work(n_columns):
    history_shape = (_ANDERSON_DEPTH + 1, n_columns)
    return RowWork(np.empty(n_columns), np.empty(n_columns), np.empty(n_columns),
                   np.empty(n_columns), np.empty(n_columns), np.empty(n_columns),
                   np.empty(n_columns), np.empty(n_columns), np.empty(n_columns),
                   np.empty(n_columns, dtype=np.int64), np.empty(history_shape),
                   np.empty(history_shape))


@inner_njit
def _solve_one(problem, penalty, options, row):
    """Solve one row in place; returns its :class:`RowResult`."""
    work = _row_work(row.shape[0])
    if np.isfinite(penalty.row_bound):
        return _solve_row_bounded(problem, penalty, options, row, work)
    return _solve_row(problem, penalty, options, row, work)


@inner_njit
def _store(record, result, earlier_epochs):
    """Write one row's :class:`RowResult` into its record row (gap, objective,
    multiplier, epochs, status, row multiplier)."""
    record[0] = result.gap
    record[1] = result.objective
    record[2] = result.multiplier
    record[3] = earlier_epochs + result.epochs
    record[4] = result.status
    record[5] = result.row_multiplier


@inner_njit
def _fill_support(values, support, row):
    """``row`` zero but ``row[support] = values``."""
    row[:] = 0.0
    for k in range(support.shape[0]):
        row[support[k]] = values[k]


@inner_njit
def _row_weighted(penalty, factors):
    """``penalty`` with its column weights multiplied by ``factors`` (one row's
    adaptive L1 factors)."""
    return RowPenalty(penalty.weights * factors, penalty.l1, penalty.l2, penalty.n_bounded,
                      penalty.bound, penalty.row_bound)


@kernel_njit
def _solve_rows_kernel(gram, correlations, target_sq, coef, penalty, factors, options,
                       records, rows):
    """The rows ``rows`` (indices) by coordinate descent from ``coef``, in
    place, row ``i``'s column weights multiplied by ``factors[i]``."""
    for i in rows:
        problem = RowProblem(gram, correlations[i], target_sq[i])
        _store(records[i], _solve_one(problem, _row_weighted(penalty, factors[i]), options,
                                      coef[i]), 0.0)


@kernel_njit
def _solve_supports_kernel(gram, correlations, target_sq, coef, penalty, factors, options,
                           records, rows):
    """Each row of ``rows`` again on its own support (columns where ``coef``
    is nonzero), the same problem restricted to it (:func:`_restricted`),
    row ``i``'s column weights multiplied by ``factors[i]``; ``records``
    keep their epochs and add these."""
    for i in rows:
        support = np.flatnonzero(coef[i])
        if support.size == 0:  # the zero row is the only point: exact
            _store(records[i], _zero_row_result(target_sq[i]), records[i, 3])
            continue
        problem, sub_penalty = _restricted(RowProblem(gram, correlations[i], target_sq[i]),
                                           _row_weighted(penalty, factors[i]), support)
        row = coef[i][support]
        result = _solve_one(problem, sub_penalty, options, row)
        _fill_support(row, support, coef[i])
        _store(records[i], result, records[i, 3])




def _one_bound(n_bounded, bound, row_bound):
    """At most one of the two L1 bounds is finite (what the homotopy follows)."""
    return not (n_bounded > 0 and np.isfinite(bound) and np.isfinite(row_bound))


def _relax_rows(data, coef, records, breakpoints, penalty, factors, options, solver):
    """Solve every row again restricted to its support (the relaxed Lasso),
    in place, under ``penalty`` (the relaxed one, row ``i``'s column weights
    multiplied by ``factors[i]``) and ``options``; ``data`` is ``(gram,
    correlations, target_sq)``. The homotopy when it solved the
    rows (its breakpoints are added to ``breakpoints``), coordinate descent
    from the unrelaxed point for rows it cannot certify and otherwise."""
    rows = np.arange(coef.shape[0])
    if solver == "homotopy" and not np.isfinite(penalty.row_bound):
        from .homotopy import homotopy_supports_kernel  # imports this module

        relaxed, relaxed_records = coef.copy(), records.copy()
        run_on_threads(homotopy_supports_kernel, coef.shape[0], *data, relaxed, penalty,
                       options.tol, 10 * coef.shape[1] + 100, relaxed_records)
        done = relaxed_records[:, 4] == 0
        breakpoints[done] += relaxed_records[done, 3].astype(np.int64)
        relaxed_records[:, 3] = records[:, 3]  # no coordinate-descent epochs
        coef[done], records[done] = relaxed[done], relaxed_records[done]
        rows = np.flatnonzero(~done)
    if rows.size:
        gram, correlations, target_sq = data
        rest, rest_records = np.ascontiguousarray(coef[rows]), records[rows]
        run_on_threads(_solve_supports_kernel, rows.size, gram,
                       np.ascontiguousarray(correlations[rows]),
                       np.ascontiguousarray(target_sq[rows]), rest, penalty,
                       np.ascontiguousarray(factors[rows]), options, rest_records)
        coef[rows], records[rows] = rest, rest_records


def solve_rows(gram, correlations, target_sq, *, n_bounded=0, bound=np.inf,
               row_bound=np.inf, l1=0.0, l2=0.0, tol=1e-6, max_iter=1000,
               coef_init=None, relax=1.0, solver="auto", l1_factors=None):
    """Solve every row problem sharing one Gram matrix, rows in parallel.

    Parameters
    ----------
    gram : ndarray of shape (n_columns, n_columns)
        ``G = W^T W / m`` of the (centred) design.
    correlations : ndarray of shape (n_rows, n_columns)
        ``c_i = W^T z_i / m`` for each row target ``z_i``.
    target_sq : ndarray of shape (n_rows,)
        ``||z_i||^2 / m``.
    n_bounded : int
        The first ``n_bounded`` coefficients of each row carry the L1 bound.
    bound : float
        Radius of the L1 bound (``np.inf`` for none).
    row_bound : float
        Radius of an L1 bound on the whole row (``np.inf`` for none). With it
        ``l1 = l2 = 0`` is allowed (the bound alone makes the problem sparse).
    l1, l2 : float
        L1 and squared-L2 penalty weights (``l2`` multiplies ``||w||^2 / 2``).
    tol : float
        Relative duality-gap tolerance: a row converges when
        ``gap <= tol * objective`` (plus a roundoff floor).
    max_iter : int
        Maximum coordinate-descent epochs per row.
    coef_init : ndarray of shape (n_rows, n_columns), default=None
        Warm start (copied).
    relax : float in (0, 1], default=1.0
        The relaxed Lasso (Meinshausen, 2007) when below 1: once solved, each
        row is solved again restricted to its support (its nonzero columns),
        with ``l1`` and ``l2`` multiplied by ``relax``, under the same bounds.
        The support is chosen by the full penalty; the smaller penalty on it
        undoes most of the shrinkage. The returned record then certifies the
        restricted problem (``n_iter`` counts the epochs of both solves).
    solver : {"auto", "cd", "homotopy"}, default="auto"
        ``"cd"``: coordinate descent with the multiplier search (any bounds,
        warm starts). ``"homotopy"``: the exact path of
        :mod:`sksim.solvers.homotopy` from ``w = 0`` (``coef_init`` is not
        used), certified the same way; a row it cannot certify is finished by
        coordinate descent from its point. It follows one bound: the
        block's, or a finite ``row_bound`` (over the whole row) when the
        block has none; rows with both are solved by coordinate descent.
        ``"auto"`` (the estimators' default too): coordinate descent when
        ``coef_init`` is given (a warm start), else the choice of
        :func:`auto_solver`; coordinate descent with ``l1_factors``.
    l1_factors : ndarray of shape (n_rows, n_columns), default=None
        Per-row L1 weights: row ``i`` pays ``l1 * l1_factors[i, j] * |w_j|``
        (an adaptive Lasso, Zou 2006; still one convex problem per row, under
        the same bounds, certified the same way). Finite and nonnegative;
        ``None`` is all ones. The homotopy follows one uniform penalty, so
        these rows are solved by coordinate descent.

    Returns
    -------
    RowSolution
    """
    gram = np.ascontiguousarray(gram, dtype=np.float64)
    correlations = np.ascontiguousarray(correlations, dtype=np.float64)
    target_sq = np.ascontiguousarray(target_sq, dtype=np.float64)
    n_rows, n_columns = correlations.shape
    if coef_init is None:
        coef = np.zeros((n_rows, n_columns))
    else:
        coef = np.array(coef_init, dtype=np.float64, order="C", copy=True)
    if solver == "auto":
        solver = "cd" if coef_init is not None else \
            auto_solver(gram, n_bounded, bound, row_bound, l2)
    if l1_factors is None:
        factors = np.ones((n_rows, n_columns))
    else:
        factors = np.ascontiguousarray(l1_factors, dtype=np.float64)
        if factors.shape != (n_rows, n_columns) or not np.all(np.isfinite(factors)) \
                or np.any(factors < 0):
            raise ValueError(f"l1_factors must be finite and nonnegative, of shape "
                             f"{(n_rows, n_columns)}; got shape {factors.shape}")
        solver = "cd"  # the homotopy follows a uniform penalty
    records = np.zeros((n_rows, 6))
    breakpoints = np.zeros(n_rows, dtype=np.int64)
    method = np.zeros(n_rows, dtype=np.int64)
    data = (gram, correlations, target_sq)
    penalty = row_penalty(n_columns, n_bounded, bound, row_bound, l1, l2)
    options = CDOptions(float(tol), int(max_iter))
    if n_rows and solver == "homotopy" and _one_bound(n_bounded, bound, row_bound):
        from .homotopy import homotopy_rows_kernel  # imports this module

        # the homotopy follows one L1 bound: the block's, or the row bound's
        # over every column
        whole_row = np.isfinite(row_bound)
        followed = row_penalty(n_columns, n_columns, row_bound, l1=l1, l2=l2) if whole_row else penalty
        run_on_threads(homotopy_rows_kernel, n_rows, *data, coef, followed, options.tol,
                       10 * n_columns + 100, records)
        if whole_row:  # its multiplier is the row bound's
            records[:, 5], records[:, 2] = records[:, 2], 0.0
        breakpoints, method = _finish_homotopy_rows(data, coef, records, penalty, options)
    elif n_rows:
        run_on_threads(_solve_rows_kernel, n_rows, *data, coef, penalty, factors, options,
                       records)
    if n_rows and relax < 1.0:
        relaxed = row_penalty(n_columns, n_bounded, bound, row_bound, l1 * relax, l2 * relax)
        _relax_rows(data, coef, records, breakpoints, relaxed, factors, options, solver)
    return _row_solution(coef, records, breakpoints, method)


def _finish_homotopy_rows(data, coef, records, penalty, options):
    """Rows the homotopy solved (``records[:, 3]`` holding their breakpoints):
    the rows it could not certify are finished by coordinate descent from
    its point under ``penalty`` and ``options``, in place; ``data`` is
    ``(gram, correlations, target_sq)``. Returns (breakpoints, method) per
    row."""
    gram, correlations, target_sq = data
    breakpoints = records[:, 3].astype(np.int64)
    records[:, 3] = 0  # no coordinate-descent epochs
    method = np.ones(coef.shape[0], dtype=np.int64)
    unresolved = np.flatnonzero(records[:, 4] != 0)
    if unresolved.size:
        rest = np.ascontiguousarray(coef[unresolved])
        rest_records = np.zeros((unresolved.size, 6))
        run_on_threads(_solve_rows_kernel, unresolved.size, gram, correlations[unresolved],
                       target_sq[unresolved], rest, penalty,
                       np.ones((unresolved.size, coef.shape[1])), options, rest_records)
        coef[unresolved], records[unresolved] = rest, rest_records
        method[unresolved] = 2
    return breakpoints, method


def _row_solution(coef, records, breakpoints, method):
    gap, objective, multiplier, n_iter, status, row_multiplier = records.T
    return RowSolution(coef, gap.copy(), objective.copy(), multiplier.copy(),
                       n_iter.astype(np.int64), status.astype(np.int64),
                       row_multiplier.copy(), breakpoints, method)


# Unbounded rows go to coordinate descent under solver="auto" when the Gram,
# scaled to a unit diagonal, is at most this ill-conditioned: there its
# epochs stay in the tens to low hundreds (measured up to a condition number
# of 2.3e3, where it was still 2x faster than the homotopy on full supports),
# while the homotopy's cost grows with the support whatever the conditioning.
_AUTO_CD_MAX_CONDITION = 1e4


def auto_solver(gram, n_bounded=0, bound=np.inf, row_bound=np.inf, l2=0.0):
    """The solver ``solver="auto"`` uses for rows on ``gram``.

    * ``"cd"`` for rows under both bounds (the kappa block and a finite
      ``row_bound``: the homotopy follows one multiplier);
    * ``"homotopy"`` for rows with one L1 bound (the state rows' kappa, or a
      ``row_bound``): coordinate descent needs a multiplier search of
      several weighted solves there, and the homotopy measured faster on
      every design with the kappa bound (benchmarks/README.md);
    * otherwise ``"cd"`` when ``G + l2 I`` scaled to a unit diagonal has a
      condition number of at most ``1e4`` (dead columns excluded), else
      ``"homotopy"``, whose cost does not depend on conditioning.

    Parameters
    ----------
    gram : ndarray of shape (n_columns, n_columns)
    n_bounded, bound, row_bound, l2
        As in :func:`solve_rows`.

    Returns
    -------
    solver : {"cd", "homotopy"}
    """
    if not _one_bound(n_bounded, bound, row_bound):
        return "cd"
    if (n_bounded > 0 and np.isfinite(bound)) or np.isfinite(row_bound):
        return "homotopy"
    diagonal = np.diag(gram) + l2
    live = diagonal > 0.0
    if not np.any(live):
        return "cd"
    scale = 1.0 / np.sqrt(diagonal[live])
    # one copy of the Gram, scaled in place (the test below overwrites it)
    scaled = gram[np.ix_(live, live)]
    scaled[np.diag_indices_from(scaled)] += l2
    scaled *= scale[:, None]
    scaled *= scale[None, :]
    well_conditioned = _condition_at_most(scaled, _AUTO_CD_MAX_CONDITION)
    return "cd" if well_conditioned else "homotopy"


# below this many columns all eigenvalues cost less than the Lanczos set-up
_FULL_EIGENSOLVE_MAX = 100


def _condition_at_most(matrix, limit):
    """Whether a symmetric positive semidefinite ``matrix`` (overwritten)
    has ``lambda_min * limit >= lambda_max``.

    Equivalently, ``matrix - (lambda_max / limit) I`` is positive definite:
    ``lambda_max`` by Lanczos (ARPACK to machine precision, a fixed start
    vector), then one Cholesky factorisation, which stops at the first
    non-positive pivot of an ill-conditioned or singular matrix. That is
    a third of a full eigendecomposition when the matrix is well
    conditioned and a few columns' work when it is singular (896 columns:
    58 ms for all eigenvalues; 9 ms for a singular Gram). One BLAS thread:
    the matrix is small, and a multi-threaded eigensolver competing with
    busy cores was measured 100x slower (5.8 s instead of 0.05 s).
    """
    n = matrix.shape[0]
    with single_threaded_blas():
        if n <= _FULL_EIGENSOLVE_MAX:
            eigenvalues = scipy.linalg.eigh(matrix, eigvals_only=True, overwrite_a=True,
                                            check_finite=False, driver="ev")
            return bool(eigenvalues[0] * limit >= eigenvalues[-1])
        try:
            largest = scipy.sparse.linalg.eigsh(
                matrix, k=1, which="LA", v0=np.ones(n), tol=0,
                return_eigenvectors=False)[0]
        except scipy.sparse.linalg.ArpackNoConvergence:
            largest = scipy.linalg.eigh(matrix, eigvals_only=True, check_finite=False,
                                        subset_by_index=[n - 1, n - 1])[0]
        matrix[np.diag_indices_from(matrix)] -= largest / limit
        try:
            scipy.linalg.cholesky(matrix, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            return False
        return True


def solve_rows_path(gram, correlations, target_sq, alphas, *, n_bounded=0,
                    bound=np.inf, row_bound=np.inf, l1_ratio=1.0, tol=1e-6,
                    max_iter=1000, relax=1.0, solver="homotopy"):
    """:func:`solve_rows` at every penalty of ``alphas`` in one call.

    With the homotopy (``solver="homotopy"``, or ``"auto"`` choosing it) and
    ``l1_ratio=1``, each row's solutions come from one exact homotopy of the
    bound-constrained row (:mod:`sksim.solvers.homotopy`) followed from
    ``alpha_max`` through all of ``alphas`` (in decreasing order), so the
    grid costs about as much as its smallest alpha alone; rows the homotopy
    cannot certify are re-solved by coordinate descent warm-started from its
    point. Otherwise (coordinate descent, a finite ``row_bound``, or an
    elastic net, whose ``l2 = alpha (1 - l1_ratio)`` moves with alpha so the
    path is not piecewise linear) each alpha is solved on its own, coordinate
    descent warm-started from the previous alpha's rows.

    Parameters
    ----------
    gram, correlations, target_sq, n_bounded, bound, row_bound, tol, max_iter, relax
        As in :func:`solve_rows`.
    alphas : array-like of shape (n_alphas,)
        Penalties, each split as ``l1 = alpha * l1_ratio``,
        ``l2 = alpha * (1 - l1_ratio)``.
    l1_ratio : float, default=1.0
    solver : {"homotopy", "cd", "auto"}, default="homotopy"

    Returns
    -------
    alphas : ndarray of shape (n_alphas,)
        The penalties in decreasing order.
    solutions : list of RowSolution
        One per alpha, in that order.
    """
    alphas = np.sort(np.asarray(alphas, dtype=np.float64))[::-1].copy()
    if solver == "auto":
        solver = auto_solver(gram, n_bounded, bound, row_bound, 0.0)
    common = {"n_bounded": n_bounded, "bound": bound, "row_bound": row_bound, "tol": tol,
              "max_iter": max_iter, "relax": relax}
    if solver == "cd" or l1_ratio < 1.0 or np.isfinite(row_bound) or not alphas.size:
        solutions, previous = [], None
        for alpha in alphas:
            rows = solve_rows(gram, correlations, target_sq, l1=alpha * l1_ratio,
                              l2=alpha * (1.0 - l1_ratio), coef_init=previous,
                              solver=solver, **common)
            solutions.append(rows)
            previous = rows.coef
        return alphas, solutions
    from .homotopy import homotopy_path_kernel  # imports this module

    gram = np.ascontiguousarray(gram, dtype=np.float64)
    correlations = np.ascontiguousarray(correlations, dtype=np.float64)
    target_sq = np.ascontiguousarray(target_sq, dtype=np.float64)
    n_rows, n_columns = correlations.shape
    coefs = np.zeros((alphas.size, n_rows, n_columns))
    records = np.zeros((alphas.size, n_rows, 6))
    if n_rows:
        # the path's penalty is each alpha, added to this zero one
        run_on_threads(homotopy_path_kernel, n_rows, gram, correlations, target_sq, alphas,
                       row_penalty(n_columns, n_bounded, bound if n_bounded else np.inf),
                       float(tol), (10 * n_columns + 100) * alphas.size, coefs, records)
    data = (gram, correlations, target_sq)
    options = CDOptions(float(tol), int(max_iter))
    solutions = []
    for alpha, coef, record in zip(alphas, coefs, records):
        penalty = row_penalty(n_columns, n_bounded, bound, l1=alpha)
        breakpoints, method = _finish_homotopy_rows(data, coef, record, penalty, options)
        if n_rows and relax < 1.0:
            relaxed = row_penalty(n_columns, n_bounded, bound, l1=alpha * relax)
            _relax_rows(data, coef, record, breakpoints, relaxed, np.ones(coef.shape), options,
                        "homotopy")
        solutions.append(_row_solution(coef, record, breakpoints, method))
    return alphas, solutions


def resolve_n_threads(n_jobs):
    """Map scikit-learn's ``n_jobs`` to a numba thread count.

    ``None`` and ``-1`` use every numba thread; ``-k`` leaves ``k - 1`` unused.
    """
    available = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None:
        return available
    if n_jobs < 0:
        return max(1, available + 1 + n_jobs)
    return max(1, min(int(n_jobs), available))
