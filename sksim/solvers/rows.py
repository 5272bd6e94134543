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
from numba import njit, prange
from threadpoolctl import threadpool_limits

from ._first_use import announce_compilation
from .projection import enforce_l1_bound_inplace, l1_norm, soft_threshold

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


@njit(cache=True)
def _quadratic_terms(correlation, coef, gram_coef, target_sq):
    """Return (||r||^2 / m, r^T z / m) from Gram quantities."""
    c_dot_w = 0.0
    w_dot_q = 0.0
    for j in range(coef.shape[0]):
        c_dot_w += correlation[j] * coef[j]
        w_dot_q += coef[j] * gram_coef[j]
    residual_sq = max(target_sq - 2.0 * c_dot_w + w_dot_q, 0.0)
    roundoff = _ROUNDOFF * (target_sq + abs(c_dot_w) + abs(w_dot_q))
    return residual_sq, target_sq - c_dot_w, roundoff


@njit(cache=True)
def _primal(coef, residual_sq, n_bounded, weight_bounded, weight_free, l2):
    """Weighted elastic-net objective from its pieces."""
    norm_bounded = l1_norm(coef, 0, n_bounded)
    norm_free = l1_norm(coef, n_bounded, coef.shape[0])
    sq_norm = 0.0
    for j in range(coef.shape[0]):
        sq_norm += coef[j] * coef[j]
    return (0.5 * residual_sq + weight_bounded * norm_bounded
            + weight_free * norm_free + 0.5 * l2 * sq_norm)


@njit(cache=True)
def _dual(correlation, gram_coef, residual_sq, r_dot_z, n_bounded,
          weight_bounded, weight_free, l2):
    """Best of a few dual points ``nu = s * r / m`` of the weighted elastic net.

    ``D(s) = s r^T z/m - s^2 ||r||^2/(2m) - sum_j (s |g_j| - lam_j)_+^2 / (2 l2)``
    with ``g = W^T r / m = c - G w``. For ``l2 == 0`` the last term is the
    indicator of ``s |g_j| <= lam_j``.
    """
    n_columns = correlation.shape[0]
    s_feasible = 1.0
    for j in range(n_columns):
        weight = weight_bounded if j < n_bounded else weight_free
        gradient = abs(correlation[j] - gram_coef[j])
        if gradient * s_feasible > weight:
            s_feasible = weight / gradient
    s_best = s_feasible
    if residual_sq > 0.0:
        s_best = min(s_feasible, max(0.0, r_dot_z / residual_sq))
    best = s_best * r_dot_z - 0.5 * s_best * s_best * residual_sq
    if l2 > 0.0 and s_feasible < 1.0:
        penalty = 0.0
        for j in range(n_columns):
            weight = weight_bounded if j < n_bounded else weight_free
            excess = abs(correlation[j] - gram_coef[j]) - weight
            if excess > 0.0:
                penalty += excess * excess
        unscaled = r_dot_z - 0.5 * residual_sq - 0.5 * penalty / l2
        if unscaled > best:
            best = unscaled
    return best


@njit(cache=True)
def _lagrangian_gap(correlation, coef, gram_coef, target_sq, n_bounded,
                    weight_bounded, weight_free, l2):
    """(primal, dual, roundoff) of the weighted elastic net at ``coef``."""
    residual_sq, r_dot_z, roundoff = _quadratic_terms(
        correlation, coef, gram_coef, target_sq)
    primal = _primal(coef, residual_sq, n_bounded, weight_bounded, weight_free, l2)
    dual = _dual(correlation, gram_coef, residual_sq, r_dot_z, n_bounded,
                 weight_bounded, weight_free, l2)
    return primal, dual, roundoff


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _weighted_enet_cd(gram, correlation, target_sq, coef, gram_coef, n_bounded,
                      weight_bounded, weight_free, l2, rel_tol, offset,
                      max_sweeps, active, history, gram_history):
    """CD on one weighted elastic net until its duality gap meets the target.

    The target is ``rel_tol * (primal - offset)`` plus roundoff; ``offset`` is
    ``mu * bound`` so that the target is relative to the Lagrangian value, an
    estimate of the constrained optimum. A full sweep is followed by epochs
    over its support only (cost O(nnz d) instead of O(d^2)), accelerated by
    Anderson extrapolation of the last iterates (accepted only when it lowers
    the objective), until the support's own gap is small; then a full sweep
    again. Returns (sweeps, primal, dual).
    """
    n_columns = coef.shape[0]
    depth = history.shape[0] - 1
    sweeps = 0
    primal, dual, roundoff = np.inf, -np.inf, 0.0
    while sweeps < max_sweeps:
        # At least one full sweep per call, as scikit-learn's CD does.
        if sweeps > 0 and (primal - dual
                           <= rel_tol * max(primal - offset, 0.0) + roundoff):
            break
        for j in range(n_columns):
            weight = weight_bounded if j < n_bounded else weight_free
            _update_coordinate(gram, correlation, coef, gram_coef, j, weight, l2)
        sweeps += 1
        primal, dual, roundoff = _lagrangian_gap(
            correlation, coef, gram_coef, target_sq, n_bounded, weight_bounded,
            weight_free, l2)
        n_active = 0
        for j in range(n_columns):
            if coef[j] != 0.0:
                active[n_active] = j
                n_active += 1
        if n_active == 0 or n_active == n_columns:
            continue
        stored = 0
        while sweeps < max_sweeps:
            target = rel_tol * max(primal - offset, 0.0) + roundoff
            if primal - dual <= target:
                break
            # The support's own gap: stop polishing it once it is well below
            # the target, and let a full sweep look for missing coordinates.
            sub_dual = _dual_subset(correlation, gram_coef, coef, target_sq,
                                    n_bounded, weight_bounded, weight_free, l2,
                                    active, n_active)
            if primal - sub_dual <= 0.25 * target:
                break
            for t in range(n_active):
                j = active[t]
                weight = weight_bounded if j < n_bounded else weight_free
                _update_coordinate(gram, correlation, coef, gram_coef, j, weight, l2)
            sweeps += 1
            slot = min(stored, depth)
            if stored > depth:
                for k in range(depth):
                    history[k] = history[k + 1]
                    gram_history[k] = gram_history[k + 1]
            history[slot] = coef
            gram_history[slot] = gram_coef
            stored += 1
            primal, dual, roundoff = _lagrangian_gap(
                correlation, coef, gram_coef, target_sq, n_bounded,
                weight_bounded, weight_free, l2)
            if stored > depth and stored % depth == 1:
                weights = _anderson_weights(history, n_active, active, depth)
                if weights.shape[0] == depth:
                    trial = np.zeros(n_columns)
                    trial_gram = np.zeros(n_columns)
                    for k in range(depth):
                        trial += weights[k] * history[k + 1]
                        trial_gram += weights[k] * gram_history[k + 1]
                    t_primal, t_dual, t_roundoff = _lagrangian_gap(
                        correlation, trial, trial_gram, target_sq, n_bounded,
                        weight_bounded, weight_free, l2)
                    if t_primal < primal:
                        coef[:] = trial
                        # Recompute G w exactly so rounding does not accumulate.
                        _recompute_gram_coef(gram, coef, gram_coef)
                        primal, dual, roundoff = _lagrangian_gap(
                            correlation, coef, gram_coef, target_sq, n_bounded,
                            weight_bounded, weight_free, l2)
    return sweeps, primal, dual


@njit(cache=True)
def _dual_subset(correlation, gram_coef, coef, target_sq, n_bounded,
                 weight_bounded, weight_free, l2, active, n_active):
    """Dual bound of the problem restricted to the ``active`` coordinates."""
    residual_sq, r_dot_z, _ = _quadratic_terms(correlation, coef, gram_coef,
                                               target_sq)
    s_feasible = 1.0
    for t in range(n_active):
        j = active[t]
        weight = weight_bounded if j < n_bounded else weight_free
        gradient = abs(correlation[j] - gram_coef[j])
        if gradient * s_feasible > weight:
            s_feasible = weight / gradient
    s_best = s_feasible
    if residual_sq > 0.0:
        s_best = min(s_feasible, max(0.0, r_dot_z / residual_sq))
    return s_best * r_dot_z - 0.5 * s_best * s_best * residual_sq


@njit(cache=True)
def _recompute_gram_coef(gram, coef, gram_coef):
    gram_coef[:] = 0.0
    for j in range(coef.shape[0]):
        if coef[j] != 0.0:
            gram_coef += coef[j] * gram[j]


@njit(cache=True)
def _support_newton(gram, correlation, coef, n_bounded, bound, l1, l2,
                    multiplier, free_multiplier, trial):
    """Solve the KKT system on the current support and signs of ``coef``.

    With support ``S`` and signs ``s`` fixed, optimality is linear:
    ``(G_SS + l2 I) w_S = c_S - l1 s_S - mu s_S^bounded``, and when the bound
    is active (``free_multiplier``) also ``s_S^bounded . w_S = radius`` with
    ``mu`` unknown (a bordered system). This is exact in one step once CD has
    found the support, where CD alone crawls on ill-conditioned Gram matrices.
    Writes the candidate into ``trial`` and returns its multiplier, or -1 when
    the system is singular or the signs or the multiplier are inconsistent
    (the caller then certifies and keeps CD's iterate instead).
    """
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
        rhs[a] = correlation[ja] - l1 * sign_a
        if ja < n_bounded:
            if bordered:
                system[a, size] = sign_a
                system[size, a] = sign_a
            else:
                rhs[a] -= multiplier * sign_a
    if bordered:
        eps = np.finfo(np.float64).eps
        rhs[size] = bound * (1.0 - 8.0 * (n_bounded + 1) * eps)
    try:
        solution = np.linalg.solve(system, rhs)
    except Exception:  # singular support system: CD's iterate stands
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
    _feature_sign_search(gram, correlation, coef, support, size, n_bounded,
                         l1 + multiplier, l1, l2, trial)
    return multiplier


@njit(cache=True)
def _feature_sign_search(gram, correlation, coef, support, size, n_bounded,
                         weight_bounded, weight_free, l2, trial):
    """Replace ``trial`` by the best point of the segment [coef, trial].

    Only the support coordinates move, so the objective along the segment is
    evaluated in O(|S|) per point from ``G`` restricted to the support.
    """
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
    # Objective minus the constant zz/2 as a function of t on the segment.
    best_t = 0.0
    best_value = _segment_objective(0.0, start, direction, gram_start,
                                    gram_direction, correlation, support, size,
                                    n_bounded, weight_bounded, weight_free, l2)
    for a in range(size + 1):
        if a < size:
            if start[a] * (start[a] + direction[a]) >= 0.0:
                continue
            t = start[a] / (start[a] - (start[a] + direction[a]))
        else:
            t = 1.0
        value = _segment_objective(t, start, direction, gram_start,
                                   gram_direction, correlation, support, size,
                                   n_bounded, weight_bounded, weight_free, l2)
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


@njit(cache=True)
def _segment_objective(t, start, direction, gram_start, gram_direction,
                       correlation, support, size, n_bounded, weight_bounded,
                       weight_free, l2):
    value = 0.0
    for a in range(size):
        w = start[a] + t * direction[a]
        q = gram_start[a] + t * gram_direction[a]
        ja = support[a]
        weight = weight_bounded if ja < n_bounded else weight_free
        value += 0.5 * w * q - correlation[ja] * w + weight * abs(w) + 0.5 * l2 * w * w
    return value


@njit(cache=True)
def _solve_row(gram, correlation, target_sq, coef, n_bounded, bound, l1, l2,
               tol, max_iter, gram_coef, candidate, candidate_gram_coef, active,
               history, gram_history):
    """Solve one row; ``coef`` holds the warm start and receives the solution.

    CD runs in chunks of epochs at the current multiplier; after each chunk a
    support-Newton step proposes an exact solution and a multiplier, and every
    iterate is certified (feasible primal point, Lagrangian dual bound). When
    Newton cannot help, the multiplier follows a bracketing search once CD has
    solved the current weighted problem. Returns
    (gap, objective, multiplier, sweeps, status).
    """
    n_columns = coef.shape[0]
    bounded = n_bounded > 0 and np.isfinite(bound)
    _recompute_gram_coef(gram, coef, gram_coef)
    solution = coef.copy()
    # The roundoff floor is that of the point being certified: rounding in
    # ||r||^2 = zz - 2 c.w + w.Gw scales with those terms at that point. The
    # dual is already discounted by it once, so a gap of twice the floor is
    # the best that can be certified.
    best_primal, best_dual, best_multiplier = np.inf, -np.inf, 0.0
    best_roundoff = 0.0
    multiplier = 0.0
    low, phi_low, high, phi_high = 0.0, np.inf, -1.0, 0.0
    side = 0
    sweeps = 0
    status = MAX_ITER_REACHED
    trial = np.empty(n_columns)
    trial_gram = np.empty(n_columns)
    # The warm start (zero by default) is a candidate too, so a row stopped
    # by max_iter is never worse than where it started.
    best_primal, best_dual, best_multiplier, best_roundoff = _keep_best(
        gram, correlation, target_sq, coef, n_bounded, bound, l1, l2,
        candidate, candidate_gram_coef, solution, best_primal, best_dual,
        best_multiplier, best_roundoff)
    newton_guides = True
    newton_updates = 0
    chunks_at_multiplier = 0
    for _ in range(100 * _MAX_MULTIPLIER_STEPS):
        chunk = min(_NEWTON_EVERY, max_iter - sweeps)
        if chunk <= 0:
            break
        inner_target = 0.5 * tol if bounded else tol
        steps, lagrangian_primal, lagrangian_dual = _weighted_enet_cd(
            gram, correlation, target_sq, coef, gram_coef, n_bounded,
            l1 + multiplier, l1, l2, inner_target, multiplier * bound, chunk,
            active, history, gram_history)
        sweeps += steps
        offset = multiplier * bound
        inner_done = (lagrangian_primal - lagrangian_dual
                      <= inner_target * max(lagrangian_primal - offset, 0.0)
                      + _ROUNDOFF * (target_sq + abs(lagrangian_primal)))
        # Certify CD's iterate. Dual bounds are discounted by the rounding
        # error of the Gram form of ||r||^2 at the point (which cancels), so
        # they stay valid lower bounds even for points with huge coefficients.
        cd_dual = (lagrangian_dual - offset
                   - _quadratic_terms(correlation, coef, gram_coef, target_sq)[2])
        if cd_dual > best_dual:
            best_dual = cd_dual
            best_multiplier = multiplier
        best_primal, best_dual, best_multiplier, best_roundoff = _keep_best(
            gram, correlation, target_sq, coef, n_bounded, bound, l1, l2,
            candidate, candidate_gram_coef, solution, best_primal, best_dual,
            best_multiplier, best_roundoff)
        if best_primal - best_dual <= tol * best_primal + 2.0 * best_roundoff:
            status = CONVERGED
            break
        phi = l1_norm(coef, 0, n_bounded)
        # Support-Newton step. While the multiplier is unknown and the bound
        # binds, the bordered system also proposes the multiplier; once the
        # bracketing search has started, Newton only polishes CD at the current
        # multiplier (accepted when it lowers that Lagrangian, so no cycling).
        free = bounded and newton_guides and (phi > bound or multiplier > 0.0)
        newton_multiplier = _support_newton(gram, correlation, coef, n_bounded,
                                            bound, l1, l2, multiplier, free, trial)
        if newton_multiplier < 0.0 and free:
            # The bordered system failed (signs or multiplier inconsistent):
            # still polish at the current multiplier.
            free = False
            newton_multiplier = _support_newton(gram, correlation, coef,
                                                n_bounded, bound, l1, l2,
                                                multiplier, False, trial)
        if newton_multiplier >= 0.0:
            _recompute_gram_coef(gram, trial, trial_gram)
            t_primal, t_dual, t_roundoff = _lagrangian_gap(
                correlation, trial, trial_gram, target_sq, n_bounded,
                l1 + newton_multiplier, l1, l2)
            t_dual -= newton_multiplier * bound + t_roundoff
            if t_dual > best_dual:
                best_dual = t_dual
                best_multiplier = newton_multiplier
            best_primal, best_dual, best_multiplier, best_roundoff = _keep_best(
                gram, correlation, target_sq, trial, n_bounded, bound, l1, l2,
                candidate, candidate_gram_coef, solution, best_primal,
                best_dual, best_multiplier, best_roundoff)
            if best_primal - best_dual <= tol * best_primal + 2.0 * best_roundoff:
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
                coef[:] = trial
                gram_coef[:] = trial_gram
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
        # not close the gap: move the multiplier (Illinois regula falsi on the
        # piecewise-linear, non-increasing map mu -> ||a(mu)||_1).
        if phi > bound:
            low, phi_low = multiplier, phi
            if high < 0.0:
                multiplier = 4.0 * multiplier if multiplier > 0.0 else max(
                    l1, 1e-3 * _max_abs_gradient(correlation, gram_coef, n_bounded),
                    1e-300)
                continue
            if side == -1:
                phi_high = bound + 0.5 * (phi_high - bound)
            side = -1
        else:
            if multiplier == 0.0 and not inner_done:
                continue  # the bound looks inactive: keep solving at mu = 0
            high, phi_high = multiplier, phi
            if side == 1:
                phi_low = bound + 0.5 * (phi_low - bound)
            side = 1
            if multiplier == 0.0:
                if not inner_done:
                    continue  # the bound looks inactive: keep solving at mu = 0
                status = SEARCH_STALLED  # bound inactive yet gap not met
                break
        if high - low <= 1e-15 * high:
            status = SEARCH_STALLED
            break
        if np.isfinite(phi_low):
            multiplier = low + (phi_low - bound) * (high - low) / (phi_low - phi_high)
        if not (low < multiplier < high):
            multiplier = 0.5 * (low + high)
    coef[:] = solution
    return best_primal - best_dual, best_primal, best_multiplier, sweeps, status


@njit(cache=True)
def _keep_best(gram, correlation, target_sq, point, n_bounded, bound, l1, l2,
               candidate, candidate_gram_coef, solution, best_primal, best_dual,
               best_multiplier, best_roundoff):
    """Certify ``point`` (made feasible) and keep the best primal and dual.

    The best feasible point goes to ``solution``. Returns the updated
    (best_primal, best_dual, best_multiplier, best_roundoff).
    """
    primal, dual, roundoff = _certify_feasible(
        gram, correlation, target_sq, point, n_bounded, bound, l1, l2,
        candidate, candidate_gram_coef)
    if dual > best_dual:
        best_dual = dual
        best_multiplier = 0.0
    if primal < best_primal:
        best_primal = primal
        best_roundoff = roundoff
        solution[:] = candidate
    return best_primal, best_dual, best_multiplier, best_roundoff


@njit(cache=True)
def _max_abs_gradient(correlation, gram_coef, n_bounded):
    largest = 0.0
    for j in range(n_bounded):
        largest = max(largest, abs(correlation[j] - gram_coef[j]))
    return largest


@njit(cache=True)
def _certify_feasible(gram, correlation, target_sq, coef, n_bounded, bound, l1,
                      l2, candidate, candidate_gram_coef):
    """Feasible point from ``coef`` (into ``candidate``), its objective, and
    the dual bound (multiplier 0) at its residual. Returns
    (primal, dual, roundoff)."""
    candidate[:] = coef
    if n_bounded > 0 and np.isfinite(bound):
        enforce_l1_bound_inplace(candidate, 0, n_bounded, bound)
    _recompute_gram_coef(gram, candidate, candidate_gram_coef)
    residual_sq, r_dot_z, roundoff = _quadratic_terms(
        correlation, candidate, candidate_gram_coef, target_sq)
    primal = _primal(candidate, residual_sq, n_bounded, l1, l1, l2)
    dual = _dual(correlation, candidate_gram_coef, residual_sq, r_dot_z,
                 n_bounded, l1, l1, l2) - roundoff
    return primal, dual, roundoff


@njit(cache=True)
def _keep_best_row_bounded(gram, correlation, target_sq, point, row_bound, l1,
                           l2, work, work_gram_coef, solution, best_primal,
                           best_roundoff):
    """Certify ``point`` projected onto the row ball ``||w||_1 <= row_bound``
    (into ``work``) and keep it in ``solution`` if its objective is the best
    so far. ``point`` must already satisfy the first bound, which the
    projection keeps (it only shrinks entries). Returns the updated
    (best_primal, best_roundoff)."""
    work[:] = point
    enforce_l1_bound_inplace(work, 0, work.shape[0], row_bound)
    _recompute_gram_coef(gram, work, work_gram_coef)
    residual_sq, _, roundoff = _quadratic_terms(
        correlation, work, work_gram_coef, target_sq)
    primal = _primal(work, residual_sq, 0, l1, l1, l2)
    if primal < best_primal:
        solution[:] = work
        return primal, roundoff
    return best_primal, best_roundoff


@njit(cache=True)
def _solve_row_bounded(gram, correlation, target_sq, coef, n_bounded, bound,
                       row_bound, l1, l2, tol, max_iter, gram_coef, candidate,
                       candidate_gram_coef, active, history, gram_history,
                       point, point_gram_coef):
    """Solve one row with the extra bound ``||w||_1 <= row_bound``.

    Outer bracketing search on the bound's multiplier ``t``: each step solves
    the row at L1 weight ``l1 + t`` with ``_solve_row`` (warm started from the
    previous step), and certifies with the outer Lagrangian dual. Returns
    (gap, objective, multiplier, sweeps, status, row_multiplier).
    """
    n_columns = coef.shape[0]
    solution = coef.copy()
    low_point = np.zeros(n_columns)
    high_point = np.zeros(n_columns)
    sweeps = 0
    status = MAX_ITER_REACHED
    # The warm start (zero by default) made feasible is the first candidate.
    point[:] = coef
    if n_bounded > 0 and np.isfinite(bound):
        enforce_l1_bound_inplace(point, 0, n_bounded, bound)
    best_primal, best_roundoff = _keep_best_row_bounded(
        gram, correlation, target_sq, point, row_bound, l1, l2, candidate,
        candidate_gram_coef, solution, np.inf, 0.0)
    best_dual, best_multiplier, best_row_multiplier = -np.inf, 0.0, 0.0
    # Start where the row is sparse (half the largest gradient), as a path
    # would: a tight row bound then needs few, cheap inner solves.
    _recompute_gram_coef(gram, coef, gram_coef)
    largest_gradient = 0.0
    for j in range(n_columns):
        largest_gradient = max(largest_gradient,
                               abs(correlation[j] - gram_coef[j]))
    t = max(0.5 * largest_gradient - l1, 1e-300)
    low, phi_low, high, phi_high = 0.0, np.inf, -1.0, 0.0
    side = 0
    for _ in range(_MAX_MULTIPLIER_STEPS):
        remaining = max_iter - sweeps
        if remaining <= 0:
            break
        # The inner gap is relative to the inner objective, which exceeds the
        # outer one by about t * row_bound: tighten it accordingly.
        inner_tol = 0.5 * tol
        if np.isfinite(best_primal) and best_primal > 0.0:
            inner_tol *= best_primal / (best_primal + t * row_bound)
        inner_gap, inner_primal, inner_multiplier, inner_sweeps, inner_status = (
            _solve_row(gram, correlation, target_sq, coef, n_bounded, bound,
                       l1 + t, l2, inner_tol, remaining, gram_coef, candidate,
                       candidate_gram_coef, active, history, gram_history))
        sweeps += max(inner_sweeps, 1)
        dual = inner_primal - inner_gap - t * row_bound
        if dual > best_dual:
            best_dual = dual
            best_multiplier = inner_multiplier
            best_row_multiplier = t
        best_primal, best_roundoff = _keep_best_row_bounded(
            gram, correlation, target_sq, coef, row_bound, l1, l2, point,
            point_gram_coef, solution, best_primal, best_roundoff)
        if best_primal - best_dual <= tol * best_primal + 2.0 * best_roundoff:
            status = CONVERGED
            break
        if inner_status == MAX_ITER_REACHED:
            break  # the inner solve used the whole budget
        # (A stalled inner search still leaves a near-optimal inner row whose
        # norm steers the outer search.)
        phi = l1_norm(coef, 0, n_columns)
        if phi > row_bound:
            low, phi_low = t, phi
            low_point[:] = coef
            if high < 0.0:
                t *= 4.0
                continue
            if side == -1:
                phi_high = row_bound + 0.5 * (phi_high - row_bound)
            side = -1
        else:
            if t == 0.0:
                # Bound inactive and the inner row certified, yet the outer
                # gap is not met: nothing left to search.
                status = SEARCH_STALLED
                break
            high, phi_high = t, phi
            high_point[:] = coef
            if side == 1:
                phi_low = row_bound + 0.5 * (phi_low - row_bound)
            side = 1
            if not np.isfinite(phi_low):
                # No point outside the ball yet: try the bound inactive when
                # the inner problem is well posed there, else go down the
                # path (warm starts keep each step cheap; a direct jump to a
                # tiny t was measured to stall CD on ill-conditioned rows).
                t = 0.0 if (l1 > 0.0 or l2 > 0.0) else 0.125 * t
                continue
        if high - low <= 1e-15 * high:
            status = SEARCH_STALLED
            break
        # Both bracket ends solve nearly the same inner problem; the convex
        # combination on the sphere ||w||_1 = row_bound is then nearly optimal
        # for the outer one (it matters when inexact inner solves make the
        # norm jump across the bound).
        theta = (phi_low - row_bound) / (phi_low - phi_high)
        for j in range(n_columns):
            candidate[j] = theta * high_point[j] + (1.0 - theta) * low_point[j]
        best_primal, best_roundoff = _keep_best_row_bounded(
            gram, correlation, target_sq, candidate, row_bound, l1, l2, point,
            point_gram_coef, solution, best_primal, best_roundoff)
        if best_primal - best_dual <= tol * best_primal + 2.0 * best_roundoff:
            status = CONVERGED
            break
        t = low + (phi_low - row_bound) * (high - low) / (phi_low - phi_high)
        if not (low < t < high):
            t = 0.5 * (low + high)
    coef[:] = solution
    return (best_primal - best_dual, best_primal, best_multiplier, sweeps,
            status, best_row_multiplier)


@njit(cache=True)
def _solve_one(gram, correlation, target_sq, row, n_bounded, bound, row_bound, l1,
               l2, tol, max_iter):
    """Solve one row in place; returns (gap, objective, multiplier, epochs,
    status, row multiplier)."""
    n_columns = correlation.shape[0]
    gram_coef = np.empty(n_columns)
    candidate = np.empty(n_columns)
    candidate_gram_coef = np.empty(n_columns)
    active = np.empty(n_columns, dtype=np.int64)
    history = np.empty((_ANDERSON_DEPTH + 1, n_columns))
    gram_history = np.empty((_ANDERSON_DEPTH + 1, n_columns))
    if np.isfinite(row_bound):
        return _solve_row_bounded(
            gram, correlation, target_sq, row, n_bounded, bound, row_bound, l1,
            l2, tol, max_iter, gram_coef, candidate, candidate_gram_coef, active,
            history, gram_history, np.empty(n_columns), np.empty(n_columns))
    result = _solve_row(gram, correlation, target_sq, row, n_bounded, bound, l1,
                        l2, tol, max_iter, gram_coef, candidate,
                        candidate_gram_coef, active, history, gram_history)
    return (result[0], result[1], result[2], result[3], result[4], 0.0)


@njit(cache=True)
def _store(record, result, earlier_epochs):
    """Write one row's result tuple into its record row (gap, objective,
    multiplier, epochs, status, row multiplier)."""
    record[0] = result[0]
    record[1] = result[1]
    record[2] = result[2]
    record[3] = earlier_epochs + result[3]
    record[4] = result[4]
    record[5] = result[5]


@njit(parallel=True, cache=True)
def _solve_rows_kernel(gram, correlations, target_sq, coef, n_bounded, bound,
                       row_bound, l1, l2, tol, max_iter, records):
    for i in prange(correlations.shape[0]):
        _store(records[i], _solve_one(gram, correlations[i], target_sq[i], coef[i],
                                      n_bounded, bound, row_bound, l1, l2, tol,
                                      max_iter), 0.0)


@njit(parallel=True, cache=True)
def _solve_supports_kernel(gram, correlations, target_sq, coef, n_bounded, bound,
                           row_bound, l1, l2, tol, max_iter, records):
    """Each row again on its own support (columns where ``coef`` is nonzero):
    the sub-Gram is the principal submatrix of those columns, and the kept
    bounded columns stay first, so the row is the same problem restricted to
    the support."""
    for i in prange(correlations.shape[0]):
        support = np.flatnonzero(coef[i])
        if support.size == 0:  # the zero row is the only point: exact
            _store(records[i], (0.0, 0.5 * target_sq[i], 0.0, 0, CONVERGED, 0.0),
                   records[i, 3])
            continue
        sub_gram = np.ascontiguousarray(gram[support][:, support])
        row = coef[i][support]
        kept_bounded = 0
        for j in support:
            if j < n_bounded:
                kept_bounded += 1
        result = _solve_one(sub_gram, correlations[i][support], target_sq[i], row,
                            kept_bounded, bound if kept_bounded else np.inf,
                            row_bound, l1, l2, tol, max_iter)
        coef[i, :] = 0.0
        for k in range(support.size):
            coef[i, support[k]] = row[k]
        _store(records[i], result, records[i, 3])


def _one_bound(n_bounded, bound, row_bound):
    """At most one of the two L1 bounds is finite (what the homotopy follows)."""
    return not (n_bounded > 0 and np.isfinite(bound) and np.isfinite(row_bound))


def _relax_rows(problem, coef, records, breakpoints, options, solver):
    """Solve every row again restricted to its support (the relaxed Lasso),
    in place: ``options`` are ``(n_bounded, bound, row_bound, l1, l2, tol,
    max_iter)`` with the relaxed penalties. The homotopy when it solved the
    rows (its breakpoints are added to ``breakpoints``), coordinate descent
    from the unrelaxed point for rows it cannot certify and otherwise."""
    n_bounded, bound, row_bound, l1, l2, tol, max_iter = options
    rows = np.arange(coef.shape[0])
    if solver == "homotopy" and not np.isfinite(row_bound):
        from .homotopy import homotopy_supports_kernel  # imports this module

        relaxed, relaxed_records = coef.copy(), records.copy()
        homotopy_supports_kernel(*problem, relaxed, n_bounded, bound, l1, l2, tol,
                                 10 * coef.shape[1] + 100, relaxed_records)
        done = relaxed_records[:, 4] == 0
        breakpoints[done] += relaxed_records[done, 3].astype(np.int64)
        relaxed_records[:, 3] = records[:, 3]  # no coordinate-descent epochs
        coef[done], records[done] = relaxed[done], relaxed_records[done]
        rows = np.flatnonzero(~done)
    if rows.size:
        gram, correlations, target_sq = problem
        rest, rest_records = np.ascontiguousarray(coef[rows]), records[rows]
        _solve_supports_kernel(gram, np.ascontiguousarray(correlations[rows]),
                               np.ascontiguousarray(target_sq[rows]), rest, *options,
                               rest_records)
        coef[rows], records[rows] = rest, rest_records


def solve_rows(gram, correlations, target_sq, *, n_bounded=0, bound=np.inf,
               row_bound=np.inf, l1=0.0, l2=0.0, tol=1e-6, max_iter=1000,
               coef_init=None, relax=1.0, solver="cd"):
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
    solver : {"auto", "cd", "homotopy"}, default="cd"
        ``"cd"``: coordinate descent with the multiplier search (any bounds,
        warm starts). ``"homotopy"``: the exact path of
        :mod:`sksim.solvers.homotopy` from ``w = 0`` (``coef_init`` is not
        used), certified the same way; a row it cannot certify is finished by
        coordinate descent from its point. It follows one bound: the
        block's, or a finite ``row_bound`` (over the whole row) when the
        block has none; rows with both are solved by coordinate descent.
        ``"auto"``: the choice of :func:`auto_solver`.

    Returns
    -------
    RowSolution
    """
    announce_compilation()
    gram = np.ascontiguousarray(gram, dtype=np.float64)
    correlations = np.ascontiguousarray(correlations, dtype=np.float64)
    target_sq = np.ascontiguousarray(target_sq, dtype=np.float64)
    n_rows, n_columns = correlations.shape
    if coef_init is None:
        coef = np.zeros((n_rows, n_columns))
    else:
        coef = np.array(coef_init, dtype=np.float64, order="C", copy=True)
    if solver == "auto":
        solver = auto_solver(gram, n_bounded, bound, row_bound, l2)
    records = np.zeros((n_rows, 6))
    breakpoints = np.zeros(n_rows, dtype=np.int64)
    method = np.zeros(n_rows, dtype=np.int64)
    arguments = (int(n_bounded), float(bound), float(row_bound), float(l1), float(l2),
                 float(tol), int(max_iter), records)
    if n_rows and solver == "homotopy" and _one_bound(n_bounded, bound, row_bound):
        from .homotopy import homotopy_rows_kernel  # imports this module

        # the homotopy follows one L1 bound: the block's, or the row bound's
        # over every column
        whole_row = np.isfinite(row_bound)
        homotopy_rows_kernel(gram, correlations, target_sq, coef,
                             n_columns if whole_row else int(n_bounded),
                             float(row_bound) if whole_row else float(bound),
                             float(l1), float(l2), float(tol), 10 * n_columns + 100,
                             records)
        if whole_row:  # its multiplier is the row bound's
            records[:, 5], records[:, 2] = records[:, 2], 0.0
        breakpoints, method = _finish_homotopy_rows(
            (gram, correlations, target_sq), coef, records, arguments[:-1])
    elif n_rows:
        _solve_rows_kernel(gram, correlations, target_sq, coef, *arguments)
    if n_rows and relax < 1.0:
        _relax_rows((gram, correlations, target_sq), coef, records, breakpoints,
                    arguments[:3] + (l1 * relax, l2 * relax) + arguments[5:7], solver)
    return _row_solution(coef, records, breakpoints, method)


def _finish_homotopy_rows(problem, coef, records, options):
    """Rows the homotopy solved (``records[:, 3]`` holding their breakpoints):
    the rows it could not certify are finished by coordinate descent from
    its point, in place. ``options`` are ``(n_bounded, bound, row_bound, l1,
    l2, tol, max_iter)``. Returns (breakpoints, method) per row."""
    gram, correlations, target_sq = problem
    breakpoints = records[:, 3].astype(np.int64)
    records[:, 3] = 0  # no coordinate-descent epochs
    method = np.ones(coef.shape[0], dtype=np.int64)
    unresolved = np.flatnonzero(records[:, 4] != 0)
    if unresolved.size:
        rest = np.ascontiguousarray(coef[unresolved])
        rest_records = np.zeros((unresolved.size, 6))
        _solve_rows_kernel(gram, correlations[unresolved], target_sq[unresolved], rest,
                           *options, rest_records)
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
    # one copy of the Gram, scaled in place; the eigensolver ("ev": O(n)
    # workspace) overwrites it, so the check costs one Gram of memory
    scaled = gram[np.ix_(live, live)]
    scaled[np.diag_indices_from(scaled)] += l2
    scaled *= scale[:, None]
    scaled *= scale[None, :]
    # one BLAS thread: n is small, and a multi-threaded eigensolver competing
    # with busy cores was measured 100x slower (5.8 s instead of 0.05 s)
    with threadpool_limits(limits=1, user_api="blas"):
        eigenvalues = scipy.linalg.eigh(scaled, eigvals_only=True, overwrite_a=True,
                                        check_finite=False, driver="ev")
    well_conditioned = eigenvalues[0] * _AUTO_CD_MAX_CONDITION >= eigenvalues[-1]
    return "cd" if well_conditioned else "homotopy"


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
        homotopy_path_kernel(gram, correlations, target_sq, alphas, int(n_bounded),
                             float(bound) if n_bounded else np.inf, 0.0, float(tol),
                             (10 * n_columns + 100) * alphas.size, coefs, records)
    problem = (gram, correlations, target_sq)
    solutions = []
    for alpha, coef, record in zip(alphas, coefs, records):
        options = (int(n_bounded), float(bound), np.inf, float(alpha), 0.0, float(tol),
                   int(max_iter))
        breakpoints, method = _finish_homotopy_rows(problem, coef, record, options)
        if n_rows and relax < 1.0:
            _relax_rows(problem, coef, record, breakpoints,
                        options[:3] + (alpha * relax, 0.0) + options[5:], "homotopy")
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
