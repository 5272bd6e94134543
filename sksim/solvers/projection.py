"""Soft-thresholding and Euclidean projection onto the L1 ball (numba kernels)."""

import numpy as np
from numba import njit


@njit(cache=True)
def soft_threshold(value, threshold):
    """Return sign(value) * max(|value| - threshold, 0) for scalars."""
    if value > threshold:
        return value - threshold
    if value < -threshold:
        return value + threshold
    return 0.0


@njit(cache=True)
def l1_norm(vector, start, stop):
    """Sequential sum of |vector[start:stop]|."""
    total = 0.0
    for j in range(start, stop):
        total += abs(vector[j])
    return total


@njit(cache=True)
def project_l1_ball_inplace(vector, start, stop, radius):
    """Project ``vector[start:stop]`` in place onto ``{v : ||v||_1 <= radius}``.

    Sort-based algorithm of Duchi et al. (2008): the projection is a
    soft-thresholding at the level ``tau`` that makes the L1 norm equal to
    ``radius``. Returns ``tau`` (0.0 when the block was already inside).
    """
    if l1_norm(vector, start, stop) <= radius:
        return 0.0
    magnitudes = np.abs(vector[start:stop])
    sorted_desc = np.sort(magnitudes)[::-1]
    cumulative = 0.0
    tau = 0.0
    for k in range(sorted_desc.shape[0]):
        cumulative += sorted_desc[k]
        candidate = (cumulative - radius) / (k + 1)
        if sorted_desc[k] > candidate:
            tau = candidate
        else:
            break
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
    eps = np.finfo(np.float64).eps
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
