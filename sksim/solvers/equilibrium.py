"""Solving the equilibrium ``x = relu(A x + B u + b)`` with a residual certificate.

The states are solved one strongly connected component of ``A``'s graph at
a time, in a topological order of the components, so each component's inputs
are final when it is solved: a state in no cycle is exact after one update,
and a cycle gets Gauss-Seidel sweeps (each state's self-loop solved exactly),
for blocks of samples in parallel with each update vectorised over a block.
When ``||A||_inf <= kappa < 1`` each sweep contracts a component's error by
``kappa`` in the infinity norm. When ``A`` is strictly lower triangular (a
feed-forward teacher whose states are stored layer by layer) every component
is one state: :func:`forward_substitution` makes that one pass, block of
states by block with BLAS products, and no residual pass.
The certificate is the fixed-point residual ``||x - relu(A x + B u + b)||_inf``,
computed by a separate Jacobi pass; with ``||A||_inf = a < 1`` it bounds the
distance to the true equilibrium by ``residual / (1 - a)``.
"""

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

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
        The most Gauss-Seidel sweeps a component of ``A`` took for the
        sample's block of samples, plus any sweeps over all states after
        the residual check.
    """

    states: np.ndarray
    residual: np.ndarray
    n_iter: np.ndarray


# samples per block of the vectorised kernel: the block's states (n_states x
# this, float64) stay in cache while a sweep walks the rows of A
_SAMPLE_BLOCK = 128


def component_order(A):
    """The states of ``A`` grouped into strongly connected components (the
    states that reach each other through ``A``'s graph), the components in a
    topological order (a component reads only itself and earlier ones).

    Parameters
    ----------
    A : scipy.sparse CSR array of shape (n_states, n_states)

    Returns
    -------
    order : ndarray of shape (n_states,)
        State indices, component after component.
    bounds : ndarray of shape (n_components + 1,)
        Component ``c`` is ``order[bounds[c]:bounds[c + 1]]``.
    """
    n_components, labels = connected_components(A, directed=True, connection="strong")
    coo = A.tocoo()
    # state i reads state j (A[i, j] != 0): j's component comes before i's.
    # scipy numbers the components as its search completes them, which is
    # such an order; that is not documented, so it is checked.
    earlier, later = labels[coo.col], labels[coo.row]
    if np.any(earlier > later):
        labels = topological_ranks(n_components, earlier, later)[labels]
    order = np.argsort(labels, kind="stable").astype(np.int64)
    bounds = np.searchsorted(labels[order], np.arange(n_components + 1))
    return order, bounds.astype(np.int64)


def topological_ranks(n_components, earlier, later):
    """Ranks of the components such that every edge ``earlier[k] ->
    later[k]`` between two of them goes up (Kahn's algorithm)."""
    between = earlier != later
    edges = np.unique(earlier[between] * n_components + later[between])
    sources, targets = np.divmod(edges, n_components)
    waiting = np.bincount(targets, minlength=n_components)
    readers = np.split(targets, np.searchsorted(sources, np.arange(1, n_components)))
    ready = list(np.flatnonzero(waiting == 0))
    ranks = np.empty(n_components, dtype=np.int64)
    for rank in range(n_components):
        component = ready.pop()
        ranks[component] = rank
        for reader in readers[component]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                ready.append(reader)
    return ranks


@inner_njit
def _sweep_block(indptr, indices, data, diagonal, offsets, x, accumulator, change,
                 start, stop):
    """One Gauss-Seidel sweep over states ``start:stop`` (in component order)
    of a block of samples, each update vectorised over the block (``x`` and
    ``offsets`` are (n_states, width)); ``change`` receives each sample's
    largest update.

    A state's self-loop is solved exactly: with ``r`` the rest of its row and
    ``a_ii < 1`` (``||A||_inf < 1``), ``x_i = relu(a_ii x_i + r)`` has the
    unique solution ``max(r, 0) / (1 - a_ii)``, so self-loops, which SIM fits
    often (a state's own ReLU predicts its pre-activation), cost no sweeps.
    """
    width = x.shape[1]
    change[:] = 0.0
    for i in range(start, stop):
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
def _residual_block(indptr, indices, data, offsets, x, accumulator, worst, scale, check):
    """``||x - relu(A x + offsets)||_inf`` and ``max(1, ||x||_inf)`` per sample.

    Only the states with ``check`` are recomputed: a state alone in its
    component and without a self-loop was set to exactly this expression of
    final states, summed in the same order, so its residual is exactly 0.
    """
    n_states, width = x.shape
    worst[:] = 0.0
    scale[:] = 1.0
    for i in range(n_states):
        for s in range(width):
            scale[s] = max(scale[s], abs(x[i, s]))
        if not check[i]:
            continue
        copy_into(accumulator, offsets[i])
        for k in range(indptr[i], indptr[i + 1]):
            weight = data[k]
            row = x[indices[k]]
            for s in range(width):
                accumulator[s] += weight * row[s]
        for s in range(width):
            value = accumulator[s] if accumulator[s] > 0.0 else 0.0
            worst[s] = max(worst[s], abs(value - x[i, s]))


@inner_njit
def _bound_met(x, change, a_norm, tol, start, stop):
    """After a sweep of states ``start:stop`` whose largest update was
    ``change``, their residual is at most ``a_norm * change``: is that within
    ``tol * max(1, largest state)`` for every sample?"""
    for s in range(x.shape[1]):
        largest = 1.0
        for i in range(start, stop):
            largest = max(largest, abs(x[i, s]))
        if a_norm * change[s] > tol * largest:
            return False
    return True


@inner_njit
def _component_norms(indptr, indices, data, bounds):
    """Self-loops; per component, ``max_i sum_k |a_ik|`` over its own
    states without the self-loops (those are solved exactly); and which
    states the residual pass must recompute (those in a cycle or with a
    self-loop)."""
    n_states = indptr.shape[0] - 1
    diagonal = np.zeros(n_states)
    norms = np.zeros(bounds.shape[0] - 1)
    check = np.zeros(n_states, dtype=np.bool_)
    for c in range(bounds.shape[0] - 1):
        for i in range(bounds[c], bounds[c + 1]):
            row_norm = 0.0
            has_loop = False
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                if j == i:
                    diagonal[i] += data[k]
                    has_loop = True
                elif bounds[c] <= j < bounds[c + 1]:
                    row_norm += abs(data[k])
            norms[c] = max(norms[c], row_norm)
            check[i] = has_loop or bounds[c + 1] - bounds[c] > 1
    return diagonal, norms, check


@kernel_njit
def _equilibrium_kernel(indptr, indices, data, bounds, order, drive, tol, max_iter,
                        states, residual, n_iter, blocks):
    """The states in component order (``A`` permuted by ``order``): for the
    blocks ``blocks`` (indices) of ``_SAMPLE_BLOCK`` samples, each component
    in turn, once its inputs are final: one exact update for a single state,
    Gauss-Seidel sweeps for a larger one until the residual bound meets the
    tolerance. Then the exact residual of every sample; where it misses the
    tolerance, sweeps over all states continue. ``n_iter`` is the most sweeps
    a component (or the whole) took."""
    n_samples, n_states = drive.shape
    diagonal, norms, check = _component_norms(indptr, indices, data, bounds)
    for b in blocks:
        first = b * _SAMPLE_BLOCK
        width = min(first + _SAMPLE_BLOCK, n_samples) - first
        offsets = np.empty((n_states, width))
        for i in range(n_states):
            for s in range(width):
                offsets[i, s] = drive[first + s, order[i]]
        x = np.zeros((n_states, width))
        accumulator = np.empty(width)
        change = np.empty(width)
        worst = np.empty(width)
        scale = np.empty(width)
        most = 1
        for c in range(bounds.shape[0] - 1):
            sweeps = 0
            while sweeps < max_iter:
                _sweep_block(indptr, indices, data, diagonal, offsets, x, accumulator,
                             change, bounds[c], bounds[c + 1])
                sweeps += 1
                if norms[c] == 0.0 or _bound_met(x, change, norms[c], tol, bounds[c],
                                                 bounds[c + 1]):
                    break
            most = max(most, sweeps)
        extra = 0
        while True:
            _residual_block(indptr, indices, data, offsets, x, accumulator, worst, scale,
                            check)
            done = True
            for s in range(width):
                if worst[s] > tol * scale[s]:
                    done = False
                    break
            if done or most + extra >= max_iter:
                break
            _sweep_block(indptr, indices, data, diagonal, offsets, x, accumulator,
                         change, 0, n_states)
            extra += 1
        for s in range(width):
            residual[first + s] = worst[s]
            n_iter[first + s] = most + extra
            for i in range(n_states):
                states[first + s, order[i]] = x[i, s]


def solve_equilibrium(A, drive, *, tol=1e-10, max_iter=1000):
    """Solve ``x = relu(A x + drive)`` for every row of ``drive``.

    The states are taken component by component (:func:`component_order`):
    a state outside every cycle of ``A`` is exact after one update, and only
    the cycles are iterated.

    Parameters
    ----------
    A : scipy.sparse CSR array of shape (n_states, n_states)
    drive : ndarray of shape (n_samples, n_states)
        ``U B^T + b`` per sample.
    tol : float
        Stop a sample when its residual is at most ``tol * max(1, ||x||_inf)``.
    max_iter : int
        Maximum Gauss-Seidel sweeps per component (per block of samples).

    Returns
    -------
    EquilibriumSolution
    """
    drive = np.asarray(drive, dtype=np.float64)
    n_samples, n_states = drive.shape
    states = np.zeros((n_samples, n_states))
    residual = np.zeros(n_samples)
    n_iter = np.zeros(n_samples, dtype=np.int64)
    if n_samples and n_states:
        A = sp.csr_array(A)
        order, bounds = component_order(A)
        permuted = sp.csr_array(A[order][:, order])
        permuted.sort_indices()
        run_on_threads(
            _equilibrium_kernel, (n_samples + _SAMPLE_BLOCK - 1) // _SAMPLE_BLOCK,
            np.ascontiguousarray(permuted.indptr, dtype=np.int64),
            np.ascontiguousarray(permuted.indices, dtype=np.int64),
            np.ascontiguousarray(permuted.data, dtype=np.float64),
            bounds, order, drive, float(tol), int(max_iter), states, residual, n_iter)
    return EquilibriumSolution(states, residual, n_iter)


# Density from which a product with a sparse matrix runs as dense BLAS: sparse
# products (scipy's, torch's on CPU) are single-threaded and several times
# slower than BLAS on matrices denser than this.
DENSE_PRODUCT_DENSITY = 0.05


def times_transpose(rows, matrix, out=None):
    """``rows @ matrix.T`` for a sparse ``matrix``: dense BLAS from
    ``DENSE_PRODUCT_DENSITY`` on, sparse below; into ``out`` when given."""
    size = matrix.shape[0] * matrix.shape[1]
    if size and matrix.nnz >= DENSE_PRODUCT_DENSITY * size:
        return np.matmul(rows, matrix.toarray().T, out=out)
    product = np.asarray(matrix @ rows.T).T
    if out is None:
        return product
    out[...] = product
    return out


def forward_blocks(A):
    """``[(start, stop), ...]``: consecutive blocks of states such that each
    row of ``A`` reads only states of earlier blocks (the coarsest such
    split, found from the last nonzero column of each row), or None when
    ``A`` is not strictly lower triangular."""
    A = sp.csr_array(A)
    n_states = A.shape[0]
    last = np.full(n_states, -1)
    filled = np.flatnonzero(np.diff(A.indptr))
    if filled.size:
        last[filled] = np.maximum.reduceat(A.indices, A.indptr[filled])
    if np.any(last >= np.arange(n_states)):
        return None
    starts = [0]
    for i in range(n_states):
        if last[i] >= starts[-1]:
            starts.append(i)
    return list(zip(starts, starts[1:] + [n_states]))


def forward_substitution(A, drive, blocks=None, *, bias=None, overwrite_drive=False):
    """The equilibrium of ``x = relu(A x + drive + bias)`` for a strictly
    lower triangular ``A`` (every state reads only earlier states), in one
    pass.

    The states are computed block by block (:func:`forward_blocks`), each
    block with one product of the earlier blocks' states, as a feed-forward
    network computes its layers (dense BLAS from ``DENSE_PRODUCT_DENSITY``
    on), and one pass that adds the bias and the product and applies the
    ReLU. Each state is set to exactly the right-hand side of its equation,
    which reads only final states, so the residual is 0 by construction.

    Parameters
    ----------
    A : scipy.sparse CSR array of shape (n_states, n_states)
        Strictly lower triangular.
    drive : ndarray of shape (n_samples, n_states)
    blocks : list of (start, stop), default=None
        ``forward_blocks(A)``, when the caller has it.
    bias : ndarray of shape (n_states,), default=None
        Added to every row of ``drive`` (``drive + bias``, then ``+ A x``).
    overwrite_drive : bool, default=False
        Compute the states in ``drive`` itself (a float64 array the caller
        no longer needs) instead of in a copy.

    Returns
    -------
    states : ndarray of shape (n_samples, n_states)
    """
    A = sp.csr_array(A)
    if blocks is None:
        blocks = forward_blocks(A)
    if blocks is None:
        raise ValueError("A must be strictly lower triangular for forward_substitution; "
                         "it has an entry on or above the diagonal.")
    states = (drive if overwrite_drive and drive.dtype == np.float64
              else np.array(drive, dtype=np.float64, order="C"))
    bias = np.zeros(states.shape[1]) if bias is None else np.asarray(bias, dtype=np.float64)
    for start, stop in blocks:
        block = states[:, start:stop]
        if start:
            product = times_transpose(states[:, :start], A[start:stop, :start])
            _shift_add_relu(block, bias[start:stop], product)
        else:
            _shift_relu(block, bias[start:stop])
    return states


def equilibrium_of_drive(A, drive, bias, blocks, *, tol, max_iter):
    """The equilibrium of ``x = relu(A x + drive + bias)`` by the cheaper
    exact route: :func:`forward_substitution` when ``blocks``
    (``forward_blocks(A)``) is not None (residual 0), else
    :func:`solve_equilibrium`. ``drive`` (float64) is overwritten.

    Returns
    -------
    EquilibriumSolution
    """
    if blocks is not None:
        states = forward_substitution(A, drive, blocks, bias=bias, overwrite_drive=True)
        n_samples = states.shape[0]
        return EquilibriumSolution(states, np.zeros(n_samples),
                                   np.ones(n_samples, dtype=np.int64))
    drive += bias
    return solve_equilibrium(A, drive, tol=tol, max_iter=max_iter)


# One pass over a block of states (a column slice of the states: strided rows)
# instead of numpy's three (bias, product, ReLU), each of which walks a
# strided view at a third of its contiguous speed.
@kernel_njit
def _shift_relu(block, bias):
    """``block = relu(block + bias)`` in place."""
    for i in range(block.shape[0]):
        for j in range(block.shape[1]):
            value = block[i, j] + bias[j]
            block[i, j] = value if value > 0.0 else 0.0


@kernel_njit
def _shift_add_relu(block, bias, product):
    """``block = relu((block + bias) + product)`` in place."""
    for i in range(block.shape[0]):
        for j in range(block.shape[1]):
            value = (block[i, j] + bias[j]) + product[i, j]
            block[i, j] = value if value > 0.0 else 0.0
