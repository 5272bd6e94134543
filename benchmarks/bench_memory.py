"""Peak memory of ``SIMClassifier.fit`` (issue 4, target 4).

How it is measured: each measurement runs in a fresh Python subprocess that
imports sksim, loads the Fashion-MNIST training images and the cached teacher
states of the m-sample subset (no torch import), converts X to the float64
array handed to ``fit``, and runs one small warm-up fit so that numba's
compiled kernels are loaded. Then, with the process at rest:

* ``rss``: the current resident set size (``VmRSS``) is the baseline; the
  kernel's high-water mark ``VmHWM`` is reset (``echo 5 > /proc/self/clear_refs``)
  and read again after ``fit``. Peak of fit = ``VmHWM - baseline``. This counts
  everything the process touches (numpy, numba, BLAS buffers, Python objects).
  Where the reset is not permitted it falls back to ``ru_maxrss - baseline``,
  which underestimates when the peak stays below an earlier high-water mark
  (flagged in the JSON).
* ``tracemalloc``: ``tracemalloc`` peak of traced allocations during ``fit``
  (numpy registers its array buffers with tracemalloc; allocations made inside
  numba kernels are not traced). Run in its own subprocess because tracing
  slows Python down.

Both are compared with ``W.nbytes``, the size of the float64 design
``W = [relu(Z), X]`` (m x (n_states + 784) x 8 bytes); the target is a peak of
at most 2 x W.nbytes. The input arrays (X, Z, logits) already exist before the
baseline and are not counted.

Run:  python benchmarks/bench_memory.py             (m = 60000)
      python benchmarks/bench_memory.py --quick     (smoke run, m = 5000)
Writes benchmarks/results/memory_m<m>.json.
"""

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _common as C


def parse_args():
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=60000)
    parser.add_argument("--widths", default="64-32-16", choices=sorted(C.WIDTHS))
    parser.add_argument("--x-dtype", nargs="+", default=["float64"],
                        choices=["float64", "float32"],
                        help="dtype of X handed to fit (float32: fit's float64 "
                             "conversion is counted too)")
    parser.add_argument("--methods", nargs="+", default=["rss", "tracemalloc"],
                        choices=["rss", "tracemalloc"])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.m = 5000
    return args


def child(args):
    """One measurement (``--child <method>:<dtype>:<output file>``)."""
    method, dtype, output = args.child.split(":", 2)
    from sksim.datasets import load_fashion_mnist

    data = load_fashion_mnist(args.data_home, splits=("train",))
    widths = C.WIDTHS[args.widths]
    index = C.subset_indices(args.m)
    path = C.CACHE_DIR / f"{C.teacher_key(widths)}_states_m{args.m}.npz"
    with np.load(path) as archive:
        assert np.array_equal(archive["index"], index)
        states, logits = archive["states"], archive["logits"]
    X = np.ascontiguousarray(data.X_train[index], dtype=dtype)
    y = data.y_train[index]
    del data
    C.warm_up(_tiny(X, y))
    design_nbytes = X.shape[0] * (states.shape[1] + X.shape[1]) * 8
    gc.collect()
    time.sleep(0.5)
    record = {"method": method, "x_dtype": dtype, "m": args.m,
              "n_states": int(states.shape[1]), "design_nbytes": design_nbytes}
    baseline_kib = C.status_kib("VmRSS")
    record["baseline_rss_bytes"] = baseline_kib * 1024
    if method == "rss":
        try:
            Path("/proc/self/clear_refs").write_text("5")
            record["hwm_reset"] = True
        except OSError:
            record["hwm_reset"] = False
        start = time.perf_counter()
        C.fit_sim(X, y, states, logits)
        record["fit_seconds"] = time.perf_counter() - start
        if record["hwm_reset"]:
            peak_kib = C.status_kib("VmHWM")
        else:
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        record["peak_rss_bytes"] = peak_kib * 1024
        record["peak_bytes"] = max(peak_kib - baseline_kib, 0) * 1024
    else:
        import tracemalloc

        tracemalloc.start()
        tracemalloc.reset_peak()
        start = time.perf_counter()
        C.fit_sim(X, y, states, logits)
        record["fit_seconds"] = time.perf_counter() - start
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        record["peak_bytes"] = peak
        record["retained_bytes"] = current
    record["peak_over_design"] = record["peak_bytes"] / design_nbytes
    Path(output).write_text(json.dumps(record))


class _tiny:
    """The first 300 training samples, shaped like ``load_fashion_mnist``'s Bunch."""

    def __init__(self, X, y):
        self.X_train, self.y_train = X[:300], y[:300]


def main():
    args = parse_args()
    if args.child:
        child(args)
        return
    widths = C.WIDTHS[args.widths]
    data = C.load_data(args.data_home)
    teacher, teacher_info = C.get_teacher(widths, data)
    C.recorded_states(teacher, widths, data, args.m)  # cached for the children
    del data, teacher
    measurements = []
    for dtype in args.x_dtype:
        for method in args.methods:
            with tempfile.TemporaryDirectory() as folder:
                output = os.path.join(folder, "result.json")
                command = [sys.executable, __file__, "--m", str(args.m), "--widths",
                           args.widths, "--child", f"{method}:{dtype}:{output}"]
                if args.data_home:
                    command += ["--data-home", args.data_home]
                subprocess.run(command, check=True)
                record = json.loads(Path(output).read_text())
            measurements.append(record)
            C.log(f"m={args.m} X {dtype} {method}: peak {record['peak_bytes'] / 2**20:.0f} "
                  f"MiB = {record['peak_over_design']:.2f} x W "
                  f"({record['design_nbytes'] / 2**20:.0f} MiB), fit {record['fit_seconds']:.1f} s")
    payload = C.header(args)
    payload["teacher"] = teacher_info
    payload["how"] = __doc__.split("\n\n", 1)[1].split("\n\nRun:")[0]
    payload["result"] = {"m": args.m, "widths": args.widths, "measurements": measurements,
                         "design_nbytes": measurements[0]["design_nbytes"],
                         "max_peak_over_design": max(r["peak_over_design"]
                                                     for r in measurements)}
    C.write_json(f"memory_m{args.m}", payload, args.output, quick=args.quick)


if __name__ == "__main__":
    main()
