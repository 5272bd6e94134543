"""Distil a torch MLP trained on Fashion-MNIST into a sparse SIM model.
====================================================================

Trains the architecture of the official SIM package's example (784-64-32-16-10,
ReLU) for a few epochs, distils it with ``SIMClassifier(TorchBaseline(model))``
on a training subset (the output rows fit the teacher's logits, the paper's
choice), and reports teacher and SIM test accuracy, nonzero parameters and fit
time. Saves the sparsity pattern of [A B; C D] and a JSON of the numbers.

    python examples/torch_fashion_mnist.py --data-home ../shared/data

Data: ``--data-home`` or the SKSIM_DATA environment variable pointing at a
folder with ``fashion-mnist/fashion-mnist-{train,test}.npz``; otherwise it is
fetched from OpenML.
"""

import argparse
import json
import time
from pathlib import Path

import _shared as shared  # the teacher recipe and cache of the examples and benchmarks
import numpy as np
import scipy.sparse as sp
import torch

from sksim import SIMClassifier, TorchBaseline
from sksim.datasets import load_fashion_mnist
from sksim.inspection import infinity_norm


def teacher_nonzeros(model):
    return int(sum(int((p != 0).sum()) for p in model.parameters()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--n-sim", type=int, default=2000,
                        help="training samples used to record states (default 2000, "
                             "as in the official tutorial)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=1e-3)
    parser.add_argument("--kappa", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=str(
        Path(__file__).resolve().parent / "output"
        / time.strftime("run-%Y%m%d-%H%M%S", time.gmtime())),
                        help="where results go (default: a new examples/output/run-<UTC "
                             "time>/; pass examples/results to regenerate the committed "
                             "results)")
    args = parser.parse_args()

    data = load_fashion_mnist(args.data_home)
    # Trained once (about 4 minutes on 2 cores), then loaded from the cache.
    cached = shared.cached_teacher(data.X_train, data.y_train, (64, 32, 16),
                                   epochs=args.epochs, seed=args.seed)
    teacher, train_time = cached.model, cached.train_seconds
    with torch.no_grad():
        teacher_pred = teacher(torch.as_tensor(data.X_test)).argmax(1).numpy()
    teacher_accuracy = float(np.mean(teacher_pred == data.y_test))

    rng = np.random.default_rng(args.seed)
    subset = rng.choice(len(data.X_train), size=args.n_sim, replace=False)
    X_sim, y_sim = data.X_train[subset], data.y_train[subset]
    baseline = TorchBaseline(teacher)
    _, logits = baseline.record(X_sim)
    model = SIMClassifier(baseline, alpha=args.alpha, kappa=args.kappa)
    start = time.perf_counter()
    model.fit(X_sim, y_sim, baseline_outputs=logits)
    fit_time = time.perf_counter() - start
    sim_pred = model.predict(data.X_test)
    sim_accuracy = float(np.mean(sim_pred == data.y_test))
    agreement = float(np.mean(sim_pred == teacher_pred))

    results = {
        "teacher": f"MLP 784-64-32-16-10 (ReLU), Adam, {args.epochs} epochs on 60,000 images",
        "teacher_train_seconds": round(train_time, 1),
        "teacher_test_accuracy": teacher_accuracy,
        "sim_training_samples": args.n_sim,
        "alpha": args.alpha,
        "kappa": args.kappa,
        "sim_test_accuracy": sim_accuracy,
        "accuracy_gap_points": round(100 * (teacher_accuracy - sim_accuracy), 2),
        "agreement_with_teacher": agreement,
        "teacher_nonzero_parameters": teacher_nonzeros(teacher),
        "sim_nonzero_parameters": model.n_nonzero_
        + int(np.count_nonzero(model.state_intercept_))
        + int(np.count_nonzero(model.intercept_)),
        "sim_fit_seconds": round(fit_time, 2),
        "A_inf_norm": infinity_norm(model.A_),
        "lipschitz_bound": float(model.lipschitz_bound_),
        "max_relative_state_gap": float(np.max(
            model.state_duality_gaps_ / np.maximum(model.state_objectives_, 1e-300))),
    }
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "torch_fashion_mnist.json").write_text(json.dumps(results, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no figure")
        return
    full = sp.bmat([[model.A_, model.B_], [model.C_, model.D_]])
    fig, ax = plt.subplots(figsize=(12, 3.2))
    ax.spy(full, markersize=0.6, aspect="auto")
    n_states = model.n_states_
    ax.axvline(n_states - 0.5, color="tab:red", lw=0.8)
    ax.axhline(n_states - 0.5, color="tab:red", lw=0.8)
    ax.set_title(f"Sparsity of [A B; C D], SIM on Fashion-MNIST "
                 f"({full.nnz:,} nonzeros, test accuracy {sim_accuracy:.2%})")
    ax.set_xlabel("column: states (left of red line) | input pixels")
    ax.set_ylabel("row: states | outputs")
    fig.tight_layout()
    fig.savefig(output_dir / "torch_fashion_mnist_sparsity.png", dpi=130)
    print(f"saved {output_dir / 'torch_fashion_mnist_sparsity.png'}")


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
