"""The exact homotopy row solver against coordinate descent and scikit-learn's
LARS-Lasso (issue 12), side by side in one run.

On the state rows of the Fashion-MNIST MLP teacher (784-64-32-16-10, the
centred Gram of ``W = [relu(Z), X]`` as ``SIMClassifier.fit`` builds it), for
each alpha of ``--alphas`` at kappa = 0.95, median of ``--repeats``:

* GEMM: one float64 ``W^T W`` (the unit of the fit targets);
* constrained rows (the kappa bound): ``solve_rows(solver="cd")`` at tol 1e-6
  and ``solve_rows(solver="homotopy")``; the objectives of both are compared
  with the best certified point (largest lower bound ``objective - gap`` of
  either), so "within 1e-6" is checked, not assumed;
* unconstrained rows: the same two solvers and ``lars_path_gram(method="lasso")``
  row by row on the same (uncentred-scaled) Gram, the exact homotopy anchor;
* the path: ``solve_rows_path`` over ``--n-path`` alphas from 1e-1 down to the
  smallest alpha against one homotopy solve at that alpha.

Breakpoints per row (median, max) and how many rows fell back to coordinate
descent are reported.

Run:  python benchmarks/bench_homotopy.py                (m = 5000)
      python benchmarks/bench_homotopy.py --quick        (smoke run, m = 1000)
Writes benchmarks/results/homotopy_m<m>.json.
"""

import time
import warnings

import numpy as np

import _common as C


def parse_args():
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=5000)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e-3, 1e-4])
    parser.add_argument("--n-path", type=int, default=20)
    parser.add_argument("--lars-rows", type=int, default=None,
                        help="rows given to lars_path_gram (default all)")
    parser.add_argument("--widths", default="64-32-16", choices=sorted(C.WIDTHS))
    args = parser.parse_args()
    if args.quick:
        args.m, args.repeats, args.n_path = 1000, 1, 5
    return args


def relative_excess(objective, lower):
    return float(np.max((objective - lower) / np.abs(lower)))


def summarise(rows, seconds, lower):
    return {**C.summary(seconds), "max_rel_excess_over_best_lower_bound":
            relative_excess(rows.objective, lower),
            "max_reported_rel_gap": float(np.max(rows.duality_gap / rows.objective)),
            "n_unconverged": int(np.sum(rows.status != 0)),
            "breakpoints_median": float(np.median(rows.n_breakpoints)),
            "breakpoints_max": int(rows.n_breakpoints.max(initial=0)),
            "rows_by_method": {name: int(np.sum(rows.method == code)) for code, name in
                               ((0, "cd"), (1, "homotopy"), (2, "homotopy_then_cd"))},
            "max_cd_epochs": int(rows.n_iter.max(initial=0))}


def main():
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import lars_path_gram

    from sksim.estimators import _centred_gram_problem
    from sksim.solvers import solve_rows, solve_rows_path

    args = parse_args()
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    widths = C.WIDTHS[args.widths]
    data = C.load_data(args.data_home)
    teacher, _ = C.get_teacher(widths, data, log=log)
    C.warm_up(data)
    X, _, Z, _ = C.recorded_states(teacher, widths, data, args.m)
    W = C.state_design(np.ascontiguousarray(X, dtype=np.float64), Z)
    n_states = Z.shape[1]
    gram, corr, target_sq, _, _ = _centred_gram_problem(W, Z, True)
    result = {**C.header(args), "m": args.m, "n_states": n_states,
              "design_shape": list(W.shape)}
    gemm, _ = C.timed(lambda: C.design_gemm(W), 7, warmup=1)
    result["gemm"] = C.summary(gemm)
    unit = result["gemm"]["median_s"]
    log(f"m={args.m}: {n_states} rows, {W.shape[1]} columns, GEMM {unit:.4f} s")
    # compile outside the timings
    solve_rows(gram[:5, :5], corr[:2, :5], target_sq[:2], n_bounded=3, bound=C.KAPPA,
               l1=1e-2, solver="homotopy")
    result["alphas"] = {}
    for alpha in args.alphas:
        entry = {}
        for bounded in (True, False):
            options = dict(n_bounded=n_states, bound=C.KAPPA) if bounded else {}
            times, runs = {}, {}
            for solver in ("cd", "homotopy"):
                times[solver], runs[solver] = C.timed(
                    lambda s=solver: solve_rows(gram, corr, target_sq, l1=alpha, tol=1e-6,
                                                max_iter=100_000, solver=s, **options),
                    args.repeats)
            lower = np.maximum(runs["cd"].objective - runs["cd"].duality_gap,
                               runs["homotopy"].objective - runs["homotopy"].duality_gap)
            part = {s: {**summarise(runs[s], times[s], lower),
                        "over_gemm": float(np.median(times[s]) / unit)}
                    for s in runs}
            part["homotopy_speedup_over_cd"] = float(np.median(times["cd"])
                                                     / np.median(times["homotopy"]))
            if not bounded:
                rows = range(n_states if args.lars_rows is None else args.lars_rows)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    lars = [lars_path_gram(Xy=corr[i] * args.m, Gram=gram * args.m,
                                           n_samples=args.m, alpha_min=alpha,
                                           method="lasso")[2][:, -1] for i in rows]
                lars_seconds = time.perf_counter() - start
                lars_coef = np.array(lars)
                ours = runs["homotopy"].coef[:len(lars)]
                lars_obj = (0.5 * np.einsum("ij,jk,ik->i", lars_coef, gram, lars_coef)
                            - np.einsum("ij,ij->i", corr[:len(lars)], lars_coef)
                            + 0.5 * target_sq[:len(lars)]
                            + alpha * np.abs(lars_coef).sum(axis=1))
                per_row = np.median(times["homotopy"]) / n_states
                part["lars_path_gram"] = {
                    "rows": len(lars), "seconds": lars_seconds,
                    "max_rel_excess_over_best_lower_bound":
                        relative_excess(lars_obj, lower[:len(lars)]),
                    "max_abs_coef_difference_to_homotopy": float(np.abs(
                        lars_coef - ours).max()),
                    "homotopy_speedup": float(lars_seconds / len(lars) / per_row)}
            entry["bounded" if bounded else "unbounded"] = part
            log(f"alpha {alpha:g} {'bounded' if bounded else 'free'}: cd "
                f"{part['cd']['median_s']:.2f} s, homotopy {part['homotopy']['median_s']:.2f} s"
                + (f", lars_path_gram {part['lars_path_gram']['seconds']:.2f} s"
                   if not bounded else ""))
        result["alphas"][f"{alpha:g}"] = entry
    smallest = min(args.alphas)
    grid = np.geomspace(1e-1, smallest, args.n_path)
    path_times, _ = C.timed(lambda: solve_rows_path(gram, corr, target_sq, grid,
                                                    n_bounded=n_states, bound=C.KAPPA),
                            args.repeats)
    single = result["alphas"][f"{smallest:g}"]["bounded"]["homotopy"]["median_s"]
    result["path"] = {**C.summary(path_times), "n_alphas": args.n_path,
                      "alphas": grid.tolist(),
                      "over_single_smallest_alpha": float(np.median(path_times) / single)}
    log(f"path of {args.n_path} alphas: {np.median(path_times):.2f} s "
        f"({result['path']['over_single_smallest_alpha']:.2f}x one solve at {smallest:g})")
    C.write_json(f"homotopy_m{args.m}", result, args.output, args.quick)


if __name__ == "__main__":
    main()
