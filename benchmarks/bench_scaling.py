"""Scaling of ``SIMClassifier.fit`` (issue 4, target 5).

Fit time (median of ``--repeats``) against the number of training samples m
and against the number of states (teacher widths 64-32-16: 112 states, and
256-128-64: 448 states), with the time of one float64 ``W^T W`` GEMM of the
same design alongside (median of 5). alpha = 1e-3, kappa = 0.95; the teachers
are trained once (10 epochs on the 60,000 training images) and cached in
``benchmarks/cache/``, as are the states recorded on each subset.

Run:  python benchmarks/bench_scaling.py            (m = 5k, 10k, 30k, 60k; both widths)
      python benchmarks/bench_scaling.py --quick    (smoke run, m = 1000, 2000)
Writes benchmarks/results/scaling.json (after every point) and
benchmarks/scaling.png (benchmarks/results/quick/scaling.png for --quick).
"""

import functools
import warnings

import numpy as np

import _common as C


def parse_args():
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, nargs="+", default=[5000, 10000, 30000, 60000])
    parser.add_argument("--widths", nargs="+", default=["64-32-16", "256-128-64"],
                        choices=sorted(C.WIDTHS))
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the plot from the existing JSON")
    args = parser.parse_args()
    if args.quick:
        args.m, args.repeats = [1000, 2000], 1
    return args


def plot(payload, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = payload["result"]["points"]
    widths = sorted({p["widths"] for p in points}, key=lambda w: C.WIDTHS[w])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, width in enumerate(widths):
        rows = sorted((p for p in points if p["widths"] == width), key=lambda p: p["m"])
        m = [p["m"] for p in rows]
        colour = f"C{k}"
        left.loglog(m, [p["fit"]["median_s"] for p in rows], "o-", color=colour,
                    label=f"fit, {width} ({rows[0]['n_states']} states)")
        left.loglog(m, [p["gemm"]["median_s"] for p in rows], "s--", color=colour,
                    alpha=0.6, label=f"one W^T W GEMM, {width}")
    left.set_xlabel("training samples m")
    left.set_ylabel("wall time [s] (median)")
    left.set_title("fit time against m")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    for k, m in enumerate(sorted({p["m"] for p in points})):
        rows = sorted((p for p in points if p["m"] == m), key=lambda p: p["n_states"])
        right.loglog([p["n_states"] for p in rows], [p["fit"]["median_s"] for p in rows],
                     "o-", color=f"C{k + 2}", label=f"fit, m = {m}")
        right.loglog([p["n_states"] for p in rows], [p["gemm"]["median_s"] for p in rows],
                     "s--", color=f"C{k + 2}", alpha=0.6, label=f"GEMM, m = {m}")
    right.set_xlabel("number of states (state rows)")
    right.set_ylabel("wall time [s] (median)")
    right.set_title("fit time against the number of states")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8)
    machine = payload["machine"]
    fig.suptitle(f"SIMClassifier.fit on Fashion-MNIST teacher states, alpha={C.ALPHA:g}, "
                 f"kappa={C.KAPPA:g} ({machine['cpu_model']}, "
                 f"{machine['cpus_available']} CPUs)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    import json

    args = parse_args()
    png = (C.RESULTS_DIR / "quick" if args.quick else C.BENCH_DIR) / "scaling.png"
    if args.plot_only:
        folder = C.RESULTS_DIR / "quick" if args.quick else C.RESULTS_DIR
        plot(json.loads((folder / "scaling.json").read_text()), png)
        return
    data = C.load_data(args.data_home)
    C.warm_up(data)
    payload = C.header(args)
    payload["teachers"] = {}
    points = []
    payload["result"] = {"points": points}
    for width in args.widths:
        widths = C.WIDTHS[width]
        teacher, info = C.get_teacher(widths, data)
        payload["teachers"][width] = info
        for m in args.m:
            X, y, Z, logits = C.recorded_states(teacher, widths, data, m)
            X64 = np.ascontiguousarray(X, dtype=np.float64)
            W = C.state_design(X64, Z)
            gemm, _ = C.timed(functools.partial(C.design_gemm, W), 5, warmup=1)
            shape = W.shape
            del W
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fit, est = C.timed(lambda: C.fit_sim(X64, y, Z, logits), args.repeats)
            point = {"widths": width, "m": m, "n_states": int(Z.shape[1]),
                     "design_shape": list(shape), "gemm": C.summary(gemm),
                     "fit": C.summary(fit), "n_iter": int(est.n_iter_),
                     "max_rel_gap": float(np.max(est.state_duality_gaps_
                                                 / est.state_objectives_)),
                     "warnings": sorted({str(w.message)[:300] for w in caught})}
            point["fit_over_gemm"] = point["fit"]["median_s"] / point["gemm"]["median_s"]
            points.append(point)
            C.log(f"{width} m={m}: fit {point['fit']['median_s']:.2f} s, GEMM "
                  f"{point['gemm']['median_s']:.4f} s, ratio {point['fit_over_gemm']:.0f}")
            C.write_json("scaling", payload, args.output, quick=args.quick)
    plot(payload, png)


if __name__ == "__main__":
    main()
