"""Soft-thresholding, Euclidean projection onto the L1 ball and the small vector
loops the solvers share (numba kernels)."""

import numpy as np
from numba import njit

# For kernels called only by other kernels: numba then compiles no Python (or
# C) entry point for them, which is a part of every cold start it saves.
inner_njit = njit(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)

# a constant to numba (np.finfo inside a kernel compiles its whole record)
EPS = float(np.finfo(np.float64).eps)


@inner_njit
def soft_threshold(value, threshold):
    """Return sign(value) * max(|value| - threshold, 0) for scalars."""
    if value > threshold:
        return value - threshold
    if value < -threshold:
        return value + threshold
    return 0.0


@inner_njit
def copy_into(target, source):
    """``target[:] = source`` as a loop: numba's slice assignment compiles a
    shape check with a formatted error message (seconds of a cold start)."""
    for j in range(source.shape[0]):
        target[j] = source[j]


@inner_njit
def l1_norm(vector, start, stop):
    """Sequential sum of |vector[start:stop]|."""
    total = 0.0
    for j in range(start, stop):
        total += abs(vector[j])
    return total


@inner_njit
def _l1_ball_threshold(magnitudes, radius):
    """The level ``tau > 0`` with ``sum_j max(magnitudes_j - tau, 0) = radius``
    for nonnegative ``magnitudes`` whose sum exceeds ``radius >= 0``.

    Condat's algorithm (2016, "Fast projection onto the simplex and the l1
    ball", Algorithm 2): an exact pivot method, expected linear time, that
    keeps a candidate set ``kept`` whose level ``(sum(kept) - radius) /
    |kept|`` only rises; entries at or below it leave. It needs no sort (whose
    compilation was seconds of a cold start). The level is recomputed from the
    final set, so it carries one summation's rounding only.
    """
    n = magnitudes.shape[0]
    if radius <= 0.0:  # the ball is the origin: threshold at the largest
        largest = 0.0
        for j in range(n):
            largest = max(largest, magnitudes[j])
        return largest
    kept = np.empty(n)
    waiting = np.empty(n)
    n_kept, n_waiting = 1, 0
    kept[0] = magnitudes[0]
    tau = magnitudes[0] - radius
    for j in range(1, n):
        value = magnitudes[j]
        if value <= tau:
            continue
        tau += (value - tau) / (n_kept + 1)
        if tau > value - radius:
            kept[n_kept] = value
            n_kept += 1
        else:  # value alone has a higher level: restart from it
            for k in range(n_kept):
                waiting[n_waiting + k] = kept[k]
            n_waiting += n_kept
            kept[0] = value
            n_kept = 1
            tau = value - radius
    for k in range(n_waiting):
        value = waiting[k]
        if value > tau:
            kept[n_kept] = value
            n_kept += 1
            tau += (value - tau) / n_kept
    changed = True
    while changed:
        changed = False
        size = n_kept
        n_kept = 0
        for k in range(size):
            value = kept[k]
            # (one entry always stays: the level lies below the largest one,
            # which only rounding in the running level could hide)
            if value > tau or size == 1:
                kept[n_kept] = value
                n_kept += 1
            else:
                changed = True
                size -= 1
                tau += (tau - value) / size
    total = 0.0
    for k in range(n_kept):
        total += kept[k]
    return max((total - radius) / n_kept, 0.0)


@njit(cache=True)
def project_l1_ball_inplace(vector, start, stop, radius):
    """Project ``vector[start:stop]`` in place onto ``{v : ||v||_1 <= radius}``.

    The projection is a soft-thresholding at the level ``tau`` that makes the
    L1 norm equal to ``radius`` (Duchi et al., 2008), found without sorting
    by :func:`_l1_ball_threshold`. Returns ``tau`` (0.0 when the block was
    already inside).
    """
    if l1_norm(vector, start, stop) <= radius:
        return 0.0
    magnitudes = np.empty(stop - start)
    for j in range(start, stop):
        magnitudes[j - start] = abs(vector[j])
    tau = _l1_ball_threshold(magnitudes, radius)
    for j in range(start, stop):
        vector[j] = soft_threshold(vector[j], tau)
    return tau


@njit(cache=True)
def enforce_l1_bound_inplace(vector, start, stop, radius):
    """Make ``sum(|vector[start:stop]|) <= radius`` hold in floating point.

    The block is projected onto a ball shrunk by a few ulps per entry, so the
    bound holds for *any* summation order a user may use to check it (the
    rounding error of summing ``n`` terms is at most ``(n - 1) * eps`` relative).
    A final multiplicative shrink guards against rounding in the projection
    itself. Returns the soft-threshold level of the projection.
    """
    n_terms = stop - start
    eps = EPS
    safe_radius = radius * (1.0 - 4.0 * (n_terms + 1) * eps)
    norm = l1_norm(vector, start, stop)
    if not np.isfinite(norm):
        # Nothing finite to project; the origin is feasible.
        vector[start:stop] = 0.0
        return np.inf
    tau = project_l1_ball_inplace(vector, start, stop, safe_radius)
    # When the entries dwarf the radius (e.g. |v_j| ~ 1e6, radius 1e-6) the
    # threshold tau carries an absolute rounding error of ~eps * |v_j|, far
    # more than a few ulps of the radius: rescale onto the ball first.
    norm = l1_norm(vector, start, stop)
    if norm > safe_radius:
        factor = safe_radius / norm
        for j in range(start, stop):
            vector[j] *= factor
    for _ in range(64):
        if l1_norm(vector, start, stop) <= safe_radius:
            break
        for j in range(start, stop):
            vector[j] *= 1.0 - 4.0 * eps
    return tau
