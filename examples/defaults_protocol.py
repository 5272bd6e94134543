"""How the defaults were chosen: relax, output_alpha and state_inputs on validation splits
=======================================================================================

Issue 26, item 5: each of three defaults of the SIM estimators is chosen by
this written protocol, on validation splits of the training images (never a
test set), by accuracy per nonzero and fit time.

Experiments (``--experiments``; the teachers are the committed experiments'):

* ``digits-mlp``: scikit-learn's digits, split 70/30 as ``examples/_experiments.py``
  does; its 64-64-32-16-10 teacher recipe (trained once, then cached);
  m = 1,000 fit images, the other 257 training images validate.
* ``fashion-mnist-mlp``: Fashion-MNIST, the 784-64-32-16-10 teacher recipe
  of ``examples/_experiments.py``; m = 5,000, 5,000 validation images.
* ``fashion-mnist-cnn``: Fashion-MNIST, the committed CNN of
  ``examples/fashion_mnist_cnn.py`` (``examples/weights/fashion_mnist_cnn.npz``);
  m = 5,000, 5,000 validation images.
* ``cifar-100-allconv``: CIFAR-100, the committed all-convolutional teacher of
  ``examples/cifar100_teacher.py`` (``examples/weights/cifar100_allconv.npz``);
  m = 2,000, 5,000 validation images, two alphas (sized by one default fit
  at alpha 0.04 before the sweep: 162,492 nonzeros, 54% of the teacher's
  weights, 42 s on one thread; 0.16 aims at about a quarter).

The fit and validation images are disjoint subsets of the training split
(``_experiments.split_subset``: the first m of a seed-0 permutation, then the
next ones); the test split is never loaded (digits: the 30% test part of its
split is never used). The teachers were trained on the
whole training split, validation images included, so the teacher's own
validation accuracy is optimistic; the protocol compares SIM settings with
each other, not with the teacher.

Every fit is ``SIMClassifier(TorchBaseline(teacher), alpha=..., **setting)``
with every other parameter at its default (``kappa=0.95``,
``block_alpha="positions"``, ``state_scaling="well_posed"``, ...), its output
rows fitting the teacher's logits, ``random_state=0``, ``n_jobs=--threads``.
Per fit the JSON records the validation accuracy, the agreement with the
teacher's labels on the validation images, ``n_nonzero_`` (and the head's
part of it), the fit's wall-clock seconds and the settings. Within a stage the
fits run in the order alpha, then setting, so a change of the machine's load
falls on every setting alike, after one untimed warm-up fit per setting on 200
images at the smallest alpha (numba's kernels are compiled or loaded then,
not in a timed fit); a fit of less than 2 s is timed up to five times and
the median kept.

Candidates (stage ``factors``): one factor at a time against the previous
defaults ``relax=1.0, output_alpha=None, state_inputs="teacher"``:
``relax`` in {0.1, 0.01}; ``output_alpha`` in {1e-3, 3e-3} (a near-dense
head, fixed while alpha sparsifies the states: 1e-3 is the value of the
committed ``sparsity_fashion-mnist_oa0.001`` run, 3e-3 that of
``cifar100_relaxed`` and ``fashion_mnist_cnn_relax0.01``);
``state_inputs="model"`` on the weight-shared (CNN) experiments only. Stage
``combination`` fits the winners of the factors together (and the default
again, for the fit-time ratio of the same run).

Decision rule (fixed before any candidate was fitted):

1. Gain. For experiment E and setting S, validation accuracy is taken as a
   piecewise-linear function of log(``n_nonzero_``) through each sweep's points
   (sorted by nonzeros). It is evaluated at every nonzero count of either
   sweep that lies in the overlap of the two sweeps' nonzero ranges; the gain
   g(S, E) is the mean of S's accuracy minus the default's there, in points.
   Sweeps whose ranges do not overlap give no gain ("no overlap").
2. Cost. t(S, E) = the total fit seconds of S's sweep over the default's, in
   the same run.
3. S wins E when g > 0.3 points, loses E when g < -1 point.
4. S passes when it wins more than half of the experiments it applies to
   (``state_inputs`` applies to the two CNN experiments, so it must win
   both), loses none, and t <= 2 on every one of them.
5. For each factor, the passing value with the largest mean gain becomes the
   candidate default; a factor with no passing value keeps the default before this protocol
   and stays a documented option.
6. When two or more factors have a candidate, their values together (the
   ``combination``, without ``state_inputs`` on the MLPs) are judged against
   the default before this protocol by rules 1-4 on fits of their own; if the combination
   passes, all its values become the defaults, otherwise only the candidate
   with the largest mean gain does. With one candidate, it does.

:func:`decide` applies the rule to the JSON files; the documentation's table
(``results_tables.defaults_tables``) is generated from the same files by the
same function. Writes ``<experiment>.json`` per experiment to ``--output-dir``
(default: a new ``examples/output/defaults-<UTC time>/``;
``--output-dir examples/results/defaults`` regenerates the committed results)::

    nice -n 10 python examples/defaults_protocol.py --data-home DIR \\
        --output-dir examples/results/defaults

``--stage factors`` or ``--stage combination`` runs one stage (the
combination reads the factor fits of all four experiments from
``--output-dir``); ``all`` (the default) runs the factors, then the
combination when every experiment's factor fits are there.
"""

import argparse
import itertools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXAMPLES_DIR.parent
RESULTS = EXAMPLES_DIR / "results" / "defaults"
for _path in (REPO_ROOT, EXAMPLES_DIR):
    if str(_path) not in sys.path:  # run from a checkout without installing
        sys.path.insert(0, str(_path))

# ------------------------------------------------------------------ protocol
# the estimators' defaults before this protocol (relax is 0.01 since; every fit
# passes these three explicitly, so a rerun reproduces the committed results)
DEFAULT = {"relax": 1.0, "output_alpha": None, "state_inputs": "teacher"}
FACTORS = {"relax": (0.1, 0.01), "output_alpha": (1e-3, 3e-3), "state_inputs": ("model",)}
WEIGHT_SHARED_ONLY = ("state_inputs",)
WIN_POINTS = 0.3
LOSS_POINTS = 1.0
MAX_TIME_RATIO = 2.0
SHORT_FIT = 2.0  # seconds: shorter fits are timed up to five times (median)

EXPERIMENTS = {
    "digits-mlp": {"kind": "mlp", "dataset": "digits", "m": 1000, "n_val": 5000,
                   "alphas": (3e-3, 1e-2, 3e-2)},
    "fashion-mnist-mlp": {"kind": "mlp", "dataset": "fashion-mnist", "m": 5000,
                          "n_val": 5000, "alphas": (3e-3, 1e-2, 3e-2)},
    "fashion-mnist-cnn": {"kind": "cnn", "dataset": "fashion-mnist", "m": 5000,
                          "n_val": 5000, "alphas": (3e-3, 1e-2, 3e-2)},
    "cifar-100-allconv": {"kind": "cnn", "dataset": "cifar-100", "m": 2000,
                          "n_val": 5000, "alphas": (4e-2, 1.6e-1)},
}


def label(params):
    """``"default"`` or ``"relax=0.01, output_alpha=0.001"``: the parameters
    that differ from the defaults before this protocol."""
    changed = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
               for k, v in params.items() if v != DEFAULT[k]]
    return ", ".join(changed) or "default"


def applies(factor, kind):
    return kind == "cnn" or factor not in WEIGHT_SHARED_ONLY


def factor_settings(kind):
    """Today's defaults and each candidate value, one factor at a time."""
    settings = [dict(DEFAULT)]
    for factor, values in FACTORS.items():
        if applies(factor, kind):
            settings += [{**DEFAULT, factor: value} for value in values]
    return settings


def _curve(points):
    """(log nonzeros, accuracy) sorted by nonzeros; equal counts averaged."""
    by_count = {}
    for n, accuracy in points:
        by_count.setdefault(n, []).append(accuracy)
    return [(math.log(n), sum(a) / len(a)) for n, a in sorted(by_count.items())]


def _interpolate(curve, x):
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if len(curve) == 1 and curve[0][0] == x:
        return curve[0][1]
    raise ValueError("outside the curve")


def matched_gain(points, reference):
    """Rule 1: the mean of ``points``' accuracy minus ``reference``'s (in
    points) at the nonzero counts of either sweep inside the overlap of their
    ranges; each argument is a list of (n_nonzero, accuracy). Returns (gain,
    number of counts compared), or (None, 0) when the ranges do not overlap."""
    a, b = _curve(points), _curve(reference)
    low, high = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    xs = sorted({x for x, _ in a + b if low - 1e-12 <= x <= high + 1e-12})
    if low > high + 1e-12 or not xs:
        return None, 0
    xs = [min(max(x, low), high) for x in xs]
    diffs = [_interpolate(a, x) - _interpolate(b, x) for x in xs]
    return 100 * sum(diffs) / len(diffs), len(diffs)


def fits_of(record, setting, stage):
    return [f for f in record["fits"] if f["setting"] == setting and f["stage"] == stage]


def judge(record, setting, stage):
    """Rules 1-3 for one experiment: gain, time ratio and outcome of
    ``setting`` against the default fitted in the same ``stage``."""
    candidate, default = fits_of(record, setting, stage), fits_of(record, "default", stage)
    if not candidate or not default:
        return None
    gain, n_matched = matched_gain(
        [(f["n_nonzero"], f["validation_accuracy"]) for f in candidate],
        [(f["n_nonzero"], f["validation_accuracy"]) for f in default])
    ratio = (sum(f["fit_seconds"] for f in candidate)
             / sum(f["fit_seconds"] for f in default))
    if gain is None:
        outcome = "no overlap"
    elif gain > WIN_POINTS:
        outcome = "win"
    elif gain < -LOSS_POINTS:
        outcome = "loss"
    else:
        outcome = "tie"
    return {"gain_points": gain, "n_matched": n_matched, "time_ratio": ratio,
            "outcome": outcome}


def verdict(records, setting, stage, applicable):
    """Rule 4 over the experiments ``applicable`` selects: None when one of
    them lacks the fits."""
    chosen = [r for r in records if applicable(r)]
    per = {r["experiment"]: judge(r, setting, stage) for r in chosen}
    if not per or any(j is None for j in per.values()):
        return None
    wins = sum(j["outcome"] == "win" for j in per.values())
    losses = sum(j["outcome"] == "loss" for j in per.values())
    slow = [e for e, j in per.items() if j["time_ratio"] > MAX_TIME_RATIO]
    gains = [j["gain_points"] for j in per.values() if j["gain_points"] is not None]
    return {"setting": setting, "stage": stage, "per_experiment": per, "wins": wins,
            "losses": losses, "too_slow_on": slow, "n_experiments": len(per),
            "mean_gain_points": sum(gains) / len(gains) if gains else None,
            "passes": wins > len(per) / 2 and losses == 0 and not slow}


def decide(records):
    """The decision rule on the experiments' records (their JSON files):
    each factor's verdicts, its candidate, the combination's verdict and the
    defaults the rule chooses (``changes``: only what differs from the previous defaults)."""
    names = {r["experiment"] for r in records}
    complete = names == set(EXPERIMENTS)
    factors = {}
    for factor, values in FACTORS.items():
        verdicts = [verdict(records, label({**DEFAULT, factor: value}), "factors",
                            lambda r, f=factor: applies(f, r["kind"]))
                    for value in values]
        passing = [(v, value) for v, value in zip(verdicts, values) if v and v["passes"]]
        best = max(passing, key=lambda p: p[0]["mean_gain_points"], default=None)
        factors[factor] = {"verdicts": [v for v in verdicts if v],
                           "candidate": None if best is None else best[1]}
    candidates = {f: d["candidate"] for f, d in factors.items()
                  if d["candidate"] is not None}
    out = {"complete": complete, "factors": factors, "candidates": candidates,
           "combination": None, "changes": None}
    if not complete:
        return out
    if len(candidates) < 2:
        out["changes"] = candidates
        return out
    stale = [r["experiment"] for r in records for f in fits_of(r, "combination", "combination")
             if f["params"] != combination_setting(candidates, r["kind"])]
    if stale:  # fitted for other candidates: run the combination stage again
        out["combination_stale_on"] = sorted(set(stale))
        return out
    combination = verdict(records, "combination", "combination", lambda r: True)
    out["combination"] = combination
    if combination is None:
        return out  # the combination stage has not run yet
    combination["params"] = {r["experiment"]: combination_setting(candidates, r["kind"])
                             for r in records}
    if combination["passes"]:
        out["changes"] = candidates
    else:
        best = max(candidates, key=lambda f: next(
            v["mean_gain_points"] for v in factors[f]["verdicts"]
            if v["setting"] == label({**DEFAULT, f: candidates[f]})))
        out["changes"] = {best: candidates[best]}
    return out


def combination_setting(candidates, kind):
    return {**DEFAULT, **{f: v for f, v in candidates.items() if applies(f, kind)}}


# --------------------------------------------------------------- experiments
def log(*args):
    print(time.strftime("[%H:%M:%S]"), *args, flush=True)


def prepare(name, data_home, threads):
    """Data, teacher, baseline and the fit / validation split of one
    experiment, and what its JSON says about them."""
    import _experiments as E
    import numpy as np

    from sksim import TorchBaseline

    spec = EXPERIMENTS[name]
    info = {}
    if spec["kind"] == "mlp":
        if spec["dataset"] == "digits":  # its 70/30 split; the test part is unused
            data = E.load_dataset("digits", data_home, E.SEED)
        else:
            from sksim.datasets import load_fashion_mnist

            data = load_fashion_mnist(data_home, splits=("train",))
            data.description = "Fashion-MNIST, official training split (60,000 images)"
        # E.get_teacher's recipe and cache, without its test-set accuracy
        recipe = E.TEACHER_RECIPES[spec["dataset"]]
        cached = E.cached_teacher(data.X_train, data.y_train, recipe["widths"],
                                  epochs=recipe["epochs"], seed=E.SEED,
                                  batch=recipe["batch"], dataset=spec["dataset"], log=log)
        teacher = cached.model
        for p in teacher.parameters():
            p.requires_grad_(False)
        widths = "-".join(map(str, recipe["widths"]))
        info = {"architecture": f"MLP {data.X_train.shape[1]}-{widths}-10 (ReLU)",
                "recipe": f"examples/_experiments.py: Adam lr 1e-3, batch "
                          f"{recipe['batch']}, {recipe['epochs']} epochs on the "
                          f"{len(data.X_train):,} training images, seed {E.SEED}",
                "n_weights": E.n_weights(teacher),
                "source": "trained in this run (recipe above)" if cached.trained_now
                          else f"cache {cached.path.name} (recipe above)"}
        baseline = TorchBaseline(teacher)

        def logits(X):
            return E.torch_logits(teacher, X)
    else:
        from _conv_experiments import teacher_logits, teacher_weight_count

        if spec["dataset"] == "cifar-100":
            from cifar100_teacher import INPUT_SHAPE, WEIGHTS, load_teacher

            from sksim.datasets import load_cifar100

            data = load_cifar100(data_home, splits=("train",))
            data.description = "CIFAR-100, official training split (50,000 images)"
            teacher = load_teacher(WEIGHTS)
            batch = 250
            architecture = ("all-convolutional, six 3x3 conv-BatchNorm-ReLU blocks "
                            "(32-32-64-64-128-128), global average pooling, linear "
                            "128-100 (examples/cifar100_teacher.py)")
        else:
            from fashion_mnist_cnn import INPUT_SHAPE, WEIGHTS, load_or_train_teacher

            from sksim.datasets import load_fashion_mnist

            if not WEIGHTS.is_file():
                raise FileNotFoundError(f"teacher weights {WEIGHTS} missing")
            data = load_fashion_mnist(data_home, splits=("train",))
            data.description = "Fashion-MNIST, official training split (60,000 images)"
            teacher = load_or_train_teacher(data, WEIGHTS)
            batch = 1024
            architecture = ("CNN conv 1-16 and 16-32 (3x3, stride 2), linear "
                            "1568-64-10, ReLU (examples/fashion_mnist_cnn.py)")
        for p in teacher.parameters():
            p.requires_grad_(False)
        info = {"architecture": architecture, "source": str(WEIGHTS.relative_to(REPO_ROOT)),
                "n_weights": teacher_weight_count(teacher)}
        baseline = TorchBaseline(teacher, input_shape=INPUT_SHAPE, batch_size=batch)

        def logits(X):
            return teacher_logits(teacher, X, INPUT_SHAPE)
    fit_idx, val_idx = E.split_subset(len(data.X_train), spec["m"], spec["n_val"], E.SEED)
    X_fit, y_fit = data.X_train[fit_idx], data.y_train[fit_idx]
    X_val, y_val = data.X_train[val_idx], data.y_train[val_idx]
    fit_logits = logits(X_fit)
    teacher_val = logits(X_val).argmax(1)
    info["validation_accuracy"] = float(np.mean(teacher_val == y_val))
    info["fit_subset_accuracy"] = float(np.mean(fit_logits.argmax(1) == y_fit))
    split = {"n_train": len(data.X_train), "m": len(fit_idx),
             "n_validation": len(val_idx),
             "rule": "_experiments.split_subset(n_train, m, n_val, seed=0): the first m "
                     "of a seed-0 permutation of the training split fit, the next "
                     "n_val validate; the test split is not used"}
    context = {"baseline": baseline, "fit": (X_fit, y_fit, fit_logits),
               "val": (X_val, y_val, teacher_val), "threads": threads}
    return context, info, split, getattr(data, "description", spec["dataset"])


def fit_one(context, alpha, params, validate=True):
    """One SIM fit on the fit subset, measured on the validation subset
    (``validate=False``: the fit only, untimed)."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning

    from sksim import SIMClassifier

    X_fit, y_fit, fit_logits = context["fit"]
    X_val, y_val, teacher_val = context["val"]
    model = SIMClassifier(context["baseline"], alpha=alpha, random_state=0,
                          n_jobs=context["threads"], **params)
    if not validate:
        return model.fit(X_fit, y_fit, baseline_outputs=fit_logits)
    runs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        # a fit under SHORT_FIT seconds is timed again (same result: the fit
        # is deterministic) and its median kept, so a ratio of fit times is
        # not a ratio of timer noise
        while not runs or (sum(runs) < SHORT_FIT and len(runs) < 5):
            start = time.perf_counter()
            model.fit(X_fit, y_fit, baseline_outputs=fit_logits)
            runs.append(time.perf_counter() - start)
    fit_seconds = sorted(runs)[len(runs) // 2]
    start = time.perf_counter()
    scores = model.decision_function(X_val)
    predict_seconds = time.perf_counter() - start
    pred = model.classes_[scores.argmax(axis=1)]
    if model._is_weight_shared():
        head = int(sum(np.count_nonzero(k) for k in model.output_kernels_))
    else:
        head = int(model.C_.nnz + model.D_.nnz)
    return {"alpha": alpha, "params": dict(params),
            "validation_accuracy": float(np.mean(pred == y_val)),
            "validation_agreement": float(np.mean(pred == teacher_val)),
            "n_nonzero": int(model.n_nonzero_), "head_nonzero": head,
            "fit_seconds": fit_seconds, "fit_seconds_runs": runs,
            "predict_seconds": predict_seconds,
            "lipschitz_bound": float(model.lipschitz_bound_),
            "warnings": sorted({str(w.message)[:200] for w in caught})}


def warm_up(context, settings, alpha, n=200):
    """One untimed fit per setting on the first ``n`` fit images, so that no
    timed fit pays for compiling (or loading) numba's kernels."""
    import numpy as np

    X_fit, y_fit, fit_logits = context["fit"]
    # every class at least once (a classifier's outputs are its classes)
    firsts = np.unique(y_fit, return_index=True)[1]
    index = np.union1d(firsts, np.arange(max(n - len(firsts), 0)))
    small = {**context, "fit": (X_fit[index], y_fit[index], fit_logits[index])}
    start = time.perf_counter()
    for _, params in settings:
        fit_one(small, alpha, params, validate=False)
    log(f"warm-up fits ({len(settings)} settings on {len(index)} images): "
        f"{time.perf_counter() - start:.0f} s")


def machine(threads):
    import numpy as np
    import scipy
    import sklearn
    import torch

    import sksim

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip()
                   for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import subprocess

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True,
                                  text=True, timeout=30, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {"git_commit": git("rev-parse", "HEAD"),
            # changes to tracked files other than the results being written
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--",
                                  ".", ":!examples/results")),
            "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "torch": torch.__version__, "sksim": sksim.__version__,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_stage(name, stage, settings, path, data_home, threads, command):
    """Fit ``settings`` (label, parameters) over the experiment's alphas
    (alpha, then setting) and write the fits into ``path``, replacing that
    stage's earlier fits."""
    spec = EXPERIMENTS[name]
    record = json.loads(path.read_text()) if path.is_file() else None
    if stage == "combination" and record is None:
        raise FileNotFoundError(f"{path} (the factor fits) missing")
    context, info, split, description = prepare(name, data_home, threads)
    if record is None or stage == "factors":
        record = {"experiment": name, "kind": spec["kind"], "dataset": spec["dataset"],
                  "data": description, "teacher": info, "split": split,
                  "alphas": list(spec["alphas"]), "default": DEFAULT,
                  "candidates": {f: list(v) for f, v in FACTORS.items()
                                 if applies(f, spec["kind"])},
                  "stages": {}, "fits": []}
    record.update(data=description, teacher=info, split=split)  # same in every stage
    record["fits"] = [f for f in record["fits"] if f["stage"] != stage]
    record["stages"][stage] = {"command": command, "machine": machine(threads),
                               "settings": {name: params for name, params in settings}}
    start_stage = time.perf_counter()
    warm_up(context, settings, min(spec["alphas"]))
    record["stages"][stage]["warm_up_seconds"] = time.perf_counter() - start_stage
    start_stage = time.perf_counter()
    log(f"{name} {stage}: teacher validation accuracy {info['validation_accuracy']:.4f}; "
        f"m {split['m']}, {split['n_validation']} validation images; "
        f"{len(settings)} settings x {len(spec['alphas'])} alphas")
    for alpha in spec["alphas"]:
        for setting, params in settings:
            fit = {"stage": stage, "setting": setting, **fit_one(context, alpha, params)}
            record["fits"].append(fit)
            log(f"{name} {stage} alpha={alpha:g} [{fit['setting']}]: validation "
                f"{fit['validation_accuracy']:.4f}, agreement "
                f"{fit['validation_agreement']:.4f}, nonzeros {fit['n_nonzero']:,} "
                f"(head {fit['head_nonzero']:,}), fit {fit['fit_seconds']:.1f} s"
                + (f", {len(fit['warnings'])} warning(s)" if fit["warnings"] else ""))
            path.write_text(json.dumps(record, indent=1) + "\n")
    record["stages"][stage]["seconds"] = time.perf_counter() - start_stage
    record["stages"][stage]["load_average_at_end"] = os.getloadavg()
    path.write_text(json.dumps(record, indent=1) + "\n")
    log(f"wrote {path}")
    return record


DATA_FILES = {"fashion-mnist": "fashion-mnist/fashion-mnist-train.npz",
              "cifar-100": "cifar-100/cifar-100-train.npz"}


def check_data(experiments, data_home):
    """Before any fit: the training files every chosen experiment reads
    (FileNotFoundError naming them; digits is embedded). Without a data
    folder Fashion-MNIST comes from OpenML, CIFAR-100 from nowhere."""
    needed = sorted({EXPERIMENTS[e]["dataset"] for e in experiments} & set(DATA_FILES))
    folder = None if data_home is None else Path(data_home)
    if folder is None:
        needed = [d for d in needed if d == "cifar-100"]
    missing = [DATA_FILES[d] for d in needed
               if folder is None or not (folder / DATA_FILES[d]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"data_home is {folder}, but it has no {', '.join(missing)}; pass --data-home "
            "(or set SKSIM_DATA) to the folder of the data files")


def load_records(folder):
    return [json.loads((Path(folder) / f"{name}.json").read_text())
            for name in EXPERIMENTS if (Path(folder) / f"{name}.json").is_file()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", choices=list(EXPERIMENTS),
                        default=list(EXPERIMENTS))
    parser.add_argument("--stage", choices=["factors", "combination", "all"], default="all")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of numba, BLAS and torch, and n_jobs (default 1)")
    from _shared import default_data_home

    parser.add_argument("--data-home", default=default_data_home(),
                        help="folder with fashion-mnist/ and cifar-100/ (default: "
                             "$SKSIM_DATA, else ../shared/data)")
    parser.add_argument("--output-dir", default=str(
        EXAMPLES_DIR / "output" / time.strftime("defaults-%Y%m%d-%H%M%S", time.gmtime())),
        help="where the JSON files go (default: a new examples/output/defaults-<UTC "
             "time>/; examples/results/defaults regenerates the committed results)")
    args = parser.parse_args(argv)
    for variable in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    check_data(args.experiments, args.data_home)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python examples/defaults_protocol.py " + " ".join(
        a for a in sys.argv[1:])
    if args.stage in ("factors", "all"):
        for name in args.experiments:
            run_stage(name, "factors", [(label(s), s) for s in
                                        factor_settings(EXPERIMENTS[name]["kind"])],
                      out_dir / f"{name}.json", args.data_home, args.threads, command)
    if args.stage in ("combination", "all"):
        decision = decide(load_records(out_dir))
        candidates = decision["candidates"]
        if not decision["complete"]:
            log("combination: waits for the factor fits of every experiment in "
                f"{out_dir}")
        elif len(candidates) < 2:
            log(f"combination: not needed, candidates {candidates}")
        else:
            for name in args.experiments:
                kind = EXPERIMENTS[name]["kind"]
                run_stage(name, "combination",
                          [("default", dict(DEFAULT)),
                           ("combination", combination_setting(candidates, kind))],
                          out_dir / f"{name}.json", args.data_home, args.threads, command)
    decision = decide(load_records(out_dir))
    (out_dir / "decision.json").write_text(json.dumps(decision, indent=1) + "\n")
    log(f"decision: candidates {decision['candidates']}, changes {decision['changes']}")
    return decision


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
