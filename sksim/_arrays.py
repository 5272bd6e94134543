"""Low-level array helpers of the fit and inference stages: sample chunks,
float64 rows and numba's thread count; products with sparse matrices and the
forward blocks of ``A`` (defined with the equilibrium solver, which uses
them). Both the in-memory and the streamed stages use them."""

from contextlib import contextmanager

import numba
import numpy as np

from .solvers import resolve_n_threads

# the products and the forward blocks of A live with the equilibrium solver
from .solvers.equilibrium import (  # noqa: F401
    DENSE_PRODUCT_DENSITY,
    forward_blocks,
    times_transpose,
)

# Sample chunks of ~32 MiB of float64 design: the Gram matrix and the
# correlations are accumulated chunk by chunk, so fit never holds the full
# float64 design [states, X] (nor a centred copy of it).
_CHUNK_BYTES = 32 * 2**20


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

