"""A one-time notice that numba is compiling sksim's kernels.

The first fit in a fresh install compiles the kernels before it prints
anything; numba caches them next to the sources (or in ``NUMBA_CACHE_DIR``),
so later runs start at once. Without the notice that first minute looks like
a hang. :data:`COMPILE_TIME` is the one statement of how long it takes (the
README and the quick start refer to this notice rather than repeat it).
"""

import sys
from pathlib import Path

import numba

# measured: the cold quick start (fresh clone, venv and numba cache, 2 cores,
# the other one busy) fitted in 85 s against 7 s warm
COMPILE_TIME = "about a minute and a half on two cores"
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
        print(f"sksim: compiling the numba kernels on first use ({COMPILE_TIME}); they "
              "are cached, so later runs start at once.", file=sys.stderr, flush=True)
