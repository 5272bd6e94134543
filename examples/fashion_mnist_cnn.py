"""Fashion-MNIST with a small CNN teacher: the weight-shared path end to end in minutes.
=====================================================================================

Teacher (trained here once, weights kept in ``examples/weights/`` as a plain
``.npz``): conv 1-16 (3x3, stride 2), ReLU, conv 16-32 (3x3, stride 2), ReLU,
flatten, linear 1568-64, ReLU, linear 64-10; Adam (lr 1e-3), batches of 128,
3 epochs, seed 0. SIM is fitted on the first ``--m`` training images with
every ReLU state of the teacher, outputs matched to its logits, over an alpha
sweep; the records (accuracy, agreement, nonzero kernel entries, fit and
predict times), then global magnitude pruning of the teacher at the same
counts and at 10/20/30% of its weights, without and with a one-epoch
fine-tune on the same m images, go to
``<output-dir>/fashion_mnist_cnn[_lateral<k>][_absolute][_model_inputs].json``::

    python examples/fashion_mnist_cnn.py --m 5000 --output-dir examples/results
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

EXAMPLES_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXAMPLES_DIR.parent
WEIGHTS = EXAMPLES_DIR / "weights" / "fashion_mnist_cnn.npz"
INPUT_SHAPE = (1, 28, 28)
for path in (REPO_ROOT, EXAMPLES_DIR):
    if str(path) not in sys.path:  # run from a checkout without installing
        sys.path.insert(0, str(path))


def build_teacher():
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def train_teacher(X, y, epochs=3, seed=0):
    import torch

    from _conv_experiments import train_classifier

    torch.manual_seed(seed)
    return train_classifier(build_teacher(), X, y, INPUT_SHAPE, epochs=epochs,
                            generator=torch.Generator().manual_seed(seed))


def load_or_train_teacher(data, path=WEIGHTS):
    import torch

    module = build_teacher()
    if Path(path).is_file():
        with np.load(path, allow_pickle=False) as archive:
            module.load_state_dict({k: torch.from_numpy(archive[k]) for k in archive.files})
        return module.eval()
    module = train_teacher(data.X_train, data.y_train)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: v.numpy() for k, v in module.state_dict().items()})
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=5000)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--kappa", type=float, default=0.95)
    parser.add_argument("--lateral-kernel", type=int, default=None)
    parser.add_argument("--skip-links", type=int, default=0)
    parser.add_argument("--relax", type=float, default=1.0)
    parser.add_argument("--output-alpha", type=float, default=None)
    parser.add_argument("--block-alpha", choices=["positions", "relative", "absolute"],
                        default="positions")
    parser.add_argument("--state-inputs", choices=["teacher", "model"], default="teacher")
    parser.add_argument("--data-home", default=os.environ.get("SKSIM_DATA"),
                        help="folder with fashion-mnist/*.npz (default $SKSIM_DATA, "
                             "else OpenML)")
    parser.add_argument("--weights", default=str(WEIGHTS),
                        help="teacher weights (.npz); trained and written if absent")
    parser.add_argument("--output-dir", default=str(EXAMPLES_DIR / "output" / "fashion_cnn"))
    args = parser.parse_args(argv)

    from _conv_experiments import (alpha_sweep, log, pruning_baseline, teacher_logits,
                                   teacher_weight_count)
    from sksim import TorchBaseline
    from sksim.datasets import load_fashion_mnist

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"_lateral{args.lateral_kernel}" if args.lateral_kernel else ""
    suffix += f"_{args.block_alpha}" if args.block_alpha != "positions" else ""
    suffix += "_model_inputs" if args.state_inputs == "model" else ""
    suffix += f"_skip{args.skip_links}" if args.skip_links else ""
    suffix += f"_relax{args.relax:g}" if args.relax != 1.0 else ""
    out_path = out_dir / f"fashion_mnist_cnn{suffix}.json"
    data = load_fashion_mnist(args.data_home)
    teacher = load_or_train_teacher(data, args.weights)
    start = time.perf_counter()
    test_logits = teacher_logits(teacher, data.X_test, INPUT_SHAPE)
    forward_seconds = time.perf_counter() - start
    X_train, y_train = data.X_train[:args.m], data.y_train[:args.m]
    train_logits = teacher_logits(teacher, X_train, INPUT_SHAPE)
    record = {"command": " ".join(sys.argv), "m": args.m, "kappa": args.kappa,
              "block_alpha": args.block_alpha, "state_inputs": args.state_inputs,
              "lateral_kernel": args.lateral_kernel, "skip_links": args.skip_links,
              "relax": args.relax, "output_alpha": args.output_alpha,
              "teacher": {"test_accuracy": float(np.mean(test_logits.argmax(1)
                                                         == data.y_test)),
                          "weights": teacher_weight_count(teacher),
                          "forward_seconds": forward_seconds},
              "fits": []}
    log("teacher", record["teacher"])
    baseline = TorchBaseline(teacher, input_shape=INPUT_SHAPE)
    params = dict(kappa=args.kappa, lateral_kernel=args.lateral_kernel,
                  block_alpha=args.block_alpha, state_inputs=args.state_inputs,
                  skip_links=args.skip_links, relax=args.relax,
                  output_alpha=args.output_alpha)
    for fit, model in alpha_sweep(baseline, args.alphas, params, (X_train, y_train, train_logits),
                           (data.X_test, data.y_test, test_logits), record["teacher"]):
        record["fits"].append(fit)
        out_path.write_text(json.dumps(record, indent=1))
    total = record["teacher"]["weights"]
    counts = sorted({int(f * total) for f in (0.1, 0.2, 0.3)}
                    | {fit["nonzero"] for fit in record["fits"]})
    record["pruning"] = pruning_baseline(teacher, counts, (X_train, y_train),
                                         (data.X_test, data.y_test), INPUT_SHAPE)
    out_path.write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
