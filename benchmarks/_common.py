"""Shared helpers of the ratio benchmarks (issue 4): data, teacher, cache, timing.

Not part of the package. Every benchmark script imports this module from its
own folder, so run the scripts from anywhere as ``python benchmarks/<name>.py``.

Teacher: the official SIM example's torch MLP (784-64-32-16-10 by default,
ReLU), trained with a fixed seed on the 60,000 Fashion-MNIST training images
(Adam, lr 1e-3, batches of 128): the recipe and cache of ``examples/_shared.py``,
which the examples use too. Its weights and the states recorded with
``TorchBaseline`` on each training subset are cached in ``benchmarks/cache/``
(git-ignored), so repeated runs do not retrain. The subsets are nested: the
first ``m`` entries of one fixed permutation of the training set (seed 0).
"""

import argparse
import datetime
import gc
import hashlib
import importlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / "cache"
RESULTS_DIR = BENCH_DIR / "results"
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))
# examples/_shared.py: the teacher recipe, its cache and the data folder, one
# copy for the examples and the benchmarks (imported once the folder is on the path).
sys.path.insert(0, str(REPO_ROOT / "examples"))
shared = importlib.import_module("_shared")

ALPHA = 1e-3
KAPPA = 0.95
SEED = 0
EPOCHS = 10
N_TRAIN = 60000
WIDTHS = {"64-32-16": (64, 32, 16), "256-128-64": (256, 128, 64)}


# ----------------------------------------------------------------- arguments
def base_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-home", default=shared.default_data_home(),
                        help="folder with fashion-mnist/fashion-mnist-{train,test}.npz "
                             "(default: $SKSIM_DATA, else ../shared/data if it exists, "
                             "else OpenML)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repeats per measurement; medians are reported")
    parser.add_argument("--quick", action="store_true",
                        help="smaller problem and fewer repeats (smoke run)")
    parser.add_argument("--output", default=None,
                        help="JSON file to write (default: benchmarks/results/<name>.json)")
    return parser


# -------------------------------------------------------------- machine info
def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info():
    """What the numbers depend on: CPU, cores, library versions, BLAS, code."""
    import numba
    import scipy
    import sklearn
    import threadpoolctl

    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "scikit-learn": sklearn.__version__,
        "blas": [
            {k: lib.get(k) for k in ("internal_api", "version", "threading_layer",
                                     "architecture", "num_threads", "filepath")}
            for lib in threadpoolctl.threadpool_info()
        ],
    }
    for name in ("torch", "skglm", "cvxpy", "clarabel"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = getattr(module, "__version__", "unknown")
    rows = REPO_ROOT / "sksim" / "solvers" / "rows.py"
    info["git_commit"] = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--", "sksim")
    info["sksim_tree_dirty"] = bool(status) if status is not None else None
    info["rows_py_sha256"] = hashlib.sha256(rows.read_bytes()).hexdigest()[:16]
    return info


# ------------------------------------------------------------------ teacher
def load_data(data_home):
    from sksim.datasets import load_fashion_mnist

    return load_fashion_mnist(data_home)


def teacher_key(widths, seed=SEED, epochs=EPOCHS):
    return shared.teacher_key(784, widths, epochs=epochs, seed=seed)


def log(message):
    """Print at once: a benchmark's progress lines come minutes apart."""
    print(message, flush=True)


def get_teacher(widths, data, *, seed=SEED, epochs=EPOCHS, log=log):
    """The trained torch teacher, from the cache when present.

    Returns (module, info) where info says whether it was trained now, its
    training time and its test accuracy.
    """
    import torch

    teacher = shared.cached_teacher(data.X_train, data.y_train, widths, epochs=epochs,
                                    seed=seed, save_dir=CACHE_DIR, log=log)
    model = teacher.model
    info = {"teacher": f"MLP 784-{'-'.join(map(str, widths))}-10 (ReLU), Adam lr 1e-3, "
                       f"batch 128, {epochs} epochs on 60,000 images, seed {seed}",
            "cache": str(teacher.path.relative_to(REPO_ROOT)),
            "train_seconds": teacher.train_seconds,
            "trained_now": teacher.trained_now}
    with torch.no_grad():
        pred = model(torch.as_tensor(data.X_test)).argmax(1).numpy()
    info["test_accuracy"] = float(np.mean(pred == data.y_test))
    return model, info


def prepared_teacher(widths, data_home):
    """(data, teacher, teacher info) of a benchmark, numba's kernels loaded
    (``warm_up``) so that no timing pays for them."""
    data = load_data(data_home)
    teacher, info = get_teacher(widths, data)
    warm_up(data)
    return data, teacher, info


def subset_indices(m, seed=SEED):
    """First ``m`` entries of one fixed permutation of the training set (nested)."""
    return shared.subset_indices(N_TRAIN, m, seed)


def recorded_states(teacher, widths, data, m, *, seed=SEED, epochs=EPOCHS):
    """(X, y, Z, logits) of the training subset of size m.

    Z and the logits are exactly what ``TorchBaseline(teacher).record(X)``
    returns (the call ``fit`` makes), cached per teacher and m.
    """
    from sksim import TorchBaseline

    index = subset_indices(m, seed)
    X, y = data.X_train[index], data.y_train[index]
    path = CACHE_DIR / f"{teacher_key(widths, seed, epochs)}_states_m{m}.npz"
    if path.is_file():
        with np.load(path) as archive:
            if np.array_equal(archive["index"], index):
                return X, y, archive["states"], archive["logits"]
    states, logits = TorchBaseline(teacher).record(X)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(path, index=index, states=states, logits=logits)
    return X, y, states, logits


# ------------------------------------------------------------------- timing
def timed(fn, repeats, *, warmup=0):
    """Run ``fn`` ``warmup + repeats`` times; return (times, last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def summary(times):
    times = [float(t) for t in times]
    return {"median_s": float(np.median(times)), "min_s": min(times),
            "max_s": max(times), "runs_s": times}


def design_gemm(W):
    """One float64 W^T W (BLAS syrk/gemm via numpy)."""
    return W.T @ W


# --------------------------------------------------------------- objectives
def centred(design, targets):
    """Column-centred copies of the design and the targets."""
    return design - design.mean(axis=0), targets - targets.mean(axis=0)


def row_objectives(coef, Wc, Tc, l1):
    """Objective of every row, with explicit residuals (not via the Gram):
    ``1/(2m) ||t_i - Wc w_i||^2 + l1 ||w_i||_1`` on centred data."""
    m = Wc.shape[0]
    residual = Tc - Wc @ coef.T
    return (np.einsum("ij,ij->j", residual, residual) / (2 * m)
            + l1 * np.abs(coef).sum(axis=1))


def status_kib(field):
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def write_json(name, payload, output=None, quick=False):
    """Write ``results/<name>.json`` (``results/quick/`` for smoke runs, which
    ``report.py`` ignores)."""
    folder = RESULTS_DIR / "quick" if quick else RESULTS_DIR
    path = shared.write_json(Path(output) if output else folder / f"{name}.json", payload)
    print(f"wrote {path}")
    return path


def table(rows, header):
    """A GitHub markdown table as a string."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------ shared pieces
def command_line():
    """The command that produced a result, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO_ROOT)
    except ValueError:
        pass
    return " ".join(["python", str(script), *sys.argv[1:]])


def header(args):
    """The fields every result JSON starts with."""
    return {"command": command_line(), "arguments": vars(args),
            "machine": machine_info(),
            "problem": {"dataset": "Fashion-MNIST", "alpha": ALPHA, "kappa": KAPPA}}


def relu(array):
    return np.maximum(array, 0.0)


def state_design(X64, states):
    """The float64 design ``W = [relu(Z), X]`` of the state rows (as ``fit`` builds it)."""
    return np.hstack([relu(states), X64])


def fit_sim(X64, y, states, logits, **params):
    """``SIMClassifier(alpha=ALPHA, kappa=KAPPA, **params).fit`` on recorded states."""
    from sksim import SIMClassifier

    est = SIMClassifier(alpha=ALPHA, kappa=KAPPA, **params)
    return est.fit(X64, y, states=states, baseline_outputs=logits)


def warm_up(data, n=300):
    """One small fit and equilibrium so that numba's compiled kernels are
    loaded (from its disk cache, or compiled) before anything is timed."""
    import warnings

    rng = np.random.default_rng(0)
    X = np.ascontiguousarray(data.X_train[:n], dtype=np.float64)
    Z = rng.standard_normal((n, 12))
    logits = rng.standard_normal((n, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter is tiny on purpose
        est = fit_sim(X, data.y_train[:n], Z, logits, max_iter=200)
        est.equilibrium(X)
        est.predict(X)


def state_fit_coef(est):
    """``[A B]`` of a fitted estimator as a dense (n_states, n_states + n_features) array."""
    return np.hstack([est.A_.toarray(), est.B_.toarray()])


def relative_excess(objective, reference):
    """``(objective - reference) / reference`` row by row (signed)."""
    reference = np.asarray(reference, dtype=float)
    return (np.asarray(objective, dtype=float) - reference) / np.maximum(reference, 1e-300)


def fmt(value, digits=3):
    """Compact number formatting for tables (``-`` for missing)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    value = float(value)
    if np.isnan(value):
        return "nan"
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.{max(digits - 1, 1)}e}"
    return f"{value:.{digits}g}"
