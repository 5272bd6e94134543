"""Out-of-core and distributed fits (issue 14): ratios, peak memory, a cost model.

On the Fashion-MNIST states of the 784-64-32-16-10 teacher at ``--m``
training images (default 60,000), in one run:

* **local**: ``SIMClassifier(alpha=1e-3, kappa=0.95).fit`` on in-memory numpy
  arrays (numba threads of this machine);
* **cluster**: the same fit on a dask ``LocalCluster`` of 1 and of 2 worker
  processes (one thread each): X, the states and the logits as dask arrays
  persisted on the workers first (the data live there; the persist time is
  reported apart) and sksim's kernels loaded there by a small fit, the Gram
  sums reduced on the workers, the row solves in row batches on the workers
  under ``joblib.parallel_backend("dask")``;
  ratio = local time / cluster time, and the largest coefficient difference;
* **memory**: the numpy allocations (tracemalloc peak) of the in-memory fit
  and of the same fit on ``numpy.memmap`` files (chunks of 32 MiB);
* **model**: a cost model of a fit on N workers, calibrated on this machine's
  single-thread fit split into a part per sample (Gram reductions, the output
  stage's equilibrium) and a part per row (the state rows' solve timed alone)
  and an assumed network (``--bandwidth`` bytes/s, ``--latency`` s):
  ``T(N) = t_gram m / N + t_rows ceil(rows / N) + comm(N)`` with ``comm(N)``
  the d x d Gram partial of each worker merged in a tree (log2 N rounds of
  ``8 d^2`` bytes), the Gram scattered to the N workers (a tree broadcast,
  log2 N rounds) and the coefficient rows sent back (``8 d rows`` bytes),
  each round paying the latency. It predicts the speedup ``T(1) / T(N)`` for
  N = 1..64 and several d and m (plotted to ``distributed_model.png``) and is
  checked against the measured 1- and 2-worker times (on this 2-core machine
  the 2 workers share the cores the local fit uses).

Run:  python benchmarks/bench_distributed.py            (m = 60,000)
      python benchmarks/bench_distributed.py --quick    (smoke run, m = 5,000)
Writes benchmarks/results/distributed_m<m>.json (and the plot next to it).
"""

import math
import os
import tempfile
import time
import tracemalloc
import warnings

import numpy as np

import _common as C

N_WORKERS = range(1, 65)


def parse_args():
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=60000)
    parser.add_argument("--chunk-rows", type=int, default=5000,
                        help="rows per dask block")
    parser.add_argument("--bandwidth", type=float, default=1.25e9,
                        help="network bytes per second of the cost model (10 Gbit/s)")
    parser.add_argument("--latency", type=float, default=1e-3,
                        help="seconds per communication round of the cost model")
    parser.set_defaults(repeats=1)
    args = parser.parse_args()
    if args.quick:
        args.m, args.chunk_rows = 5000, 1000
    return args


def fit(X, y, states, logits):
    """The benchmarks' fit (``_common.fit_sim``), quiet: dask warns about the
    numpy arrays it wraps into graphs here on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return C.fit_sim(X, y, states, logits)


def coef(model):
    return np.hstack([model.A_.toarray(), model.B_.toarray()])


def cluster_fit(n_workers, X, y, Z, logits, chunk_rows):
    """(persist seconds, fit seconds, model) on a LocalCluster of n_workers."""
    import dask
    import dask.array as da
    import joblib
    from distributed import Client, LocalCluster, wait

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        start = time.perf_counter()
        arrays = [da.from_array(a, chunks=(chunk_rows,) + a.shape[1:]) for a in (X, Z, logits)]
        arrays = client.persist(arrays)
        wait(arrays)
        persist = time.perf_counter() - start
        with joblib.parallel_backend("dask"), dask.config.set(scheduler=client):
            # load sksim's compiled kernels in the fresh worker processes (numba's
            # cache: seconds per process), as any long-running cluster has
            fit(*[a[:500] for a in (arrays[0], y, arrays[1], arrays[2])])
            start = time.perf_counter()
            model = fit(arrays[0], y, arrays[1], arrays[2])
            seconds = time.perf_counter() - start
    return persist, seconds, model


def peak_numpy_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def memory(X, y, Z, logits):
    """Peak numpy allocations of the in-memory fit and of the memmap fit."""
    folder = tempfile.mkdtemp(prefix="sksim_bench_")
    maps = []
    for name, array in (("X", X), ("Z", Z), ("logits", logits)):
        path = os.path.join(folder, f"{name}.npy")
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=array.shape)
        out[:] = array
        out.flush()
        del out
        maps.append(np.load(path, mmap_mode="r"))
    in_memory = peak_numpy_bytes(lambda: fit(X, y, Z, logits))
    start = time.perf_counter()
    out_of_core = peak_numpy_bytes(lambda: fit(maps[0], y, maps[1], maps[2]))
    seconds = time.perf_counter() - start
    d = X.shape[1] + Z.shape[1]
    for name in ("X", "Z", "logits"):
        os.remove(os.path.join(folder, f"{name}.npy"))
    os.rmdir(folder)
    return {"in_memory_peak_bytes": in_memory, "memmap_peak_bytes": out_of_core,
            "memmap_fit_seconds_traced": seconds, "gram_bytes": 8 * d * d,
            "data_bytes": 8 * X.shape[0] * (X.shape[1] + Z.shape[1] + logits.shape[1]),
            "what": "tracemalloc peak of numpy allocations during fit (numba's solver "
                    "workspace and the memmap page cache are not included)"}


def calibrate(X, y, Z, logits):
    """Single-thread seconds of the fit on this machine, split into a part per
    sample (the Gram reductions of both stages and the equilibrium of the
    output stage) and a part per row: the whole fit timed on one thread, the
    state rows' solve timed alone, the output rows counted at the state rows'
    cost per row."""
    import numba
    from threadpoolctl import threadpool_limits

    from sksim import streaming as st
    from sksim.solvers import solve_rows

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(1):
            start = time.perf_counter()
            fit(X, y, Z, logits)
            whole = time.perf_counter() - start
            recipe = st.ChunkRecipe(None, None, "outputs", None, logits.shape[1])
            source = st.ArraySource(X, np.zeros(len(X)), Z, logits)
            problem = source.reduce(lambda *chunk: st.state_partial(recipe, True, *chunk),
                                    st.merge_accumulators).finish()
            n_states = Z.shape[1]
            start = time.perf_counter()
            solve_rows(problem.gram, problem.correlations, problem.target_sq,
                       n_bounded=n_states, bound=C.KAPPA, l1=C.ALPHA, tol=1e-6,
                       max_iter=1000, solver="homotopy")
            rows = time.perf_counter() - start
    finally:
        numba.set_num_threads(threads)
    n_rows = n_states + logits.shape[1]
    per_row = rows / n_states
    return {"whole_fit_one_thread_seconds": whole, "state_rows_seconds": rows,
            "gram_seconds_per_sample": max(0.0, whole - per_row * n_rows) / len(X),
            "rows_seconds_per_row": per_row, "n_rows": n_rows,
            "d": X.shape[1] + Z.shape[1]}


def predicted_seconds(n, *, m, d, n_rows, cal, bandwidth, latency):
    rounds = math.ceil(math.log2(n)) if n > 1 else 0
    gram_bytes = 8.0 * d * d
    compute = (cal["gram_seconds_per_sample"] * m / n
               + cal["rows_seconds_per_row"] * math.ceil(n_rows / n))
    communication = 0.0
    if n > 1:
        communication = (2 * rounds * (gram_bytes / bandwidth + latency)  # merge + scatter
                         + 8.0 * d * n_rows / bandwidth + latency)
    return compute + communication


def model_curves(cal, args, m):
    curves = {}
    for d_scale, m_scale in ((1, 1), (1, 10), (4, 1), (4, 10), (16, 10)):
        d, rows = cal["d"] * d_scale, cal["n_rows"] * d_scale
        key = f"d={d},m={m * m_scale}"
        params = {"m": m * m_scale, "d": d, "n_rows": rows, "bandwidth": args.bandwidth,
                  "latency": args.latency}
        # per-row cost grows with d (the support), per-sample cost with d^2
        scaled = {"gram_seconds_per_sample": cal["gram_seconds_per_sample"] * d_scale ** 2,
                  "rows_seconds_per_row": cal["rows_seconds_per_row"] * d_scale ** 2}
        one = predicted_seconds(1, cal=scaled, **params)
        speedup = [one / predicted_seconds(n, cal=scaled, **params) for n in N_WORKERS]
        best = int(np.argmax(speedup))
        # where it stops scaling: the first N (up to 4096) at which half the
        # workers' time is overhead, and the N of the largest speedup
        wide = [(n, one / predicted_seconds(n, cal=scaled, **params)) for n in range(1, 4097)]
        half = next((n for n, value in wide if value < 0.5 * n), None)
        peak_n, peak = max(wide, key=lambda item: item[1])
        curves[key] = {"speedup": speedup, "best_n": best + 1, "best_speedup": speedup[best],
                       "speedup_at_64": speedup[-1], "seconds_at_1": one,
                       "half_efficiency_n": half, "peak_n_up_to_4096": peak_n,
                       "peak_speedup_up_to_4096": peak}
    return curves


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, curve in curves.items():
        ax.plot(list(N_WORKERS), curve["speedup"], label=key)
    ax.plot(list(N_WORKERS), list(N_WORKERS), "k:", label="linear")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("workers N")
    ax.set_ylabel("predicted speedup T(1) / T(N)")
    ax.set_title("SIM fit on N workers (cost model)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    args = parse_args()
    log = C.log
    widths = C.WIDTHS["64-32-16"]
    data, teacher, teacher_info = C.prepared_teacher(widths, args.data_home)
    X, y, Z, logits = C.recorded_states(teacher, widths, data, args.m)
    X = np.ascontiguousarray(X, dtype=np.float64)
    result = {"m": args.m, "chunk_rows": args.chunk_rows, "n_features": X.shape[1],
              "n_states": Z.shape[1]}

    start = time.perf_counter()
    local = fit(X, y, Z, logits)
    result["local_seconds"] = time.perf_counter() - start
    log(f"local fit: {result['local_seconds']:.2f} s")
    result["cluster"] = {}
    for n_workers in (1, 2):
        persist, seconds, model = cluster_fit(n_workers, X, y, Z, logits, args.chunk_rows)
        result["cluster"][n_workers] = {
            "persist_seconds": persist, "fit_seconds": seconds,
            "local_over_cluster": result["local_seconds"] / seconds,
            "max_abs_coef_diff_vs_local": float(np.abs(coef(model) - coef(local)).max()),
            "max_abs_output_coef_diff_vs_local": float(abs(model.C_ - local.C_).max()),
            "a_inf_norm": float(np.abs(model.A_).sum(axis=1).max())}
        log(f"{n_workers}-worker cluster: fit {seconds:.2f} s (persist {persist:.2f} s), "
            f"local/cluster {result['local_seconds'] / seconds:.2f}, coef diff "
            f"{result['cluster'][n_workers]['max_abs_coef_diff_vs_local']:.1e}")

    result["memory"] = memory(X, y, Z, logits)
    mem = result["memory"]
    log(f"peak numpy allocations: in memory {mem['in_memory_peak_bytes'] / 2**20:.1f} MiB, "
        f"memmap {mem['memmap_peak_bytes'] / 2**20:.1f} MiB (Gram "
        f"{mem['gram_bytes'] / 2**20:.1f} MiB, data {mem['data_bytes'] / 2**20:.1f} MiB)")

    cal = calibrate(X, y, Z, logits)
    result["model"] = {"calibration": cal, "bandwidth_bytes_per_s": args.bandwidth,
                       "latency_s": args.latency}
    params = {"m": args.m, "d": cal["d"], "n_rows": cal["n_rows"],
              "bandwidth": args.bandwidth, "latency": args.latency}
    result["model"]["check"] = {
        n: {"predicted_seconds": predicted_seconds(n, cal=cal, **params),
            "measured_seconds": result["cluster"][n]["fit_seconds"]} for n in (1, 2)}
    result["model"]["curves"] = model_curves(cal, args, args.m)
    for key, curve in result["model"]["curves"].items():
        log(f"model {key}: speedup at 64 workers {curve['speedup_at_64']:.1f}; efficiency "
            f"below 50% from N = {curve['half_efficiency_n']}; largest speedup "
            f"{curve['peak_speedup_up_to_4096']:.0f} at N = {curve['peak_n_up_to_4096']}")
    for n, check in result["model"]["check"].items():
        log(f"model check N={n}: predicted {check['predicted_seconds']:.2f} s, measured "
            f"{check['measured_seconds']:.2f} s")
    payload = C.header(args)
    payload["teacher"] = teacher_info
    payload["result"] = result
    path = C.write_json(f"distributed_m{args.m}", payload, args.output, quick=args.quick)
    plot(result["model"]["curves"], path.with_suffix(".png"))


if __name__ == "__main__":
    main()
