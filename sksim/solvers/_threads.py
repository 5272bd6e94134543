"""Running a kernel over independent items (rows, blocks of samples) on
numba's thread count, as Python threads.

The kernels are serial numba functions compiled with ``nogil=True`` that
take the indices of the items to solve; each thread runs the kernel on its
share outside the GIL. This stands in for ``prange`` because of what a
``parallel=True`` kernel costs to compile: numba outlines the loop body into
a gufunc and wraps it twice, and each of these three functions and the
kernel itself links in and re-optimises (LLVM) everything the body calls.
The homotopy's row kernel compiled in 38.8 s with ``prange`` against 22.4 s
serial (a fresh cache on a busy 2-core machine), about the difference
threads make in the cold quick start.
"""

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

# the kernels called from Python: serial over the items they are given
kernel_njit = njit(cache=True, nogil=True)


def run_on_threads(kernel, n_items, *args):
    """Call ``kernel(*args, items)`` for shares ``items`` of ``range(n_items)``.

    One share per thread of numba's thread count in this thread
    (``numba.set_num_threads``, which the estimators set from ``n_jobs``),
    the calling thread taking the first; items are dealt out in turn (row
    costs vary by block, so consecutive chunks could give one thread a
    block's expensive rows). The kernel writes each item's results in
    place and items are independent, so the results do not depend on the
    number of threads.

    Parameters
    ----------
    kernel : callable
        A numba dispatcher compiled with ``nogil=True``, or a Python function
        whose work releases the GIL (BLAS products); its last argument is an
        int64 array of item indices.
    n_items : int
    *args
        The kernel's other arguments, shared by all threads.
    """
    n_threads = min(numba.get_num_threads(), n_items)
    if n_threads <= 1:
        if n_items:
            kernel(*args, np.arange(n_items))
        return
    shares = [np.arange(first, n_items, n_threads) for first in range(n_threads)]
    with ThreadPoolExecutor(max_workers=n_threads - 1) as pool:
        others = [pool.submit(kernel, *args, share) for share in shares[1:]]
        kernel(*args, shares[0])
        for future in others:
            future.result()
