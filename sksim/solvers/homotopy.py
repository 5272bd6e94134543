"""Exact homotopy (LARS-Lasso) for one row problem on a shared Gram matrix.

A row ``min_w 1/2 w'Gw - c'w + alpha ||w||_1 + l2/2 ||w||^2`` subject to
``||w[:n_bounded]||_1 <= bound`` has a solution that is piecewise linear in
``alpha``. With the bound's multiplier ``mu``, the penalty is ``alpha + mu``
on the bounded block and ``alpha`` elsewhere, and on an interval where the
active set ``S`` and the signs ``s`` are fixed,

    (G_SS + l2 I) w_S = c_S - (alpha + mu [j bounded]) s_S.

While the bound is slack, ``mu = 0`` and ``w_S`` moves along
``-(G_SS + l2 I)^-1 s_S`` per unit of alpha. Once ``||w_bounded||_1``
reaches the bound, ``mu`` is held at the value that keeps the norm there:
the norm is affine in ``(alpha, mu)`` on the interval, so ``mu`` is affine in
``alpha`` and ``w_S`` moves along a combination of two solves. The path
changes only at breakpoints: an inactive column's correlation
``r_j = c_j - G_j w`` reaches ``+-(its penalty)`` (it joins with that sign),
an active coefficient reaches zero (it leaves: the Lasso modification of
LARS), the norm reaches the bound (it is held from there) or the held ``mu``
falls to zero (the bound releases). Between breakpoints nothing is
approximated, so following them from ``w = 0`` at ``alpha_max = max |c_j|``
is exact up to rounding, and a grid of alphas is one pass down the same
path. The bounded block's support never grows past what the constrained
solution uses (following the unconstrained path first and then raising
``mu`` would build and tear down the much larger unconstrained support).

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
from numba import njit

from ._threads import kernel_njit
from .projection import copy_into, inner_njit
from .rows import (
    Certificate,
    RowProblem,
    RowResult,
    _certified,
    _dual,
    _feasible_objective,
    _fill_support,
    _lagrangian_weights,
    _restricted,
    _shifted,
    _store,
    _zero_row_result,
    row_penalty,
)

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


@njit(cache=True, fastmath=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _dot(row, vector, count):
    """``row[:count] @ vector[:count]``; fastmath lets the reduction use SIMD
    (the order of the sum changes the last bits only; every returned point
    is certified afresh)."""
    total = 0.0
    for j in range(count):
        total += row[j] * vector[j]
    return total


@inner_njit
def _forward_substitution(lower, k, rhs, out):
    for i in range(k):
        out[i] = (rhs[i] - _dot(lower[i], out, i)) / lower[i, i]


@inner_njit
def _back_substitution(lower, k, rhs, out):
    """Solve ``lower[:k, :k]^T out = rhs``, eliminating by rows of ``lower``
    (contiguous) rather than by its columns."""
    for i in range(k):
        out[i] = rhs[i]
    for i in range(k - 1, -1, -1):
        out[i] /= lower[i, i]
        value = out[i]
        row = lower[i]
        for j in range(i):
            out[j] -= row[j] * value


@inner_njit
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


@inner_njit
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


@inner_njit
def _solve_factor(lower, k, rhs, out):
    """``out = (L L^T)^-1 rhs`` for the factor of size ``k``."""
    middle = np.empty(k)
    _forward_substitution(lower, k, rhs, middle)
    _back_substitution(lower, k, middle, out)


@inner_njit
def _solve_factor_pair(lower, k, rhs, other_rhs, out, other_out):
    """:func:`_solve_factor` for two right-hand sides in one pass over the
    factor's rows (the held bound needs both directions at every breakpoint)."""
    for i in range(k):
        row = lower[i]
        out[i] = (rhs[i] - _dot(row, out, i)) / row[i]
        other_out[i] = (other_rhs[i] - _dot(row, other_out, i)) / row[i]
    for i in range(k - 1, -1, -1):
        row = lower[i]
        out[i] /= row[i]
        other_out[i] /= row[i]
        value, other = out[i], other_out[i]
        for j in range(i):
            out[j] -= row[j] * value
            other_out[j] -= row[j] * other


@inner_njit
def _gram_times(gram, active, k, vector, out):
    """``out = G[:, S] vector[S]``, reading the rows ``G[S, :]`` of the
    symmetric Gram (contiguous, so the inner loop vectorises)."""
    out[:] = 0.0
    for i in range(k):
        row = gram[active[i]]
        value = vector[active[i]]
        for j in range(out.shape[0]):
            out[j] += value * row[j]


@inner_njit
def _on_support(lower, active, signs, k, n_bounded, values, bounded_only, out):
    """Compact solution ``(G_SS + l2 I)^-1 (values_S * s_S)``; with
    ``bounded_only`` the right-hand side is zero off the bounded block."""
    rhs = np.empty(k)
    for i in range(k):
        rhs[i] = 0.0 if bounded_only and active[i] >= n_bounded else values[i] * signs[i]
    _solve_factor(lower, k, rhs, out)


@inner_njit
def _bounded_dot(active, signs, k, n_bounded, compact):
    """``sum s_i v_i`` over the active columns of the bounded block."""
    total = 0.0
    for i in range(k):
        if active[i] < n_bounded:
            total += signs[i] * compact[i]
    return total


@inner_njit
def _scatter(gram, active, k, compact, out, gram_out):
    out[:] = 0.0
    for i in range(k):
        out[active[i]] = compact[i]
    _gram_times(gram, active, k, out, gram_out)


@inner_njit
def _exact_point(problem, state, k, t, mu, holding, gram_coef):
    """The exact point at ``t`` (into ``coef``, zero off the support, and
    ``gram_coef = G w``) and its multiplier: while the bound is held,
    ``w_S = p + mu q`` with ``q`` the response to ``mu``, and ``mu`` solved
    from ``||w_bounded||_1 = bound`` (linear in ``mu``). The linear updates
    between breakpoints only approximate this point to rounding."""
    gram, correlation, _, n_bounded, bound = problem
    coef, active, signs, lower = state
    rhs = np.empty(k)
    for i in range(k):
        rhs[i] = correlation[active[i]] - t * signs[i]
    point = np.empty(k)
    _solve_factor(lower, k, rhs, point)
    if holding:
        response = np.empty(k)
        _on_support(lower, active, signs, k, n_bounded, -np.ones(k), True, response)
        slope = _bounded_dot(active, signs, k, n_bounded, response)
        if slope < 0.0:
            # clamped, never released here: only the path releases the bound
            mu = max((bound - _bounded_dot(active, signs, k, n_bounded, point)) / slope,
                     0.0)
            for i in range(k):
                point[i] += mu * response[i]
    _scatter(gram, active, k, point, coef, gram_coef)
    return mu


@inner_njit
def _direction(problem, state, k, holding, direction, gram_direction):
    """``dw/dt`` (into ``direction``) and ``G dw/dt``; returns ``dmu/dt``,
    which keeps ``||w_bounded||_1`` constant while the bound is held (0
    otherwise)."""
    gram, _, _, n_bounded, _ = problem
    _, active, signs, lower = state
    compact = np.empty(k)
    rhs = np.empty(k)
    for i in range(k):
        rhs[i] = -signs[i]
    rate = 0.0
    if not holding:
        _solve_factor(lower, k, rhs, compact)
    else:
        response = np.empty(k)
        bounded_rhs = np.empty(k)
        for i in range(k):
            bounded_rhs[i] = rhs[i] if active[i] < n_bounded else 0.0
        _solve_factor_pair(lower, k, rhs, bounded_rhs, compact, response)
        slope = _bounded_dot(active, signs, k, n_bounded, response)
        if slope < 0.0:
            rate = -_bounded_dot(active, signs, k, n_bounded, compact) / slope
            for i in range(k):
                compact[i] += rate * response[i]
    _scatter(gram, active, k, compact, direction, gram_direction)
    return rate


# what ends a step of the path
_END, _LEAVE, _JOIN, _HOLD, _RELEASE = 0, 1, 2, 3, 4


@inner_njit
def _follow(problem, state, k, t, t_end, mu, holding, max_steps):
    """Follow the path of the bound-constrained row as the penalty falls from
    ``t`` to ``t_end``: penalties ``t`` on every column plus ``mu`` on the
    bounded block, where ``mu = 0`` while ``||w_bounded||_1 < bound`` and,
    once the norm reaches the bound (``holding``), ``mu`` moves so that the
    norm stays there (both affine in ``t`` between breakpoints) until it
    would turn negative (the bound releases). ``state = (coef, active,
    signs, lower)`` holds the path's point at ``t`` on entry and at the end
    on exit. Returns (t, k, mu, holding, breakpoints, status)."""
    gram, correlation, l2, n_bounded, bound = problem
    coef, active, signs, lower = state
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
    # it may not rejoin with that sign before the next breakpoint; likewise
    # the bound may not toggle back at the point where it just toggled
    last_left, last_sign, just_toggled = np.int64(-1), 0.0, False
    breakpoints, since_exact = 0, _REFRESH_EVERY
    while breakpoints < max_steps:
        if since_exact >= _REFRESH_EVERY:
            mu = _exact_point(problem, state, k, t, mu, holding, gram_coef)
            since_exact = 0
        rate = _direction(problem, state, k, holding, direction, gram_direction)
        # per unit step (t falls): w moves by -direction, mu by -rate
        step, kind, event, join_sign = t - t_end, _END, np.int64(-1), 0.0
        if n_bounded > 0 and not just_toggled:
            norm, growth = 0.0, 0.0
            for i in range(k):
                if active[i] < n_bounded:
                    norm += signs[i] * coef[active[i]]
                    growth -= signs[i] * direction[active[i]]
            if holding and rate > 0.0 and mu / rate < step:
                step, kind = mu / rate, _RELEASE
            elif not holding and growth > 0.0 and max(bound - norm, 0.0) / growth < step:
                step, kind = max(bound - norm, 0.0) / growth, _HOLD
        for i in range(k):  # an active coefficient moving back to zero
            # judged against its sign, not its value, which may sit a
            # rounding error on the wrong side of zero just after it joined
            moving = signs[i] * direction[active[i]]
            if moving > 0.0:
                candidate = max(signs[i] * coef[active[i]], 0.0) / moving
                if candidate < step:
                    step, kind, event = candidate, _LEAVE, i
        for j in range(n):  # an inactive correlation reaching its penalty
            if is_active[j] or held_out[j]:
                continue
            residual = correlation[j] - gram_coef[j]
            bounded = j < n_bounded
            penalty = t + mu if bounded else t
            closing = 1.0 + rate if bounded else 1.0  # penalty's fall per step
            if gram_direction[j] + closing > 0.0 and not (j == last_left
                                                          and last_sign > 0.0):
                candidate = max(penalty - residual, 0.0) / (gram_direction[j] + closing)
                if candidate < step:
                    step, kind, event, join_sign = candidate, _JOIN, j, 1.0
            if closing - gram_direction[j] > 0.0 and not (j == last_left
                                                          and last_sign < 0.0):
                candidate = max(penalty + residual, 0.0) / (closing - gram_direction[j])
                if candidate < step:
                    step, kind, event, join_sign = candidate, _JOIN, j, -1.0
        if not np.isfinite(step):  # nothing left to move the path: cannot happen
            break                    # for a consistent problem; reported as not reached
        t -= step
        if holding:
            mu = max(mu - step * rate, 0.0)
        if kind == _END:
            mu = _exact_point(problem, state, k, t, mu, holding, gram_coef)
            return t, k, mu, holding, breakpoints, REACHED
        # the path is linear up to the breakpoint
        for i in range(k):
            coef[active[i]] -= step * direction[active[i]]
        for j in range(n):
            gram_coef[j] -= step * gram_direction[j]
        breakpoints += 1
        since_exact += 1
        if step > 0.0:
            just_toggled = False
        if kind == _HOLD or kind == _RELEASE:
            holding = kind == _HOLD
            mu = 0.0 if kind == _RELEASE else mu
            just_toggled = True
            since_exact = _REFRESH_EVERY
        elif kind == _JOIN:
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
    mu = _exact_point(problem, state, k, t, mu, holding, gram_coef)
    return t, k, mu, holding, breakpoints, MAX_STEPS_REACHED


@inner_njit
def _start(problem, penalty):
    """The path's problem record ``(gram, correlation, l2, n_bounded,
    bound)`` of a :class:`RowProblem` under a :class:`RowPenalty`, an empty
    state at ``w = 0`` and the penalty where it starts,
    ``alpha_max = max_j |c_j|``."""
    gram, correlation = problem.gram, problem.correlation
    n = gram.shape[0]
    bounded = (penalty.n_bounded
               if penalty.n_bounded > 0 and np.isfinite(penalty.bound) else 0)
    path = (gram, correlation, penalty.l2, bounded, penalty.bound)
    state = (np.zeros(n), np.empty(n, dtype=np.int64), np.empty(n), np.zeros((n, n)))
    t = 0.0
    for j in range(n):
        t = max(t, abs(correlation[j]))
    return path, state, t


@njit(cache=True)
def _constrained(problem, penalty, max_steps):
    """The bound-constrained path from ``alpha_max`` down to ``alpha =
    penalty.l1``; returns (coef, multiplier, breakpoints, status)."""
    path, state, t = _start(problem, penalty)
    if t <= penalty.l1:
        return state[0], 0.0, 0, REACHED
    # typed starting values, not literals: a literal argument makes numba
    # compile _follow's callees once for the literal and again for the type
    _, _, mu, _, breakpoints, status = _follow(path, state, np.int64(0), t, penalty.l1,
                                               np.float64(0.0), np.bool_(False), max_steps)
    return state[0], mu, breakpoints, status


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
    penalty = row_penalty(n, n_bounded, bound if n_bounded else np.inf, l1=alpha, l2=l2)
    coef, mu, breakpoints, status = _constrained(RowProblem(gram, correlation, 0.0), penalty,
                                                 max_steps)
    return HomotopySolution(coef, float(mu), int(breakpoints), int(status))


@inner_njit
def _certify(problem, penalty, coef, multiplier):
    """Make ``coef`` exactly feasible (in place) and return (primal, dual,
    roundoff): the objective of the constrained row and the Lagrangian dual
    bound at ``multiplier`` and the residual of ``coef``."""
    n = coef.shape[0]
    gram_coef = np.empty(n)
    primal, residual_sq, r_dot_z, roundoff = _feasible_objective(
        problem, penalty, coef, penalty.n_bounded, penalty.bound, coef, gram_coef)
    weights = _lagrangian_weights(penalty, multiplier, np.empty(n))
    dual = _dual(problem.correlation, gram_coef, residual_sq, r_dot_z, weights,
                 penalty.l2) - roundoff
    if penalty.n_bounded > 0 and np.isfinite(penalty.bound):
        dual -= multiplier * penalty.bound
    return primal, dual, roundoff


@inner_njit
def _record(problem, penalty, solution, multiplier, breakpoints, status, tol, record):
    """Certify ``solution`` (made exactly feasible in place) and write
    (gap, objective, multiplier, breakpoints, status, 0) into ``record``;
    status 0 when the path ended and the gap meets ``tol`` as the
    coordinate-descent solver judges it."""
    primal, dual, roundoff = _certify(problem, penalty, solution, multiplier)
    certified = _certified(Certificate(primal, dual, multiplier, roundoff), tol)
    reached = np.int64(0 if status == REACHED and certified else 1)
    _store(record, RowResult(primal - dual, primal, multiplier, np.int64(breakpoints), reached,
                             0.0), 0.0)


@kernel_njit
def homotopy_rows_kernel(gram, correlations, target_sq, coef, penalty, tol, max_steps,
                         records, rows):
    """Every row of ``rows`` (indices) by :func:`_constrained` under
    ``penalty`` (a :class:`~sksim.solvers.rows.RowPenalty`), certified;
    ``records`` rows get (gap, objective, multiplier, breakpoints, status, 0)
    with status 0 when the gap meets ``tol`` (as the coordinate-descent
    solver judges it)."""
    for i in rows:
        problem = RowProblem(gram, correlations[i], target_sq[i])
        # _constrained written out: through it, a default fit would compile
        # it and LLVM would optimise the whole path once more (seconds cold)
        path, state, t = _start(problem, penalty)
        multiplier, breakpoints, status = 0.0, 0, REACHED
        if t > penalty.l1:
            _, _, multiplier, _, breakpoints, status = _follow(
                path, state, np.int64(0), t, penalty.l1, np.float64(0.0), np.bool_(False),
                max_steps)
        solution = state[0]
        _record(problem, penalty, solution, multiplier, breakpoints, status, tol, records[i])
        copy_into(coef[i], solution)


@kernel_njit
def homotopy_supports_kernel(gram, correlations, target_sq, coef, penalty, tol, max_steps,
                             records, rows):
    """Every row of ``rows`` again by :func:`_constrained` restricted to its
    support (the columns where ``coef`` is nonzero, bounded ones first as in
    the full row), written back in place with its record (as
    :func:`homotopy_rows_kernel`, certified on the restricted problem)."""
    for i in rows:
        support = np.flatnonzero(coef[i])
        if support.size == 0:  # the zero row is the only point: exact
            _store(records[i], _zero_row_result(target_sq[i]), 0.0)
            continue
        problem, sub_penalty = _restricted(RowProblem(gram, correlations[i], target_sq[i]),
                                           penalty, support)
        solution, multiplier, breakpoints, status = _constrained(problem, sub_penalty,
                                                                 max_steps)
        _record(problem, sub_penalty, solution, multiplier, breakpoints, status, tol,
                records[i])
        _fill_support(solution, support, coef[i])


@kernel_njit
def homotopy_path_kernel(gram, correlations, target_sq, alphas, penalty, tol, max_steps,
                         coefs, records, rows):
    """The solutions of every row of ``rows`` at all ``alphas`` (decreasing)
    from one bound-constrained path per row, recorded as it passes each alpha (the
    L1 weights are ``penalty``'s plus alpha: give it ``l1 = 0``).
    ``coefs[a, i]`` and ``records[a, i]`` (as :func:`homotopy_rows_kernel`)
    receive the certified results."""
    for i in rows:
        problem = RowProblem(gram, correlations[i], target_sq[i])
        path, state, t = _start(problem, penalty)
        weights = np.empty(gram.shape[0])
        k, mu, holding, breakpoints, status = (np.int64(0), np.float64(0.0), np.bool_(False),
                                               0, REACHED)
        for a in range(alphas.shape[0]):
            if t > alphas[a] and status == REACHED:
                t, k, mu, holding, more, status = _follow(
                    path, state, k, t, alphas[a], mu, holding, max_steps - breakpoints)
                breakpoints += more
            solution = state[0].copy()
            _record(problem, _shifted(penalty, alphas[a], weights), solution, mu, breakpoints,
                    status, tol, records[a, i])
            copy_into(coefs[a, i], solution)
