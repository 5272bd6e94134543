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
  smallest alpha against one homotopy solve at that alpha;
* the whole fit: ``SIMClassifier.fit`` on the recorded states and logits at
  alpha = 1e-3 with ``solver="auto"`` (the default) and ``"cd"``, over GEMM;
* cvxpy + Clarabel on ``--cvxpy-rows`` constrained rows at alpha = 1e-3
  (explicit centred design), per row against the homotopy's time per row;
* target scale: ``make_regression`` (y std ~211) fitted by ``SIMRegressor``
  with the raw and the standardised target, (a) on the states of one teacher
  (the scale of the output rows alone) and (b) each with its own teacher (what
  a user running the default gets), both solvers.

Coordinate descent is not run below ``--cd-min-alpha`` (at alpha 3e-4 it did
not finish in 6 minutes in an earlier round). Breakpoints per row (median,
max) and how many rows fell back to coordinate descent are reported.

Run:  python benchmarks/bench_homotopy.py                (m = 5000)
      python benchmarks/bench_homotopy.py --quick        (smoke run, m = 1000)
Writes benchmarks/results/homotopy_m<m>.json.
"""

import functools
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
    parser.add_argument("--cd-min-alpha", type=float, default=1e-3)
    parser.add_argument("--cvxpy-rows", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["alphas", "path", "fit", "cvxpy", "scale"])
    args = parser.parse_args()
    if args.quick:
        args.m, args.repeats, args.n_path, args.cvxpy_rows = 1000, 1, 5, 1
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
    from sksim.design import centred_gram_problem
    from sksim.solvers import solve_rows

    args = parse_args()
    log = C.log
    widths = C.WIDTHS[args.widths]
    data, teacher, _ = C.prepared_teacher(widths, args.data_home)
    X, y, Z, logits = C.recorded_states(teacher, widths, data, args.m)
    X64 = np.ascontiguousarray(X, dtype=np.float64)
    W = C.state_design(X64, Z)
    n_states = Z.shape[1]
    gram, corr, target_sq, design_mean, state_mean = centred_gram_problem(W, Z, True)
    result = {**C.header(args), "m": args.m, "n_states": n_states,
              "design_shape": list(W.shape)}
    gemm, _ = C.timed(functools.partial(C.design_gemm, W), 7, warmup=1)
    result["gemm"] = C.summary(gemm)
    unit = result["gemm"]["median_s"]
    log(f"m={args.m}: {n_states} rows, {W.shape[1]} columns, GEMM {unit:.4f} s")
    # compile outside the timings
    solve_rows(gram[:5, :5], corr[:2, :5], target_sq[:2], n_bounded=3, bound=C.KAPPA,
               l1=1e-2, solver="homotopy")
    problem = (gram, corr, target_sq, n_states)
    if "alphas" not in args.skip:
        result["alphas"] = alpha_section(problem, unit, args, log)
    if "path" not in args.skip:
        result["path"] = path_section(problem, args, log)
    if "fit" not in args.skip:
        result["fit"] = fit_section(X64, y, Z, logits, unit, args, log)
    if "cvxpy" not in args.skip:
        result["cvxpy"] = cvxpy_section(problem, W - design_mean, Z - state_mean, args, log)
    del W
    if "scale" not in args.skip:
        result["scale"] = scale_section(args, log)
    C.write_json(f"homotopy_m{args.m}", result, args.output, args.quick)


def alpha_section(problem, unit, args, log):
    """CD and the homotopy on the bounded and the free rows at each alpha,
    lars_path_gram on the free rows."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import lars_path_gram

    from sksim.solvers import solve_rows

    gram, corr, target_sq, n_states = problem
    out = {}
    for alpha in args.alphas:
        entry = {}
        for bounded in (True, False):
            options = dict(n_bounded=n_states, bound=C.KAPPA) if bounded else {}
            times, runs = {}, {}
            solvers = ("cd", "homotopy") if alpha >= args.cd_min_alpha else ("homotopy",)
            for solver in solvers:
                times[solver], runs[solver] = C.timed(
                    lambda s=solver: solve_rows(gram, corr, target_sq, l1=alpha, tol=1e-6,
                                                max_iter=100_000, solver=s, **options),
                    args.repeats)
            lower = np.max([runs[s].objective - runs[s].duality_gap for s in runs], axis=0)
            part = {s: {**summarise(runs[s], times[s], lower),
                        "over_gemm": float(np.median(times[s]) / unit)}
                    for s in runs}
            if "cd" in runs:
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
            cd_text = f"{part['cd']['median_s']:.2f} s" if "cd" in part else "not run"
            log(f"alpha {alpha:g} {'bounded' if bounded else 'free'}: cd {cd_text}, "
                f"homotopy {part['homotopy']['median_s']:.2f} s"
                + (f", lars_path_gram {part['lars_path_gram']['seconds']:.2f} s"
                   if not bounded else ""))
        out[f"{alpha:g}"] = entry
    return out


def path_section(problem, args, log):
    """solve_rows_path over the grid against one solve at its smallest alpha."""
    from sksim.solvers import solve_rows, solve_rows_path

    gram, corr, target_sq, n_states = problem
    smallest = min(args.alphas)
    grid = np.geomspace(1e-1, smallest, args.n_path)
    bounded = dict(n_bounded=n_states, bound=C.KAPPA)
    single_times, _ = C.timed(lambda: solve_rows(gram, corr, target_sq, l1=smallest,
                                                 solver="homotopy", **bounded),
                              args.repeats)
    path_times, _ = C.timed(lambda: solve_rows_path(gram, corr, target_sq, grid,
                                                    **bounded), args.repeats)
    out = {**C.summary(path_times), "n_alphas": args.n_path, "alphas": grid.tolist(),
           "single_smallest_alpha": C.summary(single_times),
           "over_single_smallest_alpha": float(np.median(path_times)
                                               / np.median(single_times))}
    log(f"path of {args.n_path} alphas: {np.median(path_times):.2f} s "
        f"({out['over_single_smallest_alpha']:.2f}x one solve at {smallest:g})")
    return out


def fit_section(X64, y, Z, logits, unit, args, log):
    """The whole SIMClassifier.fit at alpha = 1e-3, each solver, over GEMM."""
    out = {}
    for solver in ("auto", "cd"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            times, est = C.timed(lambda s=solver: C.fit_sim(X64, y, Z, logits, solver=s),
                                 args.repeats)
        gaps = np.concatenate([est.state_duality_gaps_ / est.state_objectives_,
                               est.output_duality_gaps_ / est.output_objectives_])
        out[solver] = {**C.summary(times), "over_gemm": float(np.median(times) / unit),
                       "max_reported_rel_gap": float(gaps.max()),
                       "n_nonzero": int(est.n_nonzero_),
                       "warnings": sorted({str(w.message)[:200] for w in caught})}
        log(f"fit (solver={solver!r}): {np.median(times):.2f} s = "
            f"{out[solver]['over_gemm']:.1f}x GEMM, max rel gap {gaps.max():.1e}")
    return out


def cvxpy_section(problem, Wc, Zc, args, log):
    """cvxpy + Clarabel on a few constrained rows against the homotopy per row."""
    import cvxpy as cp

    from sksim.solvers import solve_rows

    gram, corr, target_sq, n_states = problem
    times, ours = C.timed(lambda: solve_rows(gram, corr, target_sq, n_bounded=n_states,
                                             bound=C.KAPPA, l1=C.ALPHA,
                                             solver="homotopy"), args.repeats)
    per_row_ours = float(np.median(times) / n_states)
    rows = sorted({int(round(v)) for v in np.linspace(0, n_states - 1, args.cvxpy_rows)})
    records = []
    m = Wc.shape[0]
    for i in rows:
        w = cp.Variable(Wc.shape[1])
        objective = cp.sum_squares(Zc[:, i] - Wc @ w) / (2 * m) + C.ALPHA * cp.norm1(w)
        problem_i = cp.Problem(cp.Minimize(objective), [cp.norm1(w[:n_states]) <= C.KAPPA])
        start = time.perf_counter()
        problem_i.solve(solver=cp.CLARABEL)
        seconds = time.perf_counter() - start
        theirs = float(C.row_objectives(np.asarray(w.value)[None, :], Wc, Zc[:, [i]],
                                        C.ALPHA)[0])
        mine = float(C.row_objectives(ours.coef[[i]], Wc, Zc[:, [i]], C.ALPHA)[0])
        records.append({"row": i, "seconds": seconds, "status": problem_i.status,
                        "objective": theirs, "homotopy_objective": mine,
                        "homotopy_rel_diff": (mine - theirs) / theirs})
        log(f"cvxpy+Clarabel row {i}: {seconds:.2f} s; homotopy objective rel. diff "
            f"{(mine - theirs) / theirs:+.1e}")
    mean = float(np.mean([r["seconds"] for r in records]))
    return {"rows": records, "mean_seconds_per_row": mean,
            "homotopy_seconds_per_row": per_row_ours,
            "homotopy_speedup_per_row": mean / per_row_ours}


def scale_section(args, log):
    """A raw regression target (std ~211) against the standardised one."""
    from sklearn.datasets import make_regression
    from sklearn.frozen import FrozenEstimator
    from sklearn.neural_network import MLPRegressor

    from sksim import SIMRegressor

    X, y = make_regression(n_samples=2000, n_features=20, noise=10.0, random_state=0)
    targets = {"standardised": (y - y.mean()) / y.std(), "raw": y}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teachers = {name: MLPRegressor(hidden_layer_sizes=(64, 32), max_iter=500,
                                       random_state=0).fit(X, target)
                    for name, target in targets.items()}
    out = {"y_std": float(y.std())}
    for setting in ("one_teacher", "own_teacher"):
        for solver in ("auto", "cd"):
            entry = {}
            for name, target in targets.items():
                teacher = teachers["standardised" if setting == "one_teacher" else name]
                make = lambda: SIMRegressor(FrozenEstimator(teacher), solver=solver)  # noqa: B023,E731
                make().fit(X[:200], target[:200])  # compile outside the timing
                times, est = C.timed(lambda: make().fit(X, target), args.repeats)  # noqa: B023
                gaps = np.concatenate([est.state_duality_gaps_ / est.state_objectives_,
                                       est.output_duality_gaps_ / est.output_objectives_])
                entry[name] = {**C.summary(times), "max_reported_rel_gap": float(gaps.max()),
                               "n_nonzero": int(est.n_nonzero_), "n_iter": int(est.n_iter_)}
            entry["raw_over_standardised"] = (entry["raw"]["median_s"]
                                              / entry["standardised"]["median_s"])
            out[f"{setting}_{solver}"] = entry
            log(f"target scale, {setting}, solver={solver!r}: raw "
                f"{entry['raw']['median_s']:.3f} s vs standardised "
                f"{entry['standardised']['median_s']:.3f} s "
                f"({entry['raw_over_standardised']:.2f}x)")
    return out


if __name__ == "__main__":
    main()
