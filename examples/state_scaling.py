"""State scaling of torch teachers
===============================

State scaling of torch teachers (issue 13): accuracy against nonzero
parameters for each ``state_scaling`` of ``SIMClassifier``.

    nice -n 10 python examples/state_scaling.py --dataset fashion-mnist

For each alpha of the sparsity sweep, fits
``SIMClassifier(TorchBaseline(teacher), alpha=alpha, state_scaling=s)`` for
``s`` in ``"well_posed"`` (the default: the teacher itself meets the kappa
bound), ``"rms"`` (each layer's states at unit RMS) and ``"none"`` (as
recorded), on the same training subset and teacher as ``sparsity.py``, and
reports test accuracy and nonzeros (fractions of the teacher's weights).
Writes ``state_scaling_<dataset>.json`` to ``--output-dir`` (default: a new
``examples/output/run-<UTC time>/``; ``examples/results`` regenerates the committed ones).
"""

import argparse
import time
import warnings
from pathlib import Path

import _experiments as E
from sklearn.exceptions import ConvergenceWarning

from sksim import SIMClassifier, TorchBaseline

SCALINGS = ("well_posed", "rms", "none")
DEFAULT_ALPHAS = [1e-1, 5e-2, 3e-2, 2e-2, 1e-2, 5e-3, 3e-3, 2e-3, 1e-3, 5e-4, 3e-4, 2e-4, 1e-4]


def main():
    parser = E.add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--alphas", type=float, nargs="+", default=DEFAULT_ALPHAS)
    args = parser.parse_args()
    data = E.load_dataset(args.dataset, args.data_home, args.seed)
    teacher, tinfo = E.get_teacher(args.dataset, data, args.seed)
    n_teacher = E.teacher_weight_count(teacher)
    index = E.subset_indices(len(data.X_train), E.DEFAULT_M[args.dataset], args.seed)
    X, y = data.X_train[index], data.y_train[index]
    series = {}
    for scaling in SCALINGS:
        series[scaling] = []
        for alpha in args.alphas:
            est = SIMClassifier(TorchBaseline(teacher), alpha=alpha, kappa=E.KAPPA,
                                state_scaling=scaling)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X, y)
            point = {"alpha": alpha, **E.sim_summary(est, data, n_teacher,
                                                     time.perf_counter() - start),
                     "block_scales": sorted(set(est.state_scales_.round(6).tolist()))
                     if est.state_scales_ is not None else None}
            series[scaling].append(point)
            E.log(f"{scaling} alpha={alpha:g}: acc {point['test_accuracy']:.4f}, nnz "
                  f"{point['n_nonzero']} ({point['nonzero_fraction']:.3f})")
    E.write_json(Path(args.output_dir) / f"state_scaling_{args.dataset}.json", {
        "experiment": "state_scaling", "dataset": args.dataset, "m": len(index),
        "teacher": tinfo, "n_teacher_weights": n_teacher, "kappa": E.KAPPA,
        "series": series, "environment": E.environment()})


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
