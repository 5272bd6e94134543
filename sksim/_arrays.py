"""Low-level array helpers of the fit and inference stages: sample chunks,
float64 rows, products with sparse matrices, the forward blocks of ``A`` and
numba's thread count. Both the in-memory and the streamed stages use them."""

from contextlib import contextmanager

import numba
import numpy as np
import scipy.sparse as sp

from .solvers import resolve_n_threads

# Sample chunks of ~32 MiB of float64 design: the Gram matrix and the
# correlations are accumulated chunk by chunk, so fit never holds the full
# float64 design [states, X] (nor a centred copy of it).
_CHUNK_BYTES = 32 * 2**20

# Density from which a product with a sparse matrix runs as dense BLAS: sparse
# products (scipy's, torch's on CPU) are single-threaded and several times
# slower than BLAS on matrices denser than this.
DENSE_PRODUCT_DENSITY = 0.05


@contextmanager
def numba_threads(n_jobs):
    """Run numba kernels on ``n_jobs`` threads, restoring the count afterwards."""
    previous = numba.get_num_threads()
    numba.set_num_threads(resolve_n_threads(n_jobs))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def sample_chunks(n_samples, n_columns):
    """``(start, stop)`` row ranges of about ``_CHUNK_BYTES`` of float64."""
    step = max(1, _CHUNK_BYTES // (8 * max(n_columns, 1)))
    return [(start, min(start + step, n_samples))
            for start in range(0, n_samples, step)]


def float64_rows(array, start, stop):
    """Rows ``start:stop`` as a C-contiguous float64 array. Converting before
    any arithmetic makes results bitwise independent of the input's dtype
    (float32 values are exact in float64) and memory layout."""
    return np.ascontiguousarray(array[start:stop], dtype=np.float64)


def design_rows(blocks, start, stop):
    """Rows ``start:stop`` of the column blocks side by side, as float64."""
    return np.hstack([float64_rows(block, start, stop) for block in blocks])


def times_transpose(rows, matrix):
    """``rows @ matrix.T`` for a sparse ``matrix``: dense BLAS from
    ``DENSE_PRODUCT_DENSITY`` on, sparse below."""
    size = matrix.shape[0] * matrix.shape[1]
    if size and matrix.nnz >= DENSE_PRODUCT_DENSITY * size:
        return rows @ matrix.toarray().T
    return np.asarray(matrix @ rows.T).T


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
