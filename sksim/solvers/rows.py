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
"""

from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from .projection import enforce_l1_bound_inplace, l1_norm, soft_threshold

# Status codes of a row.
CONVERGED = 0
MAX_ITER_REACHED = 1
SEARCH_STALLED = 2

_ACTIVE_SWEEPS = 10
_MAX_MULTIPLIER_STEPS = 200
_ROUNDOFF = 1e-13


class RowSolution(NamedTuple):
    """Result record of :func:`solve_rows`.

    Attributes
    ----------
    coef : ndarray of shape (n_rows, n_columns)
        Row solutions ``w_i``.
    duality_gap : ndarray of shape (n_rows,)
        Duality gap of the constrained row problem at ``coef`` (an upper bound
        on ``P(coef_i) - P*``).
    objective : ndarray of shape (n_rows,)
        Primal objective ``P(coef_i)``.
    multiplier : ndarray of shape (n_rows,)
        Lagrange multiplier of the L1 bound that gave the best dual bound
        (0 when the bound is inactive or absent).
    n_iter : ndarray of shape (n_rows,)
        Coordinate-descent epochs used per row (full and active-set sweeps).
    status : ndarray of shape (n_rows,)
        0 converged, 1 ``max_iter`` reached, 2 multiplier search stalled.
    """

    coef: np.ndarray
    duality_gap: np.ndarray
    objective: np.ndarray
    multiplier: np.ndarray
    n_iter: np.ndarray
    status: np.ndarray


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
def _weighted_enet_cd(gram, correlation, target_sq, coef, gram_coef, n_bounded,
                      weight_bounded, weight_free, l2, rel_tol, offset,
                      max_sweeps, active):
    """Cyclic CD on one weighted elastic net until its gap meets the target.

    The target is ``rel_tol * (primal - offset)`` plus roundoff; ``offset`` is
    ``mu * bound`` so that the target is relative to the Lagrangian value, an
    estimate of the constrained optimum. Returns (sweeps, primal, dual).
    """
    n_columns = coef.shape[0]
    sweeps = 0
    primal, dual, roundoff = _lagrangian_gap(
        correlation, coef, gram_coef, target_sq, n_bounded, weight_bounded,
        weight_free, l2)
    while sweeps < max_sweeps:
        if primal - dual <= rel_tol * max(primal - offset, 0.0) + roundoff:
            break
        for j in range(n_columns):
            weight = weight_bounded if j < n_bounded else weight_free
            _update_coordinate(gram, correlation, coef, gram_coef, j, weight, l2)
        sweeps += 1
        primal, dual, roundoff = _lagrangian_gap(
            correlation, coef, gram_coef, target_sq, n_bounded, weight_bounded,
            weight_free, l2)
        # Sweeps over the non-zero coordinates only: after a full sweep the
        # support is usually right, and these cost O(nnz * d) instead of O(d^2).
        n_active = 0
        for j in range(n_columns):
            if coef[j] != 0.0:
                active[n_active] = j
                n_active += 1
        if n_active == n_columns:
            continue
        for _ in range(_ACTIVE_SWEEPS):
            if sweeps >= max_sweeps:
                break
            if primal - dual <= rel_tol * max(primal - offset, 0.0) + roundoff:
                break
            for t in range(n_active):
                j = active[t]
                weight = weight_bounded if j < n_bounded else weight_free
                _update_coordinate(gram, correlation, coef, gram_coef, j, weight, l2)
            sweeps += 1
            primal, dual, roundoff = _lagrangian_gap(
                correlation, coef, gram_coef, target_sq, n_bounded,
                weight_bounded, weight_free, l2)
    return sweeps, primal, dual


@njit(cache=True)
def _recompute_gram_coef(gram, coef, gram_coef):
    gram_coef[:] = 0.0
    for j in range(coef.shape[0]):
        if coef[j] != 0.0:
            gram_coef += coef[j] * gram[j]


@njit(cache=True)
def _solve_row(gram, correlation, target_sq, coef, n_bounded, bound, l1, l2,
               tol, max_iter, gram_coef, candidate, candidate_gram_coef, active):
    """Solve one row; ``coef`` holds the warm start and receives the solution.

    Returns (gap, objective, multiplier, sweeps, status).
    """
    _recompute_gram_coef(gram, coef, gram_coef)
    sweeps, lagrangian_primal, lagrangian_dual = _weighted_enet_cd(
        gram, correlation, target_sq, coef, gram_coef, n_bounded, l1, l1, l2,
        tol, 0.0, max_iter, active)

    best_dual = lagrangian_dual
    best_multiplier = 0.0
    # Feasible point from the current iterate; its primal objective.
    candidate[:] = coef
    enforce_l1_bound_inplace(candidate, 0, n_bounded, bound)
    _recompute_gram_coef(gram, candidate, candidate_gram_coef)
    residual_sq, r_dot_z, roundoff = _quadratic_terms(
        correlation, candidate, candidate_gram_coef, target_sq)
    best_primal = _primal(candidate, residual_sq, n_bounded, l1, l1, l2)
    best_dual = max(best_dual, _dual(correlation, candidate_gram_coef, residual_sq,
                                     r_dot_z, n_bounded, l1, l1, l2))
    if best_primal - best_dual <= tol * best_primal + roundoff:
        coef[:] = candidate
        return best_primal - best_dual, best_primal, 0.0, sweeps, CONVERGED
    if sweeps >= max_iter:
        coef[:] = candidate
        return best_primal - best_dual, best_primal, 0.0, sweeps, MAX_ITER_REACHED
    solution = candidate.copy()
    norm_bounded = l1_norm(coef, 0, n_bounded)
    if norm_bounded <= bound:
        # The bound is inactive, but the gap is not met yet: this happens only
        # when the feasibility shrink ate the accuracy; fall through to the
        # multiplier search, which handles it.
        pass

    # Multiplier search: bracket [low, high] with phi(low) > bound >= phi(high).
    low, phi_low = 0.0, norm_bounded
    high, phi_high = -1.0, 0.0
    max_gradient = 0.0
    for j in range(n_bounded):
        max_gradient = max(max_gradient, abs(correlation[j] - gram_coef[j]))
    multiplier = l1 if l1 > 0.0 else 1e-3 * max_gradient + 1e-300
    side = 0
    status = SEARCH_STALLED
    for _ in range(_MAX_MULTIPLIER_STEPS):
        steps, lagrangian_primal, lagrangian_dual = _weighted_enet_cd(
            gram, correlation, target_sq, coef, gram_coef, n_bounded,
            l1 + multiplier, l1, l2, 0.5 * tol, multiplier * bound,
            max_iter - sweeps, active)
        sweeps += steps
        phi = l1_norm(coef, 0, n_bounded)
        dual_bound = lagrangian_dual - multiplier * bound
        if dual_bound > best_dual:
            best_dual = dual_bound
            best_multiplier = multiplier
        candidate[:] = coef
        enforce_l1_bound_inplace(candidate, 0, n_bounded, bound)
        _recompute_gram_coef(gram, candidate, candidate_gram_coef)
        residual_sq, r_dot_z, roundoff = _quadratic_terms(
            correlation, candidate, candidate_gram_coef, target_sq)
        primal = _primal(candidate, residual_sq, n_bounded, l1, l1, l2)
        if primal < best_primal:
            best_primal = primal
            solution[:] = candidate
        if best_primal - best_dual <= tol * best_primal + roundoff:
            status = CONVERGED
            break
        if sweeps >= max_iter:
            status = MAX_ITER_REACHED
            break
        if phi > bound:
            low, phi_low = multiplier, phi
            if high < 0.0:
                multiplier *= 4.0
                continue
            if side == -1:
                phi_high = bound + 0.5 * (phi_high - bound)  # Illinois step
            side = -1
        else:
            high, phi_high = multiplier, phi
            if side == 1:
                phi_low = bound + 0.5 * (phi_low - bound)
            side = 1
        if high - low <= 1e-15 * high:
            break
        multiplier = low + (phi_low - bound) * (high - low) / (phi_low - phi_high)
        if not (low < multiplier < high):
            multiplier = 0.5 * (low + high)
    coef[:] = solution
    return best_primal - best_dual, best_primal, best_multiplier, sweeps, status


@njit(parallel=True, cache=True)
def _solve_rows_kernel(gram, correlations, target_sq, coef, n_bounded, bound,
                       l1, l2, tol, max_iter, gap, objective, multiplier,
                       n_iter, status):
    n_rows, n_columns = correlations.shape
    for i in prange(n_rows):
        gram_coef = np.empty(n_columns)
        candidate = np.empty(n_columns)
        candidate_gram_coef = np.empty(n_columns)
        active = np.empty(n_columns, dtype=np.int64)
        row = coef[i]
        result = _solve_row(gram, correlations[i], target_sq[i], row, n_bounded,
                            bound, l1, l2, tol, max_iter, gram_coef, candidate,
                            candidate_gram_coef, active)
        gap[i] = result[0]
        objective[i] = result[1]
        multiplier[i] = result[2]
        n_iter[i] = result[3]
        status[i] = result[4]


def solve_rows(gram, correlations, target_sq, *, n_bounded=0, bound=np.inf,
               l1=0.0, l2=0.0, tol=1e-6, max_iter=1000, coef_init=None):
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
    l1, l2 : float
        L1 and squared-L2 penalty weights (``l2`` multiplies ``||w||^2 / 2``).
    tol : float
        Relative duality-gap tolerance: a row converges when
        ``gap <= tol * objective`` (plus a roundoff floor).
    max_iter : int
        Maximum coordinate-descent epochs per row.
    coef_init : ndarray of shape (n_rows, n_columns), default=None
        Warm start (copied).

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
    gap = np.empty(n_rows)
    objective = np.empty(n_rows)
    multiplier = np.empty(n_rows)
    n_iter = np.empty(n_rows, dtype=np.int64)
    status = np.empty(n_rows, dtype=np.int64)
    if n_rows:
        _solve_rows_kernel(gram, correlations, target_sq, coef, int(n_bounded),
                           float(bound), float(l1), float(l2), float(tol),
                           int(max_iter), gap, objective, multiplier, n_iter,
                           status)
    return RowSolution(coef, gap, objective, multiplier, n_iter, status)


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
