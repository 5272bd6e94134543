"""Cross-validation cost and predict ratios on a busy machine (issue 26, items 1 and 3).

Digits (embedded in scikit-learn), nothing downloaded:

* **cross-validation**: a ReLU ``MLPClassifier`` (300 epochs, seed 0) on
  the 1,797 digits, its hidden pre-activations recorded on 2,000 rows (the
  digits plus 203 noisy copies), twice: the 64 pixels under a 64-64
  teacher, and each image repeated 3x3 and padded to 28 x 28 (784 inputs)
  under a 64-32-16 teacher, the shape of an MNIST MLP's states;
  ``SIMRegressorCV(cv=3)`` (20 alphas) fitting the teacher's logits against
  one ``SIMRegressor`` fit at the grid's smallest alpha (interleaved, min of
  ``--cv-repeats`` and of three times as many); whether ``alpha_`` sits on
  the grid's edge;
* **predict**: ``SIMClassifier(alpha=1e-4)`` with its embedded teacher (an
  implicit and a ``structure="feedforward"`` model) on 40,000 rows (digits
  resampled with N(0, 0.01^2) noise) against the teacher's forward pass in
  numpy (GEMMs + ReLU), interleaved, min of ``--repeats``.

The machine's load average is recorded; ``--busy`` runs the measurements
beside a one-core busy loop (a subprocess), as on a shared 2-core machine.

Run:  python benchmarks/bench_first_day.py            (first_day.json)
      python benchmarks/bench_first_day.py --busy     (first_day_busy.json)
Writes benchmarks/results/first_day[_busy].json.
"""

import os
import subprocess
import sys
import time
import warnings

import numpy as np

import _common as C


def _clock(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cv_problem(upscaled):
    """Digits rows and a ReLU MLP teacher's hidden pre-activations and logits:
    2,000 rows (the 1,797 digits and 203 noisy copies). ``upscaled``: each
    image repeated 3x3 and padded to 28 x 28 (784 inputs) under a 64-32-16
    teacher, the shape of an MNIST MLP's recorded states; else the 64 pixels
    under a 64-64 teacher."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    from sksim.baselines import mlp_forward

    rng = np.random.default_rng(C.SEED)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    hidden = (64, 64)
    if upscaled:
        images = np.kron(X.reshape(-1, 8, 8), np.ones((3, 3)))
        X = np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(len(X), -1)
        hidden = (64, 32, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden, max_iter=300, random_state=C.SEED).fit(X, y)
    extra = 2000 - len(X)
    X2 = np.vstack([X, X[:extra] + 0.05 * rng.standard_normal((extra, X.shape[1]))])
    states, logits = mlp_forward(mlp.coefs_, mlp.intercepts_, X2)
    return X2, states, logits, hidden


def cross_validation(upscaled, repeats):
    """``SIMRegressorCV(cv=3)`` (20 alphas) fitting the teacher's logits
    against one ``SIMRegressor`` fit at the grid's smallest alpha,
    interleaved, min of ``repeats`` each."""
    from sksim import SIMRegressor, SIMRegressorCV

    X, states, logits, hidden = _cv_problem(upscaled)

    def cv():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the edge warning: recorded below
            return SIMRegressorCV(cv=3).fit(X, logits, states=states)

    model = cv()  # warm: kernels loaded
    smallest = float(model.alphas_.min())
    single = lambda: SIMRegressor(alpha=smallest).fit(X, logits, states=states)  # noqa: E731
    single()
    cv_runs, single_runs = [], []
    for _ in range(repeats):
        cv_runs.append(_clock(cv))
        single_runs.extend(_clock(single) for _ in range(3))
    cv_s, single_s = min(cv_runs), min(single_runs)
    return {"n_samples": int(X.shape[0]), "n_features": int(X.shape[1]),
            "teacher_hidden": list(hidden), "n_states": int(states.shape[1]),
            "cv_s": cv_s, "single_fit_smallest_alpha_s": single_s,
            "cv_runs_s": cv_runs, "single_runs_s": single_runs,
            "cv_over_single": cv_s / single_s, "target_ratio": 3 * (3 + 1),
            "alpha_on_grid_edge": bool(model.alpha_ == model.alphas_[-1])}


def predict(repeats):
    from sklearn.datasets import load_digits

    from sksim import SIMClassifier

    rng = np.random.default_rng(C.SEED)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        implicit = SIMClassifier(random_state=0, alpha=1e-4).fit(X, y)
        feedforward = SIMClassifier(random_state=0, alpha=1e-4,
                                    structure="feedforward").fit(X, y)
    teacher = implicit.baseline_
    rows = np.ascontiguousarray(X[rng.integers(0, len(X), 40000)]
                                + 0.01 * rng.standard_normal((40000, X.shape[1])))

    def teacher_forward():
        h = rows
        for k, (weights, bias) in enumerate(zip(teacher.coefs_, teacher.intercepts_)):
            h = h @ weights
            h += bias
            if k < len(teacher.coefs_) - 1:
                np.maximum(h, 0, out=h)
        return h

    calls = {"teacher": teacher_forward, "implicit": lambda: implicit.predict(rows),
             "feedforward": lambda: feedforward.predict(rows)}
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):  # interleaved: the same load for each
        for name, call in calls.items():
            times[name].append(_clock(call))
    best = {name: min(values) for name, values in times.items()}
    return {"n_rows": 40000, "teacher_hidden": list(teacher.hidden_layer_sizes),
            "min_s": best, "runs_s": times,
            "implicit_over_teacher": best["implicit"] / best["teacher"],
            "feedforward_over_teacher": best["feedforward"] / best["teacher"],
            "targets": {"implicit": 5.0, "feedforward": 2.0}}


def main():
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--busy", action="store_true",
                        help="measure beside a one-core busy loop")
    parser.add_argument("--cv-repeats", type=int, default=3,
                        help="runs of each cross-validation (min reported)")
    parser.set_defaults(repeats=15)
    args = parser.parse_args()
    busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
            if args.busy else None)
    try:
        results = {"machine": C.machine_info(), "command": C.command_line(),
                   "busy_loop": args.busy,
                   "cross_validation": [cross_validation(upscaled, args.cv_repeats)
                                        for upscaled in (False, True)],
                   "predict": predict(args.repeats),
                   "load_average_1_5_15_min": list(os.getloadavg())}
    finally:
        if busy is not None:
            busy.kill()
    C.log(f"cross-validation: {results['cross_validation']}")
    C.log({k: v for k, v in results["predict"].items() if k != "runs_s"})
    C.write_json("first_day_busy" if args.busy else "first_day", results, args.output,
                 args.quick)


if __name__ == "__main__":
    main()
