"""A one-time notice that numba is compiling sksim's kernels.

The first fit in a fresh install compiles the kernels; numba caches them
next to the sources (or in ``NUMBA_CACHE_DIR``), so later runs start at
once. Without the notice that first minute looks like a hang.
:data:`COMPILE_TIME` is the one statement of how long it takes (the README
and the quick start refer to this notice rather than repeat it).

The notice comes at the start of a fit (:func:`announce_compilation`, before
the embedded teacher trains, which takes seconds on its own) when the
kernels of a default fit are not cached, and otherwise right before the
first sksim kernel numba does compile in this process (a listener on
numba's compile events: a solver the default fit does not use, a changed
source, another CPU), so it is always the first thing said about
compiling, and said once.
"""

import pickle
import sys

from numba.core import event

# measured: the cold quick start (fresh numba cache, 2 cores, both busy with
# other jobs) fitted in 60 s (its notice after 3.7 s) against 20-30 s warm,
# and 81 s before the kernels left prange (issue 26); 7 s warm on a quieter day
COMPILE_TIME = "about a minute on two cores"
_announced = False


def _notify():
    global _announced
    if _announced:
        return
    _announced = True
    print(f"sksim: compiling the numba kernels on first use ({COMPILE_TIME}); they "
          "are cached, so later runs start at once.", file=sys.stderr, flush=True)


def is_cached(kernel):
    """Whether numba's disk cache holds a current entry for ``kernel`` (a
    ``cache=True`` dispatcher): its index file exists, was written by this
    numba for this source file, and lists at least one compiled signature.

    Reads numba's own cache record (``Dispatcher._cache``, private), so it
    finds the index wherever numba's locator put it (``NUMBA_CACHE_DIR``,
    ``__pycache__`` or the user-wide fallback); if that record is not
    there (another numba), it says True and leaves the notice to the
    compile listener.
    """
    try:
        index = kernel._cache._cache_file._load_index()
    except (AttributeError, OSError, EOFError, ValueError, pickle.UnpicklingError):
        return True
    return bool(index)


def _fit_kernels(path):
    """The numba entry points a default fit compiles: the homotopy for the
    kappa-bounded state rows and the equilibrium (refitted outputs,
    predictions); with ``path`` also the homotopy that follows a grid of
    alphas (:func:`sksim.sim_path`, the CV estimators)."""
    from .equilibrium import _equilibrium_kernel
    from .homotopy import homotopy_path_kernel, homotopy_rows_kernel

    kernels = (homotopy_rows_kernel, _equilibrium_kernel)
    return kernels + (homotopy_path_kernel,) if path else kernels


def announce_compilation(path=False):
    """At the start of a fit: say once per process, on stderr, that numba is
    about to compile, when the kernels of a default fit are not cached.

    Parameters
    ----------
    path : bool, default=False
        The fit follows a grid of alphas (its kernel is checked too).

    Any other compile of an sksim kernel is announced (once) right before
    it starts, by the compile listener.
    """
    if not _announced and not all(is_cached(kernel) for kernel in _fit_kernels(path)):
        _notify()


class _CompileListener(event.Listener):
    """Says the notice when numba starts compiling a function of sksim (an
    actual compile: cache hits fire no event)."""

    def on_start(self, ev):
        dispatcher = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
        if module.startswith("sksim."):
            _notify()

    def on_end(self, ev):
        pass


event.register("numba:compile", _CompileListener())
