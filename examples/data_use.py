"""Data use: accuracy against the number of recorded samples
=========================================================

Data use (issue 5, experiment 4): SIM test accuracy against the number of
training samples whose states are recorded.

    nice -n 10 python examples/data_use.py --dataset fashion-mnist

For each m, the teacher's states are recorded on the first m images of one
fixed permutation of the training split (nested subsets) and SIMClassifier is
fitted at fixed alpha(s), kappa=0.95 (output rows distil the teacher's
logits). The authors of SIM report a plateau at 20-30% of the training data.

Writes ``data_use_<dataset>.json`` and ``.png`` to ``--output-dir`` (default: a new
``examples/output/run-<UTC time>/``; ``--output-dir examples/results`` regenerates the
committed results).
"""

import argparse
import time
from pathlib import Path


import _experiments as E

DEFAULT_MS = [250, 500, 1000, 2000, 5000, 10000, 20000, 30000, 60000]


def main():
    parser = E.add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--ms", type=int, nargs="+", default=DEFAULT_MS,
                        help="subset sizes (capped at the training split's size)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e-3, 1e-2])
    args = parser.parse_args()
    start_all = time.perf_counter()
    out_dir = Path(args.output_dir)

    data = E.load_dataset(args.dataset, args.data_home, args.seed)
    teacher, tinfo = E.get_teacher(args.dataset, data, args.seed)
    n_teacher = E.teacher_weight_count(teacher)
    n_train = len(data.X_train)
    ms = sorted({min(m, n_train) for m in args.ms})
    E.log(f"{args.dataset}: teacher test {tinfo['test_accuracy']:.4f}; m in {ms}")

    points = []
    for m in ms:
        index = E.subset_indices(n_train, m, args.seed)
        X, y = data.X_train[index], data.y_train[index]
        t0 = time.perf_counter()
        states, logits = E.record(teacher, X)
        record_seconds = time.perf_counter() - t0
        for alpha in args.alphas:
            est, sec = E.fit_sim(X, y, states, logits, alpha=alpha)
            point = {"m": m, "fraction_of_training_data": m / n_train, "alpha": alpha,
                     "record_seconds": round(record_seconds, 2),
                     **E.sim_summary(est, data, n_teacher, sec)}
            points.append(point)
            E.log(f"m={m} alpha={alpha:g}: acc {point['test_accuracy']:.4f}, nnz "
                  f"{point['n_nonzero']}, {sec:.1f} s")
        del states, logits

    plateau = {}
    for alpha in args.alphas:
        series = [p for p in points if p["alpha"] == alpha]
        best = max(p["test_accuracy"] for p in series)
        # smallest m within 0.5 point of the best accuracy over all m
        first = min((p for p in series if p["test_accuracy"] >= best - 0.005),
                    key=lambda p: p["m"])
        plateau[str(alpha)] = {"best_accuracy": best,
                               "smallest_m_within_0.5pt_of_best": first["m"],
                               "its_fraction": first["fraction_of_training_data"]}
    payload = {
        "experiment": "data_use", "dataset": args.dataset, "data": data.description,
        "command": f"python examples/data_use.py --dataset {args.dataset}",
        "teacher": {**tinfo, "n_weights_total": n_teacher}, "kappa": E.KAPPA,
        "subsets": "first m of one fixed permutation (seed %d) of the training split; "
                   "nested" % args.seed,
        "points": points, "plateau": plateau,
        "seconds_total": round(time.perf_counter() - start_all, 1),
        "environment": E.environment(),
    }
    E.write_json(out_dir / f"data_use_{args.dataset}.json", payload)
    plot(payload, out_dir / f"data_use_{args.dataset}.png")


def plot(payload, path):
    plt = E.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    alphas = sorted({p["alpha"] for p in payload["points"]})
    for alpha, color in zip(alphas, ("tab:blue", "tab:green", "tab:purple", "tab:red")):
        series = sorted((p for p in payload["points"] if p["alpha"] == alpha),
                        key=lambda p: p["m"])
        fr = [p["fraction_of_training_data"] for p in series]
        ax.plot(fr, [p["test_accuracy"] for p in series], marker="o", color=color,
                label=f"SIM, alpha {alpha:g}")
        ax2.plot(fr, [p["nonzero_fraction"] for p in series], marker="o", color=color,
                 label=f"SIM, alpha {alpha:g}")
    teacher = payload["teacher"]["test_accuracy"]
    ax.axhline(teacher, color="k", lw=1, label=f"teacher ({teacher:.2%})")
    ax.axvspan(0.2, 0.3, color="gray", alpha=0.15,
               label="20-30% of the data (plateau reported by the authors)")
    n_train = payload["points"][-1]["m"] / payload["points"][-1]["fraction_of_training_data"]
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlabel(f"fraction of the {int(round(n_train)):,} training images whose "
                     "states are recorded (m / n)")
        a.grid(True, which="both", alpha=0.3)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{payload['dataset']}: SIM accuracy vs training data used")
    ax.legend(fontsize=8, loc="lower right")
    ax2.set_ylabel("nonzero weights / teacher's weight count")
    ax2.set_title("model size vs training data used (fixed alpha)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    E.save_figure(fig, path)


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
