"""Cross-validation cost and predict ratios on a busy machine (issue 26, items 1 and 3).

Digits (embedded in scikit-learn), nothing downloaded:

* **cross-validation**: a 64-64 ReLU ``MLPClassifier`` (300 epochs, seed 0)
  on the 1,797 digits, its hidden pre-activations recorded on 2,000 rows
  (the digits plus 203 noisy copies); ``SIMRegressorCV(cv=3)`` (20 alphas)
  fitting the teacher's logits against one ``SIMRegressor`` fit at the
  grid's smallest alpha (min of 2 and of 5 runs); whether ``alpha_`` sits
  on the grid's edge;
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


def cross_validation():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    from sksim import SIMRegressor, SIMRegressorCV
    from sksim.baselines import mlp_forward

    rng = np.random.default_rng(C.SEED)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier((64, 64), max_iter=300, random_state=C.SEED).fit(X, y)
    extra = 2000 - len(X)
    X2 = np.vstack([X, X[:extra] + 0.05 * rng.standard_normal((extra, X.shape[1]))])
    states, logits = mlp_forward(mlp.coefs_, mlp.intercepts_, X2)

    def cv():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the edge warning: recorded below
            return SIMRegressorCV(cv=3).fit(X2, logits, states=states)

    model = cv()  # warm: kernels loaded
    smallest = float(model.alphas_.min())
    single = lambda: SIMRegressor(alpha=smallest).fit(X2, logits, states=states)  # noqa: E731
    single()
    cv_s = min(_clock(cv) for _ in range(2))
    single_s = min(_clock(single) for _ in range(5))
    return {"n_samples": int(X2.shape[0]), "n_states": int(states.shape[1]),
            "cv_s": cv_s, "single_fit_smallest_alpha_s": single_s,
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
    parser.set_defaults(repeats=15)
    args = parser.parse_args()
    busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
            if args.busy else None)
    try:
        results = {"machine": C.machine_info(), "command": C.command_line(),
                   "busy_loop": args.busy,
                   "cross_validation": cross_validation(), "predict": predict(args.repeats),
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
