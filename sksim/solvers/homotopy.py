"""Exact homotopy (LARS-Lasso) for one row problem on a shared Gram matrix.

A row ``min_w 1/2 w'Gw - c'w + sum_j lam_j |w_j| + l2/2 ||w||^2`` with
penalties that are affine in a path parameter, ``lam_j(t) = a_j + t b_j``, has
a solution that is piecewise linear in ``t``: on an interval where the active
set ``S`` and the signs ``s`` are fixed,

    (G_SS + l2 I) w_S = c_S - lam_S(t) * s_S,

so ``w_S`` moves along ``-(G_SS + l2 I)^-1 (b_S * s_S)``. The path changes
only at breakpoints: an inactive column's correlation ``r_j = c_j - G_j w``
reaches ``+-lam_j`` (it joins with that sign) or an active coefficient
reaches zero (it leaves: the Lasso modification of LARS). Between
breakpoints nothing is approximated, so following them is exact up to
rounding. Two paths are used:

* the alpha path: ``a = 0``, ``b = weights``, ``t`` from ``max |c_j| / b_j``
  down to ``alpha`` (``w = 0`` at the start);
* the multiplier path of the L1 bound on the first ``n_bounded``
  coefficients: ``a = alpha``, ``b = 1`` on the bounded block (0 elsewhere),
  ``t = mu`` from 0 up until ``||w_bounded||_1`` equals the bound, which is
  linear in ``mu`` between breakpoints, so the crossing is solved exactly.

``(G_SS + l2 I)`` is kept as a Cholesky factor updated by one row when a
column joins and re-triangularised by Givens rotations when one leaves. A
column whose pivot vanishes (``l2 = 0`` and the column a combination of the
active ones: a dead unit, a duplicate) is held out; its correlation then
equals that of the columns it combines, so it satisfies the optimality
conditions with ``w_j = 0``. Held-out columns are reconsidered whenever a
column leaves.
"""

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .projection import enforce_l1_bound_inplace
from .rows import _dual, _primal, _quadratic_terms, _recompute_gram_coef

# Status codes of a path.
REACHED = 0
MAX_STEPS_REACHED = 1

_PIVOT_RTOL = 1e-10
# breakpoints between exact re-solves of the active coefficients (in between
# they move linearly, which only accumulates rounding)
_REFRESH_EVERY = 16


class HomotopySolution(NamedTuple):
    """Result record of :func:`lasso_homotopy`.

    Attributes
    ----------
    coef : ndarray of shape (n_columns,)
    multiplier : float
        ``mu`` of the L1 bound (0 when it is inactive or absent).
    n_breakpoints : int
        Breakpoints crossed on both paths (joins and leaves).
    status : int
        0 reached the end of the path, 1 ``max_steps`` reached first.
    """

    coef: np.ndarray
    multiplier: float
    n_breakpoints: int
    status: int


@njit(cache=True)
def _forward_substitution(lower, k, rhs, out):
    for i in range(k):
        total = rhs[i]
        for j in range(i):
            total -= lower[i, j] * out[j]
        out[i] = total / lower[i, i]


@njit(cache=True)
def _back_substitution(lower, k, rhs, out):
    """Solve ``lower[:k, :k]^T out = rhs``."""
    for i in range(k - 1, -1, -1):
        total = rhs[i]
        for j in range(i + 1, k):
            total -= lower[j, i] * out[j]
        out[i] = total / lower[i, i]


@njit(cache=True)
def _try_add(gram, l2, lower, active, k, j, scratch_in, scratch_out):
    """Append column ``j`` to the factor; False if its pivot vanishes."""
    for i in range(k):
        scratch_in[i] = gram[active[i], j]
    _forward_substitution(lower, k, scratch_in, scratch_out)
    diagonal = gram[j, j] + l2
    pivot = diagonal
    for i in range(k):
        pivot -= scratch_out[i] * scratch_out[i]
    if pivot <= _PIVOT_RTOL * max(diagonal, 1e-300):
        return False
    for i in range(k):
        lower[k, i] = scratch_out[i]
    lower[k, k] = np.sqrt(pivot)
    return True


@njit(cache=True)
def _remove(lower, k, position):
    """Delete row/column ``position`` from the factor of size ``k``."""
    for i in range(position, k - 1):
        for j in range(k):
            lower[i, j] = lower[i + 1, j]
    # rows position..k-2 now reach one column past the diagonal: rotate it away
    for i in range(position, k - 1):
        a = lower[i, i]
        b = lower[i, i + 1]
        radius = np.hypot(a, b)
        if radius == 0.0:
            continue
        cos, sin = a / radius, b / radius
        for row in range(i, k - 1):
            x = lower[row, i]
            y = lower[row, i + 1]
            lower[row, i] = cos * x + sin * y
            lower[row, i + 1] = -sin * x + cos * y
        if lower[i, i] < 0.0:  # keep a positive diagonal
            for row in range(i, k - 1):
                lower[row, i] = -lower[row, i]
    for row in range(k):
        lower[row, k - 1] = 0.0
    for j in range(k):
        lower[k - 1, j] = 0.0


@njit(cache=True)
def _solve_factor(lower, k, rhs, out):
    """``out = (L L^T)^-1 rhs`` for the factor of size ``k``."""
    middle = np.empty(k)
    _forward_substitution(lower, k, rhs, middle)
    _back_substitution(lower, k, middle, out)


@njit(cache=True)
def _exact_point(gram, correlation, lower, active, signs, k, offsets, slopes, t, coef,
                 gram_coef, scratch_in, scratch_out):
    """``w_S`` at ``t`` solved from the factor (into ``coef``, zero elsewhere)
    and ``gram_coef = G w``: the exact point, which the linear updates
    between breakpoints only approximate to rounding."""
    for i in range(k):
        j = active[i]
        scratch_in[i] = correlation[j] - (offsets[j] + t * slopes[j]) * signs[i]
    _solve_on_support(gram, lower, active, k, scratch_in, coef, gram_coef, scratch_out)


@njit(cache=True)
def _direction(gram, lower, active, signs, k, slopes, direction, gram_direction,
               scratch_in, scratch_out):
    """``dw_S`` per unit of ``t`` (into ``direction``) and ``G dw``."""
    for i in range(k):
        scratch_in[i] = -slopes[active[i]] * signs[i]
    _solve_on_support(gram, lower, active, k, scratch_in, direction, gram_direction,
                      scratch_out)


@njit(cache=True)
def _solve_on_support(gram, lower, active, k, rhs, out, gram_out, scratch):
    """``out`` = the factor's solution for ``rhs`` on the active columns, zero
    elsewhere, and ``gram_out = G out``."""
    _solve_factor(lower, k, rhs, scratch)
    out[:] = 0.0
    for i in range(k):
        out[active[i]] = scratch[i]
    _gram_times(gram, active, k, out, gram_out)


@njit(cache=True)
def _gram_times(gram, active, k, vector, out):
    """``out = G[:, S] vector[S]``, reading the rows ``G[S, :]`` of the
    symmetric Gram (contiguous, so the inner loop vectorises)."""
    out[:] = 0.0
    for i in range(k):
        row = gram[active[i]]
        value = vector[active[i]]
        for j in range(out.shape[0]):
            out[j] += value * row[j]


@njit(cache=True)
def _follow(gram, correlation, offsets, slopes, l2, t, t_end, sign_of_travel,
            coef, active, signs, k, lower, n_bounded, bound, max_steps):
    """Follow the path from ``t`` towards ``t_end`` (``sign_of_travel`` +-1),
    stopping early when ``n_bounded > 0`` and ``||w[:n_bounded]||_1`` falls to
    ``bound``. ``coef``, ``active``, ``signs``, ``lower`` hold the state at
    ``t`` on entry and at the end on exit. Returns (t, k, breakpoints, status)."""
    n = gram.shape[0]
    gram_coef = np.empty(n)
    direction = np.empty(n)
    gram_direction = np.empty(n)
    held_out = np.zeros(n, dtype=np.bool_)
    is_active = np.zeros(n, dtype=np.bool_)
    for i in range(k):
        is_active[active[i]] = True
    scratch_in = np.empty(n)
    scratch_out = np.empty(n)
    # the column that just left sits exactly at its penalty with its old sign:
    # it may not rejoin with that sign before the next breakpoint
    last_left, last_sign = -1, 0.0
    breakpoints = 0
    while breakpoints < max_steps:
        if breakpoints % _REFRESH_EVERY == 0:
            _exact_point(gram, correlation, lower, active, signs, k, offsets, slopes, t,
                         coef, gram_coef, scratch_in, scratch_out)
        _direction(gram, lower, active, signs, k, slopes, direction, gram_direction,
                   scratch_in, scratch_out)
        # distance to the end of the path (or to the bound)
        step = abs(t_end - t)
        event, joining, join_sign = -1, False, 0.0
        if n_bounded > 0:
            norm, slope = 0.0, 0.0
            for i in range(k):
                if active[i] < n_bounded:
                    norm += signs[i] * coef[active[i]]
                    slope += signs[i] * direction[active[i]] * sign_of_travel
            if norm <= bound:
                return t, k, breakpoints, REACHED
            if slope < 0.0 and (bound - norm) / slope < step:
                step = (bound - norm) / slope
        for i in range(k):  # an active coefficient moving back to zero
            # judged against its sign, not its value, which may sit a
            # rounding error on the wrong side of zero just after it joined
            moving = signs[i] * direction[active[i]] * sign_of_travel
            if moving < 0.0:
                candidate = max(signs[i] * coef[active[i]], 0.0) / -moving
                if candidate < step:
                    step, event, joining = candidate, i, False
        for j in range(n):  # an inactive correlation reaching its penalty
            if is_active[j] or held_out[j]:
                continue
            residual = correlation[j] - gram_coef[j]
            penalty = offsets[j] + t * slopes[j]
            change = -gram_direction[j] * sign_of_travel  # d residual / d step
            rate = slopes[j] * sign_of_travel  # d penalty / d step
            if change - rate > 0.0 and not (j == last_left and last_sign > 0.0):
                candidate = max(penalty - residual, 0.0) / (change - rate)
                if candidate < step:
                    step, event, joining, join_sign = candidate, j, True, 1.0
            if -change - rate > 0.0 and not (j == last_left and last_sign < 0.0):
                candidate = max(penalty + residual, 0.0) / (-change - rate)
                if candidate < step:
                    step, event, joining, join_sign = candidate, j, True, -1.0
        if not np.isfinite(step):  # nothing left to move the path: cannot happen
            break                    # for a consistent problem; reported as not reached
        t += sign_of_travel * step
        if event < 0:
            _exact_point(gram, correlation, lower, active, signs, k, offsets, slopes, t,
                         coef, gram_coef, scratch_in, scratch_out)
            return t, k, breakpoints, REACHED
        # the path is linear up to the breakpoint
        moved = sign_of_travel * step
        for i in range(k):
            coef[active[i]] += moved * direction[active[i]]
        for j in range(n):
            gram_coef[j] += moved * gram_direction[j]
        breakpoints += 1
        if joining:
            if _try_add(gram, l2, lower, active, k, event, scratch_in, scratch_out):
                active[k] = event
                signs[k] = join_sign
                is_active[event] = True
                k += 1
                last_left = -1
            else:
                held_out[event] = True
        else:
            leaving, last_sign = active[event], signs[event]
            gram_row = gram[leaving]
            for j in range(n):  # its coefficient is exactly zero from here
                gram_coef[j] -= coef[leaving] * gram_row[j]
            coef[leaving] = 0.0
            _remove(lower, k, event)
            for i in range(event, k - 1):
                active[i] = active[i + 1]
                signs[i] = signs[i + 1]
            k -= 1
            is_active[leaving] = False
            last_left = leaving
            held_out[:] = False
    _exact_point(gram, correlation, lower, active, signs, k, offsets, slopes, t, coef,
                 gram_coef, scratch_in, scratch_out)
    return t, k, breakpoints, MAX_STEPS_REACHED


@njit(cache=True)
def _alpha_path(gram, correlation, weights, alpha, l2, max_steps, coef, active, signs,
                lower):
    """Follow the alpha path from ``w = 0``; returns (t, k, breakpoints, status)."""
    n = gram.shape[0]
    t_start = 0.0
    for j in range(n):
        if weights[j] > 0.0 and abs(correlation[j]) / weights[j] > t_start:
            t_start = abs(correlation[j]) / weights[j]
    if t_start <= alpha:
        return alpha, 0, 0, REACHED
    return _follow(gram, correlation, np.zeros(n), weights, l2, t_start, alpha, -1.0,
                   coef, active, signs, 0, lower, 0, np.inf, max_steps)


@njit(cache=True)
def _constrained(gram, correlation, alpha, l2, n_bounded, bound, max_steps):
    """The alpha path, then the multiplier path of the bound when it is
    violated; returns (coef, multiplier, breakpoints, status)."""
    n = gram.shape[0]
    coef = np.zeros(n)
    active = np.empty(n, dtype=np.int64)
    signs = np.empty(n)
    lower = np.zeros((n, n))
    _, k, breakpoints, status = _alpha_path(gram, correlation, np.ones(n), alpha, l2,
                                            max_steps, coef, active, signs, lower)
    if status != REACHED or not _violates(coef, n_bounded, bound):
        return coef, 0.0, breakpoints, status
    mu, more, status = _bound_path(gram, correlation, alpha, l2, coef, active, signs, k,
                                   lower, n_bounded, bound, max_steps - breakpoints)
    return coef, mu, breakpoints + more, status


@njit(cache=True)
def _violates(coef, n_bounded, bound):
    norm = 0.0
    for j in range(n_bounded):
        norm += abs(coef[j])
    return norm > bound


@njit(cache=True)
def _bound_path(gram, correlation, alpha, l2, coef, active, signs, k, lower, n_bounded,
                bound, max_steps):
    """From the solution at ``alpha``, which violates the bound (the state in
    ``coef``, ``active``, ``signs``, ``lower``, updated in place), the
    multiplier path of the bound; returns (multiplier, breakpoints, status)."""
    n = gram.shape[0]
    slopes = np.zeros(n)
    slopes[:n_bounded] = 1.0
    mu, _, breakpoints, status = _follow(
        gram, correlation, np.full(n, alpha), slopes, l2, 0.0, np.inf, 1.0, coef, active,
        signs, k, lower, n_bounded, bound, max_steps)
    return mu, breakpoints, status


def lasso_homotopy(gram, correlation, alpha, *, l2=0.0, n_bounded=0, bound=np.inf,
                   max_steps=None):
    """Exact solution of one row at ``alpha`` by following the homotopy.

    Solves ``min_w 1/2 w'Gw - c'w + alpha ||w||_1 + l2/2 ||w||^2`` subject to
    ``||w[:n_bounded]||_1 <= bound``: the alpha path from ``w = 0`` at
    ``alpha_max = max_j |c_j|`` down to ``alpha``, then, if the bound is
    violated there, the multiplier path from ``mu = 0`` up to where the
    bounded block's L1 norm equals ``bound``.

    Parameters
    ----------
    gram : ndarray of shape (n_columns, n_columns)
    correlation : ndarray of shape (n_columns,)
    alpha : float
        Target penalty (> 0, or 0 with ``l2 > 0``).
    l2 : float, default=0.0
    n_bounded : int, default=0
    bound : float, default=np.inf
    max_steps : int, default=None
        Breakpoints allowed over both paths (default ``10 * n_columns + 100``).

    Returns
    -------
    HomotopySolution
    """
    gram = np.ascontiguousarray(gram, dtype=np.float64)
    correlation = np.ascontiguousarray(correlation, dtype=np.float64)
    n = correlation.shape[0]
    max_steps = 10 * n + 100 if max_steps is None else int(max_steps)
    coef, mu, breakpoints, status = _constrained(
        gram, correlation, float(alpha), float(l2), int(n_bounded),
        float(bound) if n_bounded else np.inf, max_steps)
    return HomotopySolution(coef, float(mu), int(breakpoints), int(status))


@njit(cache=True)
def _certify(gram, correlation, target_sq, coef, multiplier, n_bounded, bound, l1, l2):
    """Make ``coef`` exactly feasible (in place) and return (gap, objective,
    roundoff): the objective of the constrained row and the Lagrangian dual
    bound at ``multiplier`` and the residual of ``coef``."""
    bounded = n_bounded > 0 and np.isfinite(bound)
    if bounded:
        enforce_l1_bound_inplace(coef, 0, n_bounded, bound)
    gram_coef = np.empty(coef.shape[0])
    _recompute_gram_coef(gram, coef, gram_coef)
    residual_sq, r_dot_z, roundoff = _quadratic_terms(correlation, coef, gram_coef,
                                                      target_sq)
    primal = _primal(coef, residual_sq, n_bounded, l1, l1, l2)
    dual = _dual(correlation, gram_coef, residual_sq, r_dot_z, n_bounded,
                 l1 + multiplier, l1, l2) - roundoff
    if bounded:
        dual -= multiplier * bound
    return primal - dual, primal, roundoff


@njit(parallel=True, cache=True)
def homotopy_rows_kernel(gram, correlations, target_sq, coef, n_bounded, bound, l1, l2,
                         tol, max_steps, records):
    """Every row by :func:`_constrained`, certified; ``records`` rows get
    (gap, objective, multiplier, breakpoints, status, 0) with status 0 when
    the gap meets ``tol`` (as the coordinate-descent solver judges it)."""
    for i in prange(correlations.shape[0]):
        solution, multiplier, breakpoints, status = _constrained(
            gram, correlations[i], l1, l2, n_bounded, bound, max_steps)
        _record(gram, correlations[i], target_sq[i], solution, multiplier, breakpoints,
                status, n_bounded, bound, l1, l2, tol, records[i])
        coef[i, :] = solution


@njit(cache=True)
def _record(gram, correlation, target_sq, solution, multiplier, breakpoints, status,
            n_bounded, bound, l1, l2, tol, record):
    """Certify ``solution`` (made exactly feasible in place) and write
    (gap, objective, multiplier, breakpoints, status, 0) into ``record``;
    status 0 when the path ended and the gap meets ``tol`` as the
    coordinate-descent solver judges it."""
    gap, primal, roundoff = _certify(gram, correlation, target_sq, solution, multiplier,
                                     n_bounded, bound, l1, l2)
    certified = gap <= tol * primal + 2.0 * roundoff
    record[0] = gap
    record[1] = primal
    record[2] = multiplier
    record[3] = breakpoints
    record[4] = 0 if status == REACHED and certified else 1
    record[5] = 0.0


@njit(parallel=True, cache=True)
def homotopy_path_kernel(gram, correlations, target_sq, alphas, n_bounded, bound, l2,
                         tol, max_steps, coefs, records):
    """Every row's solutions at all ``alphas`` (decreasing) from one alpha
    path per row: at each alpha the unconstrained state is kept for the next
    one, and a copy follows the multiplier path when the bound is violated.
    ``coefs[a, i]`` and ``records[a, i]`` (as :func:`homotopy_rows_kernel`)
    receive the certified results."""
    n = gram.shape[0]
    for i in prange(correlations.shape[0]):
        correlation = correlations[i]
        coef = np.zeros(n)
        active = np.empty(n, dtype=np.int64)
        signs = np.empty(n)
        lower = np.zeros((n, n))
        t = 0.0
        for j in range(n):
            t = max(t, abs(correlation[j]))
        k, breakpoints, status = 0, 0, REACHED
        for a in range(alphas.shape[0]):
            alpha = alphas[a]
            if t > alpha and status == REACHED:
                t, k, more, status = _follow(
                    gram, correlation, np.zeros(n), np.ones(n), l2, t, alpha, -1.0, coef,
                    active, signs, k, lower, 0, np.inf, max_steps - breakpoints)
                breakpoints += more
            solution = coef.copy()
            multiplier, extra, final = 0.0, 0, status
            if status == REACHED and _violates(solution, n_bounded, bound):
                # on a copy: the alpha path goes on from coef
                multiplier, extra, final = _bound_path(
                    gram, correlation, alpha, l2, solution, active.copy(), signs.copy(),
                    k, lower.copy(), n_bounded, bound, max_steps)
            _record(gram, correlation, target_sq[i], solution, multiplier,
                    breakpoints + extra, final, n_bounded, bound, alpha, l2, tol,
                    records[a, i])
            coefs[a, i, :] = solution
