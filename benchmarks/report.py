"""The benchmark result tables, from benchmarks/results/*.json.

:func:`sections` builds every table by name (targets, fit, anchors, predict,
predict_structure, memory, scaling, homotopy, homotopy_fit, target_scale,
conv_predict, distributed, machine); the documentation's benchmarks page
(``docs/benchmarks.md``) includes them, generated at every build, and ``main``
prints them. Smoke-run results (benchmarks/results/quick/) are ignored.

Run:  python benchmarks/report.py
"""

import json

import _common as C

ACCURACY = 1e-6
TARGET_M = [5000, 60000]  # the sizes the targets name


def load(pattern):
    out = []
    for path in sorted(C.RESULTS_DIR.glob(pattern)):
        payload = json.loads(path.read_text())
        payload["_file"] = path.name
        out.append(payload)
    return out


def fmt_s(seconds):
    if seconds is None:
        return "-"
    return f"{seconds:.3g} s" if seconds >= 0.01 else f"{seconds * 1e3:.3g} ms"


def verdict(ok):
    if isinstance(ok, str):
        return ok
    return "pending" if ok is None else ("**met**" if ok else "**not met**")


def runs(summary):
    n = len(summary["runs_s"])
    return f"{n} run" + ("s" if n > 1 else "")


def by_m(payloads):
    return sorted(payloads, key=lambda p: p["result"]["m"])


# ------------------------------------------------------------------- tables
def fit_table(fits):
    rows = []
    for p in by_m(fits):
        r = p["result"]
        ratios = r["ratios"]
        rows.append([
            f"{r['m']:,}", f"{r['design_shape'][0]:,} x {r['design_shape'][1]}",
            fmt_s(r["gemm"]["median_s"]),
            f"{fmt_s(r['fit']['median_s'])} ({runs(r['fit'])})",
            f"**{ratios['fit_over_gemm']:.0f}**",
            C.fmt(r["fit_accuracy"]["max_rel_excess"]),
            fmt_s(r["state_rows"]["median_s"]),
            f"{ratios['state_rows_over_gemm']:.0f}",
            fmt_s(r["reference"]["seconds"]),
            C.fmt(r["reference"]["max_rel_gap"]),
        ])
    return C.table(rows, ["m", "design W", "GEMM W^T W", "fit (median)", "fit / GEMM "
                          "(target <= 20)", "fit: worst state-row rel. excess over "
                          "reference (target <= 1e-6)", "state rows alone",
                          "state rows / GEMM", "reference solve (tol 1e-10)",
                          "reference max rel. gap"])


def _runs_text(runs):
    return "; ".join(f"tol {run['tol']:g}: {fmt_s(run['seconds'])}, "
                     f"{C.fmt(run['max_rel_excess'])}" for run in runs)


def ratio_text(ratios, key):
    if ratios.get(key) is not None:
        return C.fmt(ratios[key])
    bound = ratios.get(key + "_lower_bound")
    return f"> {C.fmt(bound)} (lower bound)" if bound is not None else "-"


def anchor_table(fits):
    rows = []
    for p in by_m(fits):
        r = p["result"]
        ratios = r["ratios"]
        free = r["unconstrained"]["sksim"]
        m = f"{r['m']:,}"
        rows.append([m, "sksim `solve_rows` (bound=inf, tol 1e-6)",
                     fmt_s(free["median_s"]), C.fmt(free["max_rel_excess"]), "1", "-"])
        sk = r["unconstrained"].get("sklearn")
        if sk:
            rows.append([m, "scikit-learn `Lasso(precompute=Gram)`, 2-D target",
                         fmt_s(sk["seconds_to_accuracy"]) if sk["seconds_to_accuracy"]
                         else "not reached", _runs_text(sk["runs"]),
                         ratio_text(ratios, "sklearn_over_sksim"), ">= 30"])
        sg = r["unconstrained"].get("skglm")
        if sg:
            for name, label in (("gram_cd", "skglm `GramCD` loop, shared Gram, per row"),
                                ("lasso", "skglm `Lasso` (AndersonCD), per row")):
                a = sg[name]
                if a.get("extrapolated"):
                    label += " (time extrapolated from sampled rows)"
                rows.append([m, label, fmt_s(a["seconds_to_accuracy"])
                             if a["seconds_to_accuracy"] else "not reached",
                             _runs_text(a["runs"]),
                             ratio_text(ratios, f"skglm_{name}_over_sksim"), "> 1"])
        cv = r.get("cvxpy")
        if cv:
            diffs = ", ".join(f"{row['rel_diff_vs_reference']:+.1e}" for row in cv["rows"])
            rows.append([m, f"cvxpy + Clarabel, constrained, per row ({len(cv['rows'])} "
                            f"rows measured, total **extrapolated** to {r['n_states']})",
                         f"{fmt_s(cv['mean_seconds_per_row'])}/row, "
                         f"{fmt_s(cv['extrapolated_total_seconds'])} total",
                         f"objective vs reference: {diffs}",
                         f"{C.fmt(ratios['cvxpy_extrapolated_over_fit'])} vs full fit "
                         f"({C.fmt(ratios['cvxpy_extrapolated_over_state_rows'])} vs "
                         f"state rows)", ">= 1000"])
    return C.table(rows, ["m", "solver (all 112 state rows unless said)",
                          "time to worst-row rel. excess <= 1e-6",
                          "runs: time, worst-row rel. excess", "ratio to sksim",
                          "target"])


def predict_table(preds):
    rows = []
    for p in by_m(preds):
        r = p["result"]
        rows.append([f"{r['m']:,}", r["n_test"],
                     fmt_s(r["forward_float64"]["median_s"]),
                     fmt_s(r["forward_float32"]["median_s"]),
                     fmt_s(r["equilibrium"]["median_s"]),
                     C.fmt(r["equilibrium"]["max_residual"]),
                     "-" if not r.get("equilibrium_absolute") else
                     f"{fmt_s(r['equilibrium_absolute']['median_s'])} (tol "
                     f"{r['equilibrium_absolute']['equilibrium_tol']:.2g}, max residual "
                     f"{C.fmt(r['equilibrium_absolute']['max_residual'])})",
                     fmt_s(r["predict"]["median_s"]),
                     f"{r['ratios']['equilibrium_over_forward64']:.2f}",
                     C.fmt(r["ratios"].get("equilibrium_absolute_over_forward64")),
                     f"{r['ratios']['equilibrium_over_forward32']:.2f}",
                     f"{r['ratios']['predict_over_forward64']:.2f}",
                     f"{r['test_accuracy']['teacher']:.4f} / {r['test_accuracy']['sim']:.4f}"])
    return C.table(rows, ["fit on m", "test images", "teacher forward, numpy float64",
                          "float32", "equilibrium (equilibrium_tol 1e-8, relative)",
                          "max abs. residual", "equilibrium to abs. residual 1e-8",
                          "predict", "equilibrium / forward64",
                          "abs.-1e-8 equilibrium / forward64 (target <= 2)",
                          "equilibrium / forward32", "predict / forward64",
                          "test accuracy teacher / SIM"])


def predict_structure_table(preds):
    """Implicit against feed-forward structure, numpy predict and to_torch
    (bench_predict.py, issue 13)."""
    rows = []
    for p in by_m(preds):
        r = p["result"]
        ff = r.get("feedforward")
        if not ff:
            continue
        f64 = r["forward_float64"]["median_s"]
        torch_times = r.get("to_torch", {})

        def torch_ratio(name, torch_times=torch_times, f64=f64):
            entry = torch_times.get(name)
            return f"{entry['median_s'] / f64:.2f}x" if entry else "-"

        rows.append([f"{r['m']:,}", "implicit", f"{ff['implicit_n_nonzero']:,}",
                     f"{r['test_accuracy']['sim']:.4f}", fmt_s(r["equilibrium"]["median_s"]),
                     fmt_s(r["predict"]["median_s"]),
                     f"**{r['ratios']['predict_over_forward64']:.2f}x**",
                     torch_ratio("implicit"), torch_ratio("implicit_jacobi")])
        rows.append([f"{r['m']:,}", "feedforward", f"{ff['n_nonzero']:,}",
                     f"{ff['test_accuracy']:.4f}", fmt_s(ff["equilibrium"]["median_s"]),
                     fmt_s(ff["predict"]["median_s"]),
                     f"**{ff['predict']['median_s'] / f64:.2f}x**",
                     torch_ratio("feedforward"), "-"])
    return C.table(rows, ["fit on m", "structure", "nonzeros", "test accuracy",
                          "equilibrium (tol 1e-8)", "predict",
                          "predict / teacher forward64 (feedforward target <= 2)",
                          "to_torch forward / forward64",
                          "Jacobi equilibrium (non-CPU path) / forward64"])


def distributed_table(payloads):
    """Local against LocalCluster fits, memory and the cost model (bench_distributed.py)."""
    rows = []
    for p in by_m(payloads):
        r = p["result"]
        mem = r["memory"]
        for n, c in sorted(r["cluster"].items(), key=lambda item: int(item[0])):
            check = r["model"]["check"][str(n)] if str(n) in r["model"]["check"] \
                else r["model"]["check"][n]
            rows.append([f"{r['m']:,}", n, fmt_s(r["local_seconds"]),
                         fmt_s(c["fit_seconds"]), f"{c['local_over_cluster']:.2f}",
                         fmt_s(c["persist_seconds"]), f"{c['max_abs_coef_diff_vs_local']:.1e}",
                         fmt_s(check["predicted_seconds"])])
        memory = C.table([[f"{r['m']:,}", f"{mem['data_bytes'] / 2**20:.0f} MiB",
                           f"{mem['gram_bytes'] / 2**20:.1f} MiB",
                           f"{mem['in_memory_peak_bytes'] / 2**20:.0f} MiB",
                           f"{mem['memmap_peak_bytes'] / 2**20:.0f} MiB"]],
                         ["m", "data (X, states, logits)", "Gram", "in-memory fit peak",
                          "memmap fit peak"])
        curves = C.table([[key, f"{c['speedup'][1]:.2f}", f"{c['speedup'][7]:.1f}",
                           f"{c['speedup_at_64']:.1f}", c.get("half_efficiency_n", "-"),
                           f"{c.get('peak_speedup_up_to_4096', float('nan')):.0f} at N = "
                           f"{c.get('peak_n_up_to_4096', '-')}"]
                          for key, c in r["model"]["curves"].items()],
                         ["problem", "N = 2", "N = 8", "N = 64",
                          "efficiency < 50% from N", "largest speedup (N <= 4096)"])
    table = C.table(rows, ["m", "workers", "local fit", "cluster fit", "local / cluster",
                           "persist (apart)", "max coef diff", "model predicts"])
    return (table + "\n\nPeak numpy allocations (tracemalloc):\n\n" + memory
            + "\n\nPredicted speedup T(1) / T(N) of the cost model:\n\n" + curves)


def memory_table(mems):
    rows = []
    for p in by_m(mems):
        r = p["result"]
        for rec in r["measurements"]:
            how = ("VmHWM - VmRSS before fit" if rec.get("hwm_reset") else
                   "ru_maxrss - VmRSS before fit (no HWM reset)") \
                if rec["method"] == "rss" else "tracemalloc peak (numpy buffers)"
            rows.append([f"{r['m']:,}", rec["x_dtype"], how,
                         f"{rec['peak_bytes'] / 2**20:,.0f} MiB",
                         f"{rec['design_nbytes'] / 2**20:,.0f} MiB",
                         f"**{rec['peak_over_design']:.2f}**",
                         fmt_s(rec["fit_seconds"])])
    return C.table(rows, ["m", "X dtype", "measure", "peak of fit", "W.nbytes (float64)",
                          "peak / W (target <= 2)", "fit time in that run"])


def scaling_table(scal):
    rows = []
    for p in scal:
        for point in sorted(p["result"]["points"],
                            key=lambda q: (q["n_states"], q["m"])):
            rows.append([point["widths"], point["n_states"], f"{point['m']:,}",
                         f"{point['design_shape'][0]:,} x {point['design_shape'][1]}",
                         fmt_s(point["gemm"]["median_s"]),
                         f"{fmt_s(point['fit']['median_s'])} "
                         f"({runs(point['fit'])})",
                         f"{point['fit_over_gemm']:.0f}"])
    return C.table(rows, ["teacher widths", "states", "m", "design W", "GEMM",
                          "fit (median)", "fit / GEMM"])


def machine_text(payloads):
    seen = {}
    for p in payloads:
        mach = p["machine"]
        blas = ", ".join(sorted({f"{b.get('internal_api')} {b.get('version')} "
                                 f"({b.get('num_threads')} threads)"
                                 for b in mach["blas"] if b.get("internal_api") != "openmp"}))
        key = (mach["cpu_model"], mach["cpus_available"], blas)
        seen.setdefault(key, []).append(
            f"`{p['_file']}` ({mach['date_utc']}, commit "
            f"{(mach.get('git_commit') or '?')[:10]}"
            f"{', sksim tree dirty' if mach.get('sksim_tree_dirty') else ''}, "
            f"rows.py {mach.get('rows_py_sha256')})")
    lines = []
    for (cpu, cpus, blas), files in seen.items():
        lines.append(f"- {cpu}, {cpus} CPUs available, BLAS: {blas}; numba threads = "
                     f"CPUs. Results: {'; '.join(files)}.")
    return "\n".join(lines) or "- no results yet"


# ------------------------------------------------------------------ targets
def targets_table(fits, preds, mems, scal):
    rows = []
    want = TARGET_M
    fit_by_m = {p["result"]["m"]: p["result"] for p in fits}

    def per_m(check, text):
        parts, oks = [], []
        for m in want:
            r = fit_by_m.get(m)
            if r is None:
                parts.append(f"m={m:,}: pending")
                oks.append(None)
                continue
            ok, detail = check(r)
            oks.append(ok)
            if ok is None and detail == "not run":
                parts.append(f"m={m:,}: not run (skipped for time)")
            else:
                parts.append(f"m={m:,}: {detail} ({verdict(ok)})")
        # The verdict is over the sizes where the target was measured.
        measured = [o for o in oks if o is not None]
        if any(o is False for o in measured):
            overall = False
        elif measured and all(o is True for o in measured):
            overall = True
        elif any(isinstance(o, str) for o in measured):
            overall = "inconclusive"
        else:
            overall = None
        rows.append([text, "; ".join(parts), verdict(overall)])

    per_m(lambda r: (r["ratios"]["fit_over_gemm"] <= 20
                     and r["fit_accuracy"]["max_rel_excess"] <= ACCURACY,
                     f"fit/GEMM {r['ratios']['fit_over_gemm']:.0f}, excess "
                     f"{C.fmt(r['fit_accuracy']['max_rel_excess'])}"),
          "1. fit within 1e-6 of the optimum in <= 20 x GEMM")

    def anchor_check(r, anchor, keys, limit):
        if anchor not in r["unconstrained"]:
            return None, "not run"
        exact = [r["ratios"].get(k) for k in keys]
        exact = [v for v in exact if v is not None]
        bounds = [r["ratios"].get(k + "_lower_bound") for k in keys]
        bounds = [v for v in bounds if v is not None]
        if exact and (not bounds or min(exact) <= min(bounds)):
            v = min(exact)
            return v > limit if limit == 1 else v >= limit, f"{v:.1f}x"
        if not bounds:
            return None, "no ratio"
        v = min(bounds)
        ok = True if v >= limit else "inconclusive"
        return ok, (f"> {v:.1f}x (did not reach 1e-6 at the tols tried; ratio is a "
                    "lower bound)")

    per_m(lambda r: anchor_check(r, "sklearn", ["sklearn_over_sksim"], 30),
          "2a. >= 30x faster than sklearn multi-target Lasso (Gram)")

    def cvxpy_check(r):
        v = r["ratios"].get("cvxpy_extrapolated_over_fit")
        return (None, "not run") if v is None else (v >= 1000, f"{v:.0f}x (extrapolated)")
    per_m(cvxpy_check, "2b. >= 1000x faster than cvxpy + Clarabel per row")

    per_m(lambda r: anchor_check(r, "skglm", ["skglm_gram_cd_over_sksim",
                                              "skglm_lasso_over_sksim"], 1),
          "2c. faster than skglm (its fastest variant)")

    pred = [p["result"] for p in preds]
    if pred:
        r = pred[0]
        eq = r.get("equilibrium_absolute") or r["equilibrium"]
        v = eq["median_s"] / r["forward_float64"]["median_s"]
        ok = v <= 2 and eq["residual_within_target"]
        rows.append(["3. equilibrium to residual 1e-8 in <= 2 x teacher forward",
                     f"{v:.2f}x (equilibrium_tol {eq['equilibrium_tol']:.2g}), max "
                     f"residual {C.fmt(eq['max_residual'])}", verdict(ok)])
    else:
        rows.append(["3. equilibrium to residual 1e-8 in <= 2 x teacher forward",
                     "pending", verdict(None)])
    mem = [p["result"] for p in mems if p["result"]["m"] == 60000]
    if mem:
        v = mem[0]["max_peak_over_design"]
        rows.append(["4. peak memory of fit at m=60,000 <= 2 x W", f"{v:.2f} x W "
                     "(largest of the measures)", verdict(v <= 2)])
    else:
        other = [p["result"] for p in mems]
        note = (f"pending at 60,000 (m={other[0]['m']:,}: "
                f"{other[0]['max_peak_over_design']:.2f} x W)" if other else "pending")
        rows.append(["4. peak memory of fit at m=60,000 <= 2 x W", note, verdict(None)])
    if scal:
        points = scal[0]["result"]["points"]
        done = sorted({(q["widths"], q["m"]) for q in points})
        rows.append(["5. scaling table and plot", f"{len(done)} points", "done"])
    else:
        rows.append(["5. scaling table and plot", "pending", "pending"])
    return C.table(rows, ["target", "measured", "status"])


def homotopy_table(payloads):
    """Homotopy vs coordinate descent vs lars_path_gram (bench_homotopy.py)."""
    rows = []
    for r in sorted(payloads, key=lambda p: p["m"]):  # fields at the top level
        for alpha, entry in r.get("alphas", {}).items():
            for kind, part in entry.items():
                cd, homotopy = part.get("cd"), part["homotopy"]
                lars = part.get("lars_path_gram")
                rows.append([
                    f"{r['m']:,}", alpha, kind,
                    "not run" if cd is None else
                    f"{fmt_s(cd['median_s'])} ({cd['over_gemm']:.1f}x)",
                    f"{fmt_s(homotopy['median_s'])} ({homotopy['over_gemm']:.1f}x)",
                    "-" if cd is None else f"**{part['homotopy_speedup_over_cd']:.1f}x**",
                    ("-" if cd is None else
                     f"{cd['max_rel_excess_over_best_lower_bound']:.1e}") + " / "
                    f"{homotopy['max_rel_excess_over_best_lower_bound']:.1e}",
                    f"{homotopy['breakpoints_median']:.0f} / {homotopy['breakpoints_max']}",
                    homotopy["rows_by_method"]["homotopy_then_cd"],
                    "-" if lars is None else
                    f"{fmt_s(lars['seconds'])} for {lars['rows']} rows: homotopy "
                    f"**{lars['homotopy_speedup']:.0f}x** per row"])
        path = r.get("path")
        if path:
            rows.append([f"{r['m']:,}", f"path of {path['n_alphas']}", "bounded", "-",
                         fmt_s(path["median_s"]),
                         f"**{path['over_single_smallest_alpha']:.2f}x** one solve at "
                         f"{min(path['alphas']):g} "
                         f"({fmt_s(path['single_smallest_alpha']['median_s'])})",
                         "-", "-", "-", "-"])
    return C.table(rows, ["m", "alpha", "rows", "CD (x GEMM)", "homotopy (x GEMM)",
                          "CD / homotopy", "excess CD / homotopy",
                          "breakpoints median / max", "rows finished by CD",
                          "lars_path_gram"])


def homotopy_fit_table(payloads):
    """The whole fit per solver over GEMM, and cvxpy per row (bench_homotopy.py)."""
    rows = []
    for r in sorted(payloads, key=lambda p: p["m"]):
        for solver, fit in r.get("fit", {}).items():
            rows.append([f"{r['m']:,}", f"SIMClassifier.fit, solver={solver!r}",
                         fmt_s(fit["median_s"]), f"**{fit['over_gemm']:.1f}x**",
                         f"{fit['max_reported_rel_gap']:.1e}",
                         f"{fit['n_nonzero']:,}"])
        cv = r.get("cvxpy")
        if cv:
            rows.append([f"{r['m']:,}", f"cvxpy + Clarabel, {len(cv['rows'])} bounded rows",
                         f"{fmt_s(cv['mean_seconds_per_row'])} per row",
                         f"homotopy **{cv['homotopy_speedup_per_row']:,.0f}x** faster "
                         "per row",
                         "homotopy objective - cvxpy's: "
                         + ", ".join(f"{x['homotopy_rel_diff']:+.0e}" for x in cv["rows"]),
                         "-"])
    return C.table(rows, ["m", "what", "time", "/ GEMM", "max relative gap", "nonzeros"])


def scale_table(payloads):
    """Raw against standardised regression targets (bench_homotopy.py)."""
    rows = []
    for r in payloads:
        scale = r.get("scale")
        if not scale:
            continue
        for key, entry in scale.items():
            if key == "y_std":
                continue
            setting, solver = key.rsplit("_", 1)
            raw, std = entry["raw"], entry["standardised"]
            rows.append([setting.replace("_", " "), repr(solver),
                         f"{fmt_s(std['median_s'])} ({std['n_nonzero']:,} nonzeros)",
                         f"{fmt_s(raw['median_s'])} ({raw['n_nonzero']:,} nonzeros)",
                         f"**{entry['raw_over_standardised']:.2f}x**",
                         f"{max(raw['max_reported_rel_gap'], std['max_reported_rel_gap']):.1e}"])
    return C.table(rows, ["teacher", "solver", "standardised y", "raw y (std 211)",
                          "raw / standardised", "max relative gap"])


def conv_predict_table(payloads):
    """Weight-shared CIFAR-100 model against its teacher (bench_conv_predict.py)."""
    rows = []
    for r in payloads:
        for name, timing in r["timings"].items():
            rows.append([name, f"{fmt_s(timing['median_s'])} (median of {runs(timing)})",
                         f"**{timing['over_teacher']:.2f}x**",
                         f"{100 * r['test_accuracy'][name]:.2f}%"])
        rows.append(["float32 labels equal to float64", "-", "-",
                     f"{100 * r['float32_agrees_with_float64']:.2f}%"])
    return C.table(rows, ["10,000 CIFAR-100 test images", "time", "/ teacher",
                          "test accuracy"])


def plain_export_table(payloads):
    """Plain torch exports against the teacher's forward pass
    (bench_plain_export.py): FLOPs and time ratios, accuracy."""
    rows = []
    for r in payloads:
        for p in r["problems"]:
            rows.append([p["problem"], "teacher", f"{p['teacher_flops']:,}", "1", "1",
                         f"{100 * p['teacher_test_accuracy']:.2f}%", "-"])
            for m in p["models"]:
                rows.append([
                    "", m["name"].replace("_", " "),
                    f"{m['flops']:,} ({m['flops'] / p['teacher_flops']:.2f}x)",
                    f"**{p['threads_1'][m['name']]['over_teacher']:.2f}x**",
                    f"**{p['threads_2'][m['name']]['over_teacher']:.2f}x**",
                    f"{100 * m['test_accuracy']:.2f}%",
                    f"{100 * m['agreement_with_teacher']:.2f}%"])
    return C.table(rows, ["problem", "model", "FLOPs per image", "time / teacher, 1 thread",
                          "2 threads", "test accuracy", "agreement with teacher"])


def reduce_table(payloads):
    """The weight-shared fit against its floor, numpy and torch reduce
    backends (bench_reduce.py)."""
    rows = []
    for r in payloads:
        floor = r["floor"]
        rows.append([f"{r['teacher']}, m = {r['m']:,}", "floor",
                     f"{floor['seconds']:.1f} s (forward {floor['teacher_forward_seconds']:.1f} s"
                     f" + {floor['gram_gflop']:,.0f} GFLOP of Gram products in "
                     f"{floor['gram_seconds']:.1f} s)", "1"])
        for backend, fit in r["fits"].items():
            rows.append(["", f'gram_backend="{backend}"', f"{fit['median_s']:.1f} s",
                         f"**{fit['over_floor']:.2f}x**"])
    return C.table(rows, ["problem", "fit", "time (median)", "time / floor"])


def graph_teachers_table(payloads):
    """Torch teachers as people write them, distilled with defaults
    (bench_graph_teachers.py)."""
    rows = []
    for r in payloads:
        for name, t in r["teachers"].items():
            rows.append([name, t["teacher_weights"], t["sim_nonzero"],
                         f"{100 * t['agreement']:.2f}%",
                         f"{100 * t['teacher_accuracy']:.2f}% / {100 * t['sim_accuracy']:.2f}%",
                         f"{fmt_s(t['teacher_training_seconds'])} / {fmt_s(t['fit_seconds'])}",
                         ", ".join(k for k, met in t["targets"].items() if not met) or "all met"])
    text = C.table(rows, ["teacher", "teacher weights", "SIM nonzeros",
                          "agreement (held out)", "accuracy teacher / SIM",
                          "training / SIM fit", "targets not met"])
    for r in payloads:
        net = r.get("resnet20")
        if net:
            text += (f"\n\nCIFAR-100 ResNet-20 (teacher after {net['teacher_epochs']} epochs, "
                     f"{net['teacher_weights']:,} weights, {net['blocks']} blocks, "
                     f"{net['states_per_image']:,} states per image): default fit on "
                     f"{net['m']:,} images in {fmt_s(net['fit_seconds'])}, peak resident "
                     f"memory during the fit {net['peak_rss_mib']:,.0f} MiB "
                     f"({net['peak_rss_before_fit_mib']:,.0f} MiB before it), "
                     f"{net['sim_nonzero']:,} nonzeros.")
    return text


def first_day_table(payloads):
    """Cross-validation cost and predict ratios, idle and beside a busy loop
    (bench_first_day.py)."""
    rows = []
    for r in payloads:
        pred = r["predict"]
        load = r["load_average_1_5_15_min"][0]
        cvs = r["cross_validation"]
        cvs = cvs if isinstance(cvs, list) else [cvs]  # one problem before the 784-input one
        cv_cells = "; ".join(
            f"{cv.get('n_features', 64)} inputs: {fmt_s(cv['cv_s'])} / "
            f"{fmt_s(cv['single_fit_smallest_alpha_s'])} = {cv['cv_over_single']:.1f}x"
            for cv in cvs) + f" (target {cvs[0]['target_ratio']}x)"
        rows.append(["beside a busy loop" if r["busy_loop"] else "as found", f"{load:.2f}",
                     cv_cells,
                     f"{pred['implicit_over_teacher']:.2f}x (target "
                     f"{pred['targets']['implicit']:g}x)",
                     f"{pred['feedforward_over_teacher']:.2f}x (target "
                     f"{pred['targets']['feedforward']:g}x)"])
    return C.table(rows, ["run", "load average (1 min, at the end)",
                          "SIMRegressorCV(cv=3) / one fit at the smallest alpha",
                          "implicit predict / teacher forward",
                          "feed-forward predict / teacher forward"])


def sections():
    """Every table of the benchmark results, by name, from results/*.json (the
    documentation's benchmarks page includes them)."""
    from bench_fit import ratios

    fits, preds = load("fit_m*.json"), load("predict_m*.json")
    for p in fits:  # recomputed from the raw numbers (same definitions as bench_fit)
        p["result"]["ratios"] = ratios(p["result"])
    mems, scal = load("memory_m*.json"), load("scaling.json")
    homotopy, conv = load("homotopy_m*.json"), load("conv_predict.json")
    distributed = load("distributed_m*.json")
    graphs = load("graph_teachers.json")
    first_day = load("first_day*.json")
    plain = load("plain_export.json")
    reduce = load("reduce.json")
    sections = {
        "graph_teachers": graph_teachers_table(graphs) if graphs else "_pending_",
        "first_day": first_day_table(first_day) if first_day else "_pending_",
        "targets": targets_table(fits, preds, mems, scal),
        "fit": fit_table(fits) if fits else "_pending_",
        "anchors": anchor_table(fits) if fits else "_pending_",
        "predict": predict_table(preds) if preds else "_pending_",
        "predict_structure": (predict_structure_table(preds) if preds else "_pending_"),
        "memory": memory_table(mems) if mems else "_pending_",
        "scaling": scaling_table(scal) if scal else "_pending_",
        "homotopy": homotopy_table(homotopy) if homotopy else "_pending_",
        "homotopy_fit": homotopy_fit_table(homotopy) if homotopy else "_pending_",
        "target_scale": scale_table(homotopy) if homotopy else "_pending_",
        "conv_predict": conv_predict_table(conv) if conv else "_pending_",
        "plain_export": plain_export_table(plain) if plain else "_pending_",
        "reduce": reduce_table(reduce) if reduce else "_pending_",
        "distributed": distributed_table(distributed) if distributed else "_pending_",
        "machine": machine_text(fits + preds + mems + scal + homotopy + conv + distributed),
    }
    return sections


def main():
    for name, body in sections().items():
        print(f"## {name}\n\n{body.rstrip()}\n")


if __name__ == "__main__":
    main()
