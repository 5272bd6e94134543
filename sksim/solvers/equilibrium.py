"""Solving the equilibrium ``x = relu(A x + B u + b)`` with a residual certificate.

Gauss-Seidel sweeps over the states in index order, for blocks of samples in
parallel with each state's update vectorised over a block, each state's
self-loop solved exactly. When
``||A||_inf <= kappa < 1`` each sweep contracts the error by ``kappa`` in the
infinity norm, and when ``A`` is strictly lower triangular in this order (a
feed-forward teacher whose states are stored layer by layer) one sweep is exact:
:func:`forward_substitution` makes that one sweep, sample by sample, and no
residual pass.
The certificate is the fixed-point residual ``||x - relu(A x + B u + b)||_inf``,
computed by a separate Jacobi pass; with ``||A||_inf = a < 1`` it bounds the
distance to the true equilibrium by ``residual / (1 - a)``.
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from ._threads import kernel_njit, run_on_threads
from .projection import copy_into, inner_njit


class EquilibriumSolution(NamedTuple):
    """Result record of :func:`solve_equilibrium`.

    Attributes
    ----------
    states : ndarray of shape (n_samples, n_states)
    residual : ndarray of shape (n_samples,)
        ``||x - relu(A x + B u + b)||_inf`` per sample.
    n_iter : ndarray of shape (n_samples,)
        Gauss-Seidel sweeps per sample (those of its block of samples).
    """

    states: np.ndarray
    residual: np.ndarray
    n_iter: np.ndarray


# samples per block of the vectorised kernel: the block's states (n_states x
# this, float64) stay in cache while a sweep walks the rows of A
_SAMPLE_BLOCK = 128


@inner_njit
def _sweep_block(indptr, indices, data, diagonal, offsets, x, accumulator, change):
    """One Gauss-Seidel sweep over the states of a block of samples, state by
    state, each update vectorised over the block (``x`` and ``offsets`` are
    (n_states, width)); ``change`` receives each sample's largest update.

    A state's self-loop is solved exactly: with ``r`` the rest of its row and
    ``a_ii < 1`` (``||A||_inf < 1``), ``x_i = relu(a_ii x_i + r)`` has the
    unique solution ``max(r, 0) / (1 - a_ii)``, so self-loops, which SIM fits
    often (a state's own ReLU predicts its pre-activation), cost no sweeps.
    """
    n_states, width = x.shape
    change[:] = 0.0
    for i in range(n_states):
        copy_into(accumulator, offsets[i])
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            if j != i:
                weight = data[k]
                row = x[j]
                for s in range(width):
                    accumulator[s] += weight * row[s]
        factor = 1.0 / (1.0 - diagonal[i])
        for s in range(width):
            value = accumulator[s] * factor if accumulator[s] > 0.0 else 0.0
            step = abs(value - x[i, s])
            if step > change[s]:
                change[s] = step
            x[i, s] = value


@inner_njit
def _residual_block(indptr, indices, data, offsets, x, accumulator, worst, scale):
    """``||x - relu(A x + offsets)||_inf`` and ``max(1, ||x||_inf)`` per sample."""
    n_states, width = x.shape
    worst[:] = 0.0
    scale[:] = 1.0
    for i in range(n_states):
        copy_into(accumulator, offsets[i])
        for k in range(indptr[i], indptr[i + 1]):
            weight = data[k]
            row = x[indices[k]]
            for s in range(width):
                accumulator[s] += weight * row[s]
        for s in range(width):
            value = accumulator[s] if accumulator[s] > 0.0 else 0.0
            worst[s] = max(worst[s], abs(value - x[i, s]))
            scale[s] = max(scale[s], abs(x[i, s]))


@kernel_njit
def _equilibrium_kernel(indptr, indices, data, drive, tol, max_iter, states, residual,
                        n_iter, blocks):
    """Gauss-Seidel sweeps in state order for the blocks ``blocks`` (indices)
    of ``_SAMPLE_BLOCK`` samples, each state update vectorised over the
    block's samples; a block sweeps until every one of its samples meets the
    tolerance (the others only get closer), then each sample's residual is
    the exact fixed-point residual of its returned states."""
    n_samples, n_states = drive.shape
    diagonal = np.zeros(n_states)
    a_norm = 0.0
    for i in range(n_states):
        row_norm = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            row_norm += abs(data[k])
            if indices[k] == i:
                diagonal[i] += data[k]
        a_norm = max(a_norm, row_norm)
    for b in blocks:
        start = b * _SAMPLE_BLOCK
        stop = min(start + _SAMPLE_BLOCK, n_samples)
        width = stop - start
        offsets = np.ascontiguousarray(drive[start:stop].T)
        x = np.zeros((n_states, width))
        accumulator = np.empty(width)
        change = np.empty(width)
        worst = np.full(width, np.inf)
        scale = np.ones(width)
        sweeps = 0
        while sweeps < max_iter:
            _sweep_block(indptr, indices, data, diagonal, offsets, x, accumulator, change)
            sweeps += 1
            # as in the per-sample kernel: the residual after a sweep is at most
            # ||A||_inf * (largest change), so the exact residual pass runs only
            # once that bound says every sample may meet the tolerance
            bound_met = True
            for s in range(width):
                largest = 1.0
                for i in range(n_states):
                    largest = max(largest, abs(x[i, s]))
                if a_norm * change[s] > 2.0 * tol * largest:
                    bound_met = False
                    break
            if not bound_met and sweeps < max_iter:
                continue
            _residual_block(indptr, indices, data, offsets, x, accumulator, worst, scale)
            done = True
            for s in range(width):
                if worst[s] > tol * scale[s]:
                    done = False
                    break
            if done:
                break
        for s in range(width):
            residual[start + s] = worst[s]
            n_iter[start + s] = sweeps
            for i in range(n_states):
                states[start + s, i] = x[i, s]


def solve_equilibrium(A, drive, *, tol=1e-10, max_iter=1000):
    """Solve ``x = relu(A x + drive)`` for every row of ``drive``.

    Parameters
    ----------
    A : scipy.sparse CSR array of shape (n_states, n_states)
    drive : ndarray of shape (n_samples, n_states)
        ``U B^T + b`` per sample.
    tol : float
        Stop a sample when its residual is at most ``tol * max(1, ||x||_inf)``.
    max_iter : int
        Maximum Gauss-Seidel sweeps per sample (per block of samples).

    Returns
    -------
    EquilibriumSolution
    """
    drive = np.ascontiguousarray(drive, dtype=np.float64)
    n_samples, n_states = drive.shape
    states = np.zeros((n_samples, n_states))
    residual = np.zeros(n_samples)
    n_iter = np.zeros(n_samples, dtype=np.int64)
    if n_samples and n_states:
        run_on_threads(
            _equilibrium_kernel, (n_samples + _SAMPLE_BLOCK - 1) // _SAMPLE_BLOCK,
            np.ascontiguousarray(A.indptr, dtype=np.int64),
            np.ascontiguousarray(A.indices, dtype=np.int64),
            np.ascontiguousarray(A.data, dtype=np.float64),
            drive, float(tol), int(max_iter), states, residual, n_iter)
    return EquilibriumSolution(states, residual, n_iter)


# Serial on purpose: the pass costs ~1 ns per nonzero and sample, and numba's
# threads started right after the BLAS product that computes ``drive`` contend
# with OpenBLAS's spinning threads (a parallel loop measured 3-5x slower there).
@njit(cache=True)
def _forward_kernel(indptr, indices, data, drive, states):
    n_samples, n_states = drive.shape
    for s in range(n_samples):
        for i in range(n_states):
            total = drive[s, i]
            for k in range(indptr[i], indptr[i + 1]):
                total += data[k] * states[s, indices[k]]
            states[s, i] = max(total, 0.0)


def forward_substitution(A, drive):
    """The equilibrium of ``x = relu(A x + drive)`` for a strictly lower
    triangular ``A`` (every state reads only earlier states), in one pass.

    Each state is set to exactly the right-hand side of its equation, which
    reads only final states, so the residual is 0 by construction.

    Parameters
    ----------
    A : scipy.sparse CSR array of shape (n_states, n_states)
        Strictly lower triangular (not checked here; the caller knows).
    drive : ndarray of shape (n_samples, n_states)

    Returns
    -------
    states : ndarray of shape (n_samples, n_states)
    """
    drive = np.ascontiguousarray(drive, dtype=np.float64)
    states = np.empty_like(drive)
    if drive.size:
        _forward_kernel(np.ascontiguousarray(A.indptr, dtype=np.int64),
                        np.ascontiguousarray(A.indices, dtype=np.int64),
                        np.ascontiguousarray(A.data, dtype=np.float64), drive, states)
    return states
