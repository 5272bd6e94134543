"""``solve_rows`` with its default solver against each explicit one (issue 26 item 2).

The state rows of a scikit-learn MLP 784-64-32-16 (ReLU, 30 epochs, seed 0)
trained on the first 5,000 images of MNIST's test split, on the design
``[relu(Z), X]`` of the other 5,000 (112 rows, 896 columns, centred),
unconstrained, ``l1 = 1e-3``, ``tol = 1e-6``, ``max_iter = 20000``; every
solver in this one run, after one warm-up solve of each (kernels loaded).
The objectives are reported too: they agree to the solvers' tolerance.

Run:  python benchmarks/bench_solver_default.py --data-home DIR
Writes benchmarks/results/solver_default.json.
"""

import warnings

import numpy as np

import _common as C

SOLVERS = {"default": {}, "cd": {"solver": "cd"}, "auto": {"solver": "auto"},
           "homotopy": {"solver": "homotopy"}}


def _problem(data_home):
    from sklearn.neural_network import MLPClassifier

    from sksim.datasets import load_mnist
    from sksim.design import GramAccumulator

    data = load_mnist(data_home, splits=("test",))
    X, y = data.X_test.astype(np.float64), data.y_test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 30 epochs: a ConvergenceWarning, as intended
        mlp = MLPClassifier((64, 32, 16), max_iter=30, random_state=C.SEED).fit(X[:5000],
                                                                              y[:5000])
    post, pre = X[5000:], []
    for weights, bias in zip(mlp.coefs_[:-1], mlp.intercepts_[:-1]):
        pre.append(post @ weights + bias)
        post = np.maximum(pre[-1], 0.0)
    states = np.hstack(pre)
    accumulator = GramAccumulator(states.shape[1] + X.shape[1], states.shape[1], True)
    accumulator.add(np.hstack([np.maximum(states, 0.0), X[5000:]]), states)
    problem = accumulator.finish()
    return problem.gram, problem.correlations, problem.target_sq


def main():
    from sksim.solvers import solve_rows

    parser = C.base_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args()
    problem = _problem(args.data_home)
    options = {"l1": 1e-3, "tol": 1e-6, "max_iter": 20000}
    for kw in SOLVERS.values():  # warm up: load every kernel
        solve_rows(problem[0][:8, :8], problem[1][:2, :8], problem[2][:2], **options, **kw)
    results = {"machine": C.machine_info(), "command": C.command_line(),
               "n_rows": int(problem[1].shape[0]), "n_columns": int(problem[0].shape[0]),
               "options": options, "solvers": {}}
    for name, kw in SOLVERS.items():
        times, solution = C.timed(lambda kw=kw: solve_rows(*problem, **options, **kw),
                                  args.repeats)
        results["solvers"][name] = {"median_s": float(np.median(times)),
                                    "times_s": [float(t) for t in times],
                                    "objective_sum": float(solution.objective.sum())}
        C.log(f"{name}: {results['solvers'][name]}")
    C.write_json("solver_default", results, args.output, args.quick)


if __name__ == "__main__":
    main()
