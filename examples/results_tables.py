"""Result tables from the JSON files
==================================

Print the markdown tables of the experiments (``sparsity.py``,
``robustness.py``, ``data_use.py``, ``state_scaling.py``,
``fashion_mnist_cnn.py``, ``cifar100.py``, ``cifar100_anchors.py``,
``defaults_protocol.py``, ``robust_matching.py``) from the JSON files in ``examples/results/``. The documentation's results page is generated from the
same functions at every build (``docs/_generate.py``)::

    python examples/results_tables.py > examples/output/tables.md
"""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("fashion-mnist", "mnist", "digits")


def load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def sparsity_tables():
    out = []
    stems = [f"sparsity_{ds}" for ds in DATASETS]
    stems += sorted(p.stem for p in RESULTS.glob("sparsity_*.json") if p.stem not in stems)
    for stem in stems:
        d = load(stem)
        if d is None:
            continue
        t, ds = d["teacher"], d["dataset"]
        extra = ("" if d.get("output_alpha") is None
                 else f", output_alpha {d['output_alpha']:g}")
        out.append(f"\n**Sparsity, {ds}{extra}** (`{d['command']}`; teacher "
                   f"{t['architecture']}, test accuracy "
                   f"{pct(t['test_accuracy'])}%, {t['n_weights_total']:,} weights; SIM states "
                   f"on m = {d['m']:,} training images; accuracies in %)\n")
        rows = []
        for name, label in (("sim", "SIM"), ("sim_rescaled", "SIM, rescaled states"),
                            ("sim_row_bound", "SIM, row bound")):
            comp = {c["n_nonzero"]: c for c in d["comparisons"].get(name, [])}
            for p in sorted(d["series"][name], key=lambda p: p["nonzero_fraction"]):
                c = comp.get(p["n_nonzero"], {})
                setting = (f"alpha {p['alpha']:g}" if "row_bound" not in p else
                           f"R {p['row_bound']:g}, kappa {p.get('kappa', 0.95):g}, "
                           f"alpha {p['alpha']:g}")
                rows.append([label, setting, f"{p['n_nonzero']:,}",
                             f"{100 * p['nonzero_fraction']:.1f}%", pct(p["test_accuracy"]),
                             pct(c.get("pruned")), pct(c.get("pruned_finetuned_lr0.0001")),
                             pct(c.get("pruned_finetuned_lr0.001")),
                             f"{p['lipschitz_bound']:.3g}"])
        out.append(table(["model", "setting", "nonzeros", "fraction", "SIM acc",
                          "pruned", "pruned+FT lr1e-4", "pruned+FT lr1e-3", "SIM L"], rows))
    return "\n".join(out)


def robustness_tables():
    out = []
    for ds in DATASETS:
        d = load(f"robustness_{ds}")
        if d is None:
            continue
        eps = d["attacks"]["eps"]
        out.append(f"\n**Robustness, {ds}** (accuracy in %; noise on the whole test set, "
                   f"FGSM/PGD on {d['attacks']['n_attack']} test images; L = certified "
                   "l_inf Lipschitz bound of the logits)\n")
        rows = []
        lip = d["lipschitz"]
        names = {"teacher": "teacher", "sim_sparse": "SIM sparse", "sim_robust": "SIM robust"}
        for name, res in d["results"].items():
            if name == "teacher":
                L = (f"{lip['teacher_product']:,.0f} (product) / "
                     f"{lip['teacher_implicit_rescaled_best']:,.0f} (implicit) / "
                     f"{lip.get('teacher_abs_path', float('nan')):,.0f} (abs-path)")
                setting = ""
                frac = "100%"
            else:
                info = d["models"][name]
                L = (f"{lip[name]:,.0f} / "
                     f"{lip.get(name + '_abs_path', float('nan')):,.0f} (abs-path)")
                frac = f"{100 * info['nonzero_fraction']:.1f}%"
                setting = (f"alpha {info['alpha']:g}, kappa {info['kappa']:g}"
                           + (f", R {info['row_bound']:g}" if info["row_bound"] else ""))
            rows.append([names[name], setting, frac, pct(res["clean_test_accuracy"]), L]
                        + [pct(res["noise"][str(e)]) for e in eps]
                        + [pct(res["fgsm"][str(e)]) for e in eps]
                        + [pct(res["pgd"][str(e)]) for e in eps])
        out.append(table(["model", "setting", "nonzeros", "clean", "L"]
                         + [f"noise {e:g}" for e in eps] + [f"FGSM {e:g}" for e in eps]
                         + [f"PGD {e:g}" for e in eps], rows))
        cand = d["models"]["robust_candidates"]
        out.append("\nRobust candidates (selection on validation: "
                   f"{d['models']['robust_selection_rule']}):\n")
        out.append(table(["kappa", "R", "validation acc", "test acc", "nonzeros", "L",
                          "R^2/(1-kappa)+R", "fit s"],
                         [[c["kappa"], c["row_bound"], pct(c["validation_accuracy"]),
                           pct(c["test_accuracy"]), f"{c['n_nonzero']:,}",
                           f"{c['lipschitz_bound']:.3g}", f"{c['formula_bound']:.3g}",
                           c.get("fit_seconds")] for c in cand]))
    return "\n".join(out)


ROBUST_NAMES = {"teacher": "teacher", "teacher_adversarial": "teacher + PGD fine-tune",
                "sim_plain": "SIM", "sim_perturbed": "SIM perturbation-aware",
                "sim_row_bound": "SIM row_bound", "sim_combined": "SIM perturbation + row_bound"}


def _eps_label(eps):
    """eps as pixels in [0, 1], or in 255ths when it is one."""
    in_255 = eps * 255
    whole = abs(in_255 - round(in_255)) < 1e-6 and in_255 <= 16
    return f"{round(in_255):d}/255" if whole else f"{eps:g}"


def _robust_setting(name, d):
    models = d["models"]
    if name == "teacher_adversarial":
        info = models[name]
        return (f"{info['seconds']:.0f} s ({info['epochs']:g} epochs) at eps "
                f"{_eps_label(info['eps'])}")
    if name.startswith("sim"):
        info = models[name]
        spec = info.get("spec")
        return f"alpha {d['models']['sim_plain']['alpha']:g}" + (f", {spec}" if spec else "")
    return ""


def robust_matching_tables():
    """Perturbation-aware matching, row bounds and the anchors under strong PGD,
    with certified accuracy (``robust_matching.py``)."""
    out = []
    for ds in (*DATASETS, "cifar100"):
        d = load(f"robust_matching_{ds}")
        if d is None:
            continue
        eps = d["attacks"]["eps"]
        certify = d["attacks"]["certify_eps"] if d["results"]["teacher"]["certified"] else []
        sanity = d["attacks"]["sanity"]
        out.append(f"\n**{ds}** (accuracy in %; PGD and certification on "
                   f"{d['attacks']['n_attack']} test images; the attack drives the teacher "
                   f"to {pct(sanity['teacher_pgd_accuracy'])}% at eps "
                   f"{_eps_label(sanity['eps'])}; m = {d['m']:,})\n")
        rows = []
        for name, res in d["results"].items():
            info = d["models"].get(name, {})
            fit = info.get("fit_seconds")
            rows.append([ROBUST_NAMES[name], _robust_setting(name, d),
                         "-" if fit is None else f"{fit:.1f}",
                         pct(res["clean_test_accuracy"])]
                        + [pct(res["pgd"][str(e)]) for e in eps]
                        + [pct(res["certified"].get(str(e))) for e in certify])
        out.append(table(["model", "setting", "fit s", "clean"]
                         + [f"PGD {_eps_label(e)}" for e in eps]
                         + [f"certified {_eps_label(e)}" for e in certify], rows))
        for name in ("sim_perturbed", "sim_row_bound", "sim_combined"):
            info = d["models"].get(name)
            if info is None:
                continue
            out.append(f"\n{ROBUST_NAMES[name]} candidates ({info['selection_rule']}; "
                       f"validation PGD at eps {_eps_label(d['attacks']['select_eps'])} on "
                       f"{d['n_select']} images):\n")
            out.append(table(["candidate", "validation clean", "validation PGD", "nonzeros",
                              "fit s"],
                             [[c["spec"], pct(c["validation_clean"]), pct(c["validation_pgd"]),
                               f"{c['n_nonzero']:,}", c["fit_seconds"]]
                              for c in info["candidates"]]))
        targets = []
        for target, per_model in d["targets"].items():
            for model, verdict in per_model.items():
                detail = ", ".join(f"{k} {v}" for k, v in verdict.items() if k != "met")
                targets.append([target.replace("_", " "), ROBUST_NAMES[model],
                                "met" if verdict["met"] else "not met", detail])
        out.append("\nTargets:\n")
        out.append(table(["target", "model", "verdict", "measured"], targets))
    return "\n".join(out)


def data_use_tables():
    out = []
    for ds in DATASETS:
        d = load(f"data_use_{ds}")
        if d is None:
            continue
        alphas = sorted({p["alpha"] for p in d["points"]})
        ms = sorted({p["m"] for p in d["points"]})
        by = {(p["m"], p["alpha"]): p for p in d["points"]}
        out.append(f"\n**Data use, {ds}** (teacher {pct(d['teacher']['test_accuracy'])}%; "
                   "SIM test accuracy in %, nonzeros in parentheses)\n")
        out.append(table(["m", "fraction"] + [f"alpha {a:g}" for a in alphas],
                         [[f"{m:,}",
                           f"{100 * by[(m, alphas[0])]['fraction_of_training_data']:.1f}%"]
                          + [f"{pct(by[(m, a)]['test_accuracy'])} ({by[(m, a)]['n_nonzero']:,})"
                             for a in alphas] for m in ms]))
    return "\n".join(out)


def teacher_of(record):
    """A CIFAR-100 record's teacher name (records before the ResNet-20 have none)."""
    return record.get("teacher_name", "allconv")


def conv_tables(teacher="allconv"):
    """Weight-shared SIM of CNN teachers: the CIFAR-100 runs (cifar100*.json)
    of ``teacher``, after the Fashion-MNIST CNN's (fashion_mnist_cnn*.json)
    for the all-conv teacher."""
    out = []
    paths = sorted(RESULTS.glob("fashion_mnist_cnn*.json")) if teacher == "allconv" else []
    paths += [path for path in sorted(RESULTS.glob("**/cifar100*.json"))
              if teacher_of(json.loads(path.read_text())) == teacher]
    for path in paths:
        stem = path.relative_to(RESULTS).with_suffix("").as_posix()
        d = load(stem)
        t = d["teacher"]
        lateral = d.get("lateral_kernel")
        out.append(f"\n**{stem}** (`{d['command']}`; teacher "
                   f"{d.get('teacher_name', '') + ' ' if d.get('teacher_name') else ''}test accuracy "
                   f"{pct(t['test_accuracy'])}%, {t['weights']:,} weights; "
                   "SIM on m = "
                   f"{d['m']:,} training images, kappa {d['kappa']:g}, "
                   f"{f'lateral {lateral}x{lateral}' if lateral else 'feed-forward'}"
                   f"{', skip links ' + str(d['skip_links']) if d.get('skip_links') else ''}"
                   f", block_alpha {d.get('block_alpha', 'relative')}, relax "
                   f"{d.get('relax', 1.0):g}, output_alpha "
                   f"{'alpha' if d.get('output_alpha') is None else d['output_alpha']}"
                   f"{', row_bound ' + format(d['row_bound'], 'g') if d.get('row_bound') else ''}"
                   f", state inputs {d.get('state_inputs', 'teacher')}"
                   f"{', adaptive_l1 ' + format(d['adaptive_l1'], 'g') if d.get('adaptive_l1') else ''}"
                   f"{', penalty ' + d['penalty'] if d.get('penalty', 'l1') != 'l1' else ''}"
                   ", positions per image "
                   f"{d.get('positions_per_image') or 'all'}; accuracies in %)\n")
        float32 = any("float32_predict_over_teacher" in f for f in d["fits"])
        rows = [[f"{f['alpha']:g}", f"{f['nonzero']:,}", f"{100 * f['fraction_of_teacher']:.1f}%",
                 pct(f["test_accuracy"]), pct(f["agreement"]), f"{f['fit_seconds']:.0f}",
                 f"{f['predict_over_teacher']:.1f}x"]
                + ([f"{f['float32_predict_over_teacher']:.1f}x"] if float32 else [])
                + [f"{f['peak_rss_gb']:.2f}", f"{f['lipschitz_bound']:.3g}",
                   f"{f['lipschitz_path_bound']:.3g}"]
                for f in d["fits"]]
        out.append(table(["alpha", "nonzeros", "of teacher", "SIM acc", "agreement",
                          "fit s", "predict / teacher"]
                         + (["float32 to_torch / teacher"] if float32 else [])
                         + ["peak GB", "L", "path L"], rows))
        if d.get("floor"):
            floor = d["floor"]
            out.append(f"\nFloor of the fit, measured in the same run: {floor['seconds']:.0f} s "
                       f"(the teacher's forward pass over the m images, "
                       f"{floor['teacher_forward_seconds']:.0f} s, plus "
                       f"{floor['gram_gflop']:,.0f} GFLOP of patch Gram products at this "
                       f"machine's measured rate, {floor['gram_seconds']:.0f} s); fit / floor: "
                       + ", ".join(f"{f['fit_over_floor']:.2f}x (alpha {f['alpha']:g})"
                                   for f in d["fits"]) + ".\n")
        plain = [f for f in d["fits"] if "plain_flops" in f]
        if plain:
            out.append("\nPlain export (`to_torch(plain=True)`, float32; time against the "
                       "teacher's forward pass timed earlier in the same run):\n")
            out.append(table(
                ["alpha", "FLOPs / teacher", "conv channels", "time / teacher"],
                [[f"{f['alpha']:g}", f"{f['plain_flops_fraction']:.2f}",
                  " ".join(str(c) for c in f["plain_conv_channels"]),
                  f"{f['plain_predict_over_teacher']:.2f}x"] for f in plain]))
        if d.get("pruning"):
            out.append("\nGlobal magnitude pruning of the teacher (same m images for "
                       "the fine-tune):\n")
            out.append(table(["kept", "of teacher", "pruned acc", "pruned + fine-tune acc"],
                             [[f"{r['kept']:,}", f"{100 * r['fraction']:.1f}%",
                               pct(r["test_accuracy"]), pct(r["fine_tuned_accuracy"])]
                              for r in d["pruning"]]))
        attacked = [("teacher", t.get("attacks"))] + [
            (f"SIM alpha {f['alpha']:g}", f.get("attacks")) for f in d["fits"]]
        attacked = [(name, a) for name, a in attacked if a]
        if attacked:
            eps = attacked[0][1]["eps"]
            out.append("\nUnder attack (accuracy in %, l_inf, eps in 1/255):\n")
            out.append(table(
                ["model"] + [f"{kind} {255 * e:.0f}" for kind in ("noise", "FGSM", "PGD")
                             for e in eps],
                [[name] + [pct(v) for kind in ("noise", "fgsm", "pgd") for v in a[kind]]
                 for name, a in attacked]))
    return "\n".join(out)


def anchor_tables(teacher="allconv"):
    """One-shot pruning anchors at SIM's nonzero counts on ``teacher``
    (cifar100_anchors/anchors_<teacher>_m*.json of ``cifar100_anchors.py``):
    test accuracy (%) of each method and allocation per kept fraction, SIM's
    own fit at the same count, and each method's median seconds."""
    out = []
    for path in sorted(RESULTS.glob(f"cifar100_anchors/anchors_{teacher}_m*.json")):
        d = json.loads(path.read_text())
        d["rows"] = [r for r in d["rows"] if "kept_fraction" in r]  # not the FLOPs anchors
        if not d["rows"]:
            continue
        fractions = sorted({r["kept_fraction"] for r in d["rows"]}, reverse=True)
        sims = {r["kept_fraction"]: r["sim"] for r in d["rows"] if r.get("sim")}
        methods = list(dict.fromkeys((r["method"], r["allocation"]) for r in d["rows"]))
        rows = []
        for method, allocation in methods:
            found = {r["kept_fraction"]: r for r in d["rows"]
                     if (r["method"], r["allocation"]) == (method, allocation)}
            seconds = sorted(r["seconds"] for r in found.values() if r.get("seconds"))
            rows.append([method, allocation]
                        + [pct(found[f]["test_accuracy"]) if f in found else "-"
                           for f in fractions]
                        + [f"{seconds[len(seconds) // 2]:.0f}" if seconds else "-"])
        if sims:
            fit_seconds = sorted(s["fit_seconds"] for s in sims.values())
            source = json.loads((RESULTS.parent.parent / d["sim_results"]).read_text())
            rows.append([f"**SIM** (`{Path(d['sim_results']).parent.name}`, m = "
                         f"{source['m']:,}; fit time of that run)", "its own"]
                        + [pct(sims[f]["test_accuracy"]) if f in sims else "-"
                           for f in fractions]
                        + [f"{fit_seconds[len(fit_seconds) // 2]:.0f}"])
        out.append(f"\n**{path.relative_to(RESULTS).as_posix()}** (`{d['command']}`; "
                   f"teacher {d['teacher'].get('name', '')} test accuracy "
                   f"{pct(d['teacher'].get('test_accuracy'))}%, m = {d['m']:,} calibration "
                   f"images, {d['n_test']:,} test images; accuracies in %)\n")
        out.append(table(["method", "allocation"]
                         + [f"{100 * f:.1f}% kept" for f in fractions] + ["median s"],
                         rows))
    return "\n".join(out)


def filter_tables(teacher="allconv"):
    """Structured anchors at SIM's FLOPs (the ``l1_filter`` rows of
    cifar100_anchors/anchors_<teacher>_m*.json): per FLOPs target, L1-norm
    filter pruning without and with a fine-tune next to the SIM channel fit
    whose plain export has those FLOPs."""
    out = []
    for path in sorted(RESULTS.glob(f"cifar100_anchors/anchors_{teacher}_m*.json")):
        d = json.loads(path.read_text())
        rows = [r for r in d["rows"] if r["method"].startswith("l1_filter")]
        if not rows:
            continue
        targets = list(dict.fromkeys(r["target_flops"] for r in rows))
        body = []
        for target in targets:
            found = {r["method"]: r for r in rows if r["target_flops"] == target}
            plain, tuned = found["l1_filter"], found["l1_filter_fine_tuned"]
            sim = plain.get("sim")
            body.append([f"{target / d['teacher']['flops']:.2f}",
                         f"{plain['flops_fraction']:.2f} ({100 * plain['filter_fraction']:.1f}%"
                         " of the filters out)", pct(plain["test_accuracy"]),
                         f"{pct(tuned['test_accuracy'])} ({tuned['fine_tune_images']:,} "
                         f"images, Adam lr {tuned['fine_tune_lr']:g})",
                         "-" if sim is None else f"{pct(sim['test_accuracy'])} (alpha "
                         f"{sim['alpha']:g})"])
        out.append(f"\n**{path.relative_to(RESULTS).as_posix()}** (`{d['command']}`; "
                   f"teacher {d['teacher'].get('name', '')} test accuracy "
                   f"{pct(d['teacher'].get('test_accuracy'))}%, {d['n_test']:,} test "
                   "images; accuracies in %)\n")
        out.append(table(["FLOPs target / teacher", "L1 filter FLOPs / teacher",
                          "L1 filter acc", "+ 1-epoch fine-tune", "SIM channel acc"], body))
    return "\n".join(out)


def channel_sweep_tables():
    """The validation sweeps of penalty="channel" (``_resnet20_sweep.py``
    records in cifar100_channel_exploratory/*.jsonl): per setting, validation
    accuracy, kept weights, plain-export FLOPs and conv channels."""
    out = []
    for path in sorted(RESULTS.glob("cifar100_channel_exploratory/*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        teacher = next(r for r in records if "teacher_val_acc" in r)
        keys = ("alpha", "block_alpha", "adaptive_l1", "state_inputs", "output_alpha")
        rows = [[", ".join(f"{k} {r[k]:g}" if isinstance(r[k], float) else f"{k} {r[k]}"
                           for k in keys if k in r),
                 pct(r["val_acc"]), f"{100 * r['fraction']:.1f}%",
                 "-" if r.get("flops") is None else f"{r['flops_fraction']:.2f}",
                 " ".join(str(c) for c in r.get("conv_channels", [])) or "-"]
                for r in records if "val_acc" in r]
        out.append(f"\n**{path.relative_to(RESULTS).as_posix()}** (teacher "
                   f"{teacher['teacher']} validation accuracy {pct(teacher['teacher_val_acc'])}%"
                   f", m = {teacher['m']:,}, 2,000 held-out training images; "
                   "penalty channel, relax 0.01; block_alpha positions unless given)\n")
        out.append(table(["setting", "val acc", "of teacher's weights", "FLOPs / teacher",
                          "conv channels"], rows))
    return "\n".join(out)


def _gain_cell(judgement):
    if judgement is None:
        return "-"
    gain = judgement["gain_points"]
    return ("no overlap" if gain is None else f"{gain:+.2f}") + (
        f", {judgement['time_ratio']:.2f}x, {judgement['outcome']}")


def defaults_tables():
    """The defaults protocol (``defaults_protocol.py``, results in
    ``defaults/*.json``): per experiment, each setting's validation accuracy
    and nonzeros per alpha, fit time, and its gain and fit-time ratio against
    the defaults before the protocol; then the decision rule's verdict per candidate and the
    defaults it chooses."""
    import defaults_protocol as protocol

    folder = RESULTS / "defaults"
    records = protocol.load_records(folder)
    if not records:
        return ""
    out = []
    for d in records:
        t, split = d["teacher"], d["split"]
        source = t.get("architecture") or t["source"]
        commands = "; ".join(f"{stage}: `{info['command']}`"
                             for stage, info in d["stages"].items())
        out.append(f"\n**{d['experiment']}** ({d['data']}; teacher {source}, "
                   f"{t['n_weights']:,} weights, validation accuracy "
                   f"{pct(t['validation_accuracy'])}%; SIM on m = {split['m']:,} training "
                   f"images, validated on {split['n_validation']:,} others; {commands}; "
                   "validation accuracy in %, nonzeros in parentheses, gain in points at "
                   "matched nonzeros, fit-time ratio of the sweep, outcome)\n")
        alphas = d["alphas"]
        rows = []
        for stage in d["stages"]:
            settings = list(dict.fromkeys(f["setting"] for f in d["fits"]
                                          if f["stage"] == stage))
            for setting in settings:
                fits = {f["alpha"]: f for f in protocol.fits_of(d, setting, stage)}
                name = setting if stage == "factors" else f"{setting} ({stage} run)"
                if stage != "factors" and setting == "combination":
                    params = next(iter(fits.values()))["params"]
                    name = "combination: " + protocol.label(params)
                judgement = (None if setting == "default"
                             else protocol.judge(d, setting, stage))
                rows.append([name]
                            + [f"{pct(fits[a]['validation_accuracy'])} "
                               f"({fits[a]['n_nonzero']:,})" if a in fits else "-"
                               for a in alphas]
                            + [pct(sum(f["validation_agreement"] for f in fits.values())
                                   / len(fits)),
                               f"{sum(f['fit_seconds'] for f in fits.values()):.1f}",
                               _gain_cell(judgement)])
        out.append(table(["setting"] + [f"alpha {a:g}" for a in alphas]
                         + ["mean agreement", "fit s", "gain, time ratio, outcome"], rows))
    decision = protocol.decide(records)
    names = [d["experiment"] for d in records]
    verdicts = [v for f in decision["factors"].values() for v in f["verdicts"]]
    if decision.get("combination"):
        verdicts.append(decision["combination"])
    rows = [[v["setting"]] + [_gain_cell(v["per_experiment"].get(n)) for n in names]
            + [f"{v['wins']} of {v['n_experiments']}", str(v["losses"]),
               ", ".join(v["too_slow_on"]) or "none",
               "-" if v["mean_gain_points"] is None else f"{v['mean_gain_points']:+.2f}",
               "**passes**" if v["passes"] else "fails"] for v in verdicts]
    out.append("\n**Verdicts** (gain in points at matched nonzeros, fit-time ratio, "
               f"outcome; win > {protocol.WIN_POINTS:g} points, loss < "
               f"-{protocol.LOSS_POINTS:g}, fit time at most "
               f"{protocol.MAX_TIME_RATIO:g}x on every experiment)\n")
    slow = f"over {protocol.MAX_TIME_RATIO:g}x on"
    out.append(table(["setting", *names, "wins", "losses", slow, "mean gain", "rule 4"],
                     rows))
    if not decision["complete"]:
        verdict = "Not every experiment has run: the rule has not decided."
    elif decision["changes"] is None:
        verdict = ("The factors' candidates are " + ", ".join(
            f"`{k}={v}`" for k, v in decision["candidates"].items())
            + "; the combination stage has not run yet.")
    else:
        def value(v):
            return f'"{v}"' if isinstance(v, str) else f"{v}"

        kept = [f"`{k}={value(protocol.DEFAULT[k])}`" for k in protocol.DEFAULT
                if k not in decision["changes"]]
        changes = ", ".join(f"`{k}` from {value(protocol.DEFAULT[k])} to {value(v)}"
                            for k, v in decision["changes"].items())
        verdict = (f"**The rule changes** {changes or 'nothing'}; it keeps "
                   f"{', '.join(kept) or 'nothing else'} (documented options).")
    out.append("\n" + verdict)
    return "\n".join(out)


def best_small(points, fraction_key="nonzero_fraction", limit=0.25):
    """The most accurate point whose ``fraction_key`` (its share of the
    teacher's weights) is at most ``limit``; None when there is none."""
    small = [p for p in points if p[fraction_key] <= limit]
    return max(small, key=lambda p: p["test_accuracy"]) if small else None


def accuracy_cell(point, teacher, fraction_key="nonzero_fraction"):
    """``"<accuracy> at <share>% (<difference from the teacher>)"``."""
    return (f"{pct(point['test_accuracy'])} at {100 * point[fraction_key]:.1f}% "
            f"({100 * (point['test_accuracy'] - teacher):+.2f})")


def best_cells(points, teacher):
    """Two table cells of a sweep: the best SIM model at <= 25% of the
    teacher's weights (and its difference from the teacher), and at any size."""
    best = best_small(points)
    top = max(points, key=lambda p: p["test_accuracy"])
    return ["-" if best is None else accuracy_cell(best, teacher),
            f"{pct(top['test_accuracy'])} at {100 * top['nonzero_fraction']:.1f}%"]


def structure_table():
    """Implicit against feed-forward structure: the best SIM model at <= 25% of
    the teacher's weights, and at any size, per dataset and state series."""
    rows = []
    for dataset in DATASETS:
        for structure, stem in (("implicit", f"sparsity_{dataset}"),
                                ("feedforward", f"sparsity_{dataset}_feedforward")):
            d = load(stem)
            if d is None:
                continue
            teacher = d["teacher"]["test_accuracy"]
            for series, label in (("sim", "as recorded"), ("sim_rescaled", "rescaled")):
                rows.append([dataset, pct(teacher), structure, label,
                             *best_cells(d["series"][series], teacher)])
    return table(["dataset", "teacher", "structure", "states",
                  "best SIM at <= 25% of the weights (vs teacher)", "best SIM at any size"],
                 rows)


def state_scaling_table():
    """The three state_scalings of a torch teacher (state_scaling.py): best SIM
    model at <= 25% of the teacher's weights, and at any size."""
    rows = []
    for dataset in DATASETS:
        d = load(f"state_scaling_{dataset}")
        if d is None:
            continue
        teacher = d["teacher"]["test_accuracy"]
        for scaling, points in d["series"].items():
            rows.append([dataset, pct(teacher), f"`{scaling}`",
                         *best_cells(points, teacher)])
    return table(["dataset", "teacher", "state_scaling",
                  "best SIM at <= 25% of the weights (vs teacher)", "best SIM at any size"],
                 rows)


if __name__ == "__main__":
    print(conv_tables())
    print(structure_table())
    print(state_scaling_table())
    print(sparsity_tables())
    print(robustness_tables())
    print(robust_matching_tables())
    print(data_use_tables())
    print(defaults_tables())
