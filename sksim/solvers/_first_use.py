"""A one-time notice that numba is compiling sksim's kernels.

The first fit in a fresh install compiles the kernels (about a minute on two
cores) before it prints anything; numba caches them next to the sources (or in
``NUMBA_CACHE_DIR``), so later runs start at once. Without the notice that
first minute looks like a hang.
"""

import sys
from pathlib import Path

import numba

_announced = False


def _cache_folder():
    configured = numba.config.CACHE_DIR
    return Path(configured) if configured else Path(__file__).resolve().parent / "__pycache__"


def announce_compilation():
    """Say once per process, on stderr, when the row solver's kernels are not
    cached yet (so this call will compile them)."""
    global _announced
    if _announced:
        return
    _announced = True
    folder = _cache_folder()
    if not folder.is_dir() or not any(folder.rglob("rows.*.nbi")):
        print("sksim: compiling the numba kernels on first use (about a minute); they "
              "are cached, so later runs start at once.", file=sys.stderr, flush=True)
