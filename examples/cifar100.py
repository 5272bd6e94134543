"""CIFAR-100: weight-shared SIM distilled from an all-convolutional teacher.
=========================================================================

The teacher is the all-convolutional network of ``examples/cifar100_teacher.py``
or (``--teacher resnet20``) the ResNet-20 of ``examples/cifar100_resnet20.py``
(trained weights in ``examples/weights/``). SIM is fitted on the first ``--m``
official training images with every ReLU state of the teacher (all-conv: six conv
blocks, 71,680 states per image; ResNet-20: 19 blocks, 188,416, and a fitted
kernel on each shortcut), its output rows matching the teacher's
logits, over a sweep of ``alpha``. For each fit the script records test
accuracy, agreement with the teacher, nonzero parameters (kernel entries,
against the teacher's weights: conv and linear weights, BatchNorm folded,
biases excluded), fit time, the process's peak memory, predict time on the
10,000 test images next to the teacher's forward pass in the same run, and
the certified Lipschitz bounds, and the FLOPs, conv channels and float32 predict time of
its plain export (``to_torch(plain=True)``; ``--penalty channel`` removes whole
channels); then global magnitude pruning of the teacher
at the same counts (and at ``--prune-fractions``), without and with a one-epoch
fine-tune on the same ``m`` images; robustness (uniform noise, FGSM, PGD in
l_inf) of the teacher and of each SIM model (through ``to_torch``) on the
first ``--n-attack`` test images. Results go to
``<output-dir>/cifar100[_resnet20][_lateral<k>][_channel].json``
(a fresh folder by default)::

    python examples/cifar100.py --m 10000 --alphas 1e-3 1e-2 --output-dir examples/results
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

EXAMPLES_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXAMPLES_DIR.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=10000)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--kappa", type=float, default=0.95)
    parser.add_argument("--lateral-kernel", type=int, default=None)
    parser.add_argument("--skip-links", type=int, default=0)
    parser.add_argument("--block-alpha", choices=["positions", "relative", "absolute"],
                        default="positions")
    parser.add_argument("--relax", type=float, default=1.0)
    parser.add_argument("--output-alpha", type=float, default=None)
    parser.add_argument("--positions-per-image", type=int, default=None)
    parser.add_argument("--row-bound", type=float, default=None)
    parser.add_argument("--state-inputs", choices=["teacher", "model"], default="teacher")
    parser.add_argument("--adaptive-l1", type=float, default=0.0,
                        help="exponent of the adaptive L1 weights from the teacher's kernels")
    parser.add_argument("--penalty", choices=["l1", "channel"], default="l1",
                        help="channel: whole channels out (structured SIM)")
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--n-attack", type=int, default=500,
                        help="test images attacked (0: no robustness run)")
    parser.add_argument("--eps", type=float, nargs="+",
                        default=[1 / 255, 2 / 255, 4 / 255, 8 / 255])
    parser.add_argument("--prune-fractions", type=float, nargs="*", default=[0.1, 0.2, 0.3],
                        help="fractions of the teacher's weights kept by global magnitude "
                             "pruning (plus the SIM fits' own counts)")
    parser.add_argument("--teacher", choices=["allconv", "resnet20"], default="allconv",
                        help="cifar100_teacher.py's all-conv net or cifar100_resnet20.py's "
                             "ResNet-20 (committed weights)")
    parser.add_argument("--weights", default=None, help="teacher .npz (default: committed)")
    parser.add_argument("--data-home", default=os.environ.get("SKSIM_DATA")
                        or str(REPO_ROOT.parent / "shared" / "data"))
    parser.add_argument("--output-dir", default=str(EXAMPLES_DIR / "output" / "cifar100"))
    args = parser.parse_args(argv)

    import torch

    from _conv_experiments import (alpha_sweep, attack_accuracies, fit_floor, log,
                                   pruning_baseline, teacher_logits, teacher_weight_count)
    from cifar100_teacher import INPUT_SHAPE
    if args.teacher == "allconv":
        from cifar100_teacher import WEIGHTS, load_teacher
    else:
        from cifar100_resnet20 import WEIGHTS, load_teacher
    from sksim import TorchBaseline
    from sksim.datasets import load_cifar100
    from sksim.plain_export import count_flops

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.teacher == "allconv" else f"_{args.teacher}"
    suffix += f"_lateral{args.lateral_kernel}" if args.lateral_kernel else ""
    suffix += f"_skip{args.skip_links}" if args.skip_links else ""
    suffix += "_channel" if args.penalty == "channel" else ""
    out_path = out_dir / f"cifar100{suffix}.json"
    weights = Path(args.weights) if args.weights else WEIGHTS
    data = load_cifar100(args.data_home)
    X_train, y_train = data.X_train[:args.m], data.y_train[:args.m]
    X_test, y_test = data.X_test[:args.n_test], data.y_test[:args.n_test]
    teacher = load_teacher(weights)
    start = time.perf_counter()
    test_logits = teacher_logits(teacher, X_test, INPUT_SHAPE)
    teacher_seconds = time.perf_counter() - start
    start = time.perf_counter()
    train_logits = teacher_logits(teacher, X_train, INPUT_SHAPE)
    train_forward_seconds = time.perf_counter() - start
    teacher_pred = test_logits.argmax(axis=1)
    record = {
        "command": " ".join(sys.argv),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "teacher_name": args.teacher,
        "weights": str(weights.relative_to(REPO_ROOT) if weights.is_relative_to(REPO_ROOT)
                       else weights),
        "m": args.m, "n_test": int(len(y_test)), "kappa": args.kappa,
        "lateral_kernel": args.lateral_kernel, "skip_links": args.skip_links,
        "relax": args.relax, "output_alpha": args.output_alpha,
        "block_alpha": args.block_alpha,
        "positions_per_image": args.positions_per_image, "row_bound": args.row_bound,
        "state_inputs": args.state_inputs, "adaptive_l1": args.adaptive_l1,
        "penalty": args.penalty,
        "teacher": {"test_accuracy": float(np.mean(teacher_pred == y_test)),
                    "weights": teacher_weight_count(teacher),
                    "flops": count_flops(torch.nn.Sequential(
                        torch.nn.Unflatten(1, INPUT_SHAPE), teacher), (X_test.shape[1],)),
                    "forward_seconds": teacher_seconds},
        "fits": [],
    }
    log("teacher", record["teacher"])
    baseline = TorchBaseline(teacher, input_shape=INPUT_SHAPE, batch_size=250)
    params = dict(kappa=args.kappa, lateral_kernel=args.lateral_kernel,
                  skip_links=args.skip_links, relax=args.relax,
                  output_alpha=args.output_alpha, block_alpha=args.block_alpha,
                  positions_per_image=args.positions_per_image, row_bound=args.row_bound,
                  state_inputs=args.state_inputs, adaptive_l1=args.adaptive_l1,
                  penalty=args.penalty)
    for fit, model in alpha_sweep(baseline, args.alphas, params, (X_train, y_train, train_logits),
                           (X_test, y_test, test_logits), record["teacher"]):
        if not record["fits"]:  # the floor of the (alpha-independent) reduce stage
            record["floor"] = fit_floor(model, args.m, train_forward_seconds,
                                        args.positions_per_image)
            log("floor", record["floor"])
        fit["fit_over_floor"] = fit["fit_seconds"] / record["floor"]["seconds"]
        record["fits"].append(fit)
        if args.n_attack:
            fit["attacks"] = attack_accuracies(
                model.to_torch(), X_test[:args.n_attack], y_test[:args.n_attack], args.eps)
        out_path.write_text(json.dumps(record, indent=1))
    if args.n_attack:
        teacher64 = load_teacher(weights).double()
        record["teacher"]["attacks"] = attack_accuracies(
            lambda u: teacher64(u.reshape(-1, *INPUT_SHAPE)), X_test[:args.n_attack],
            y_test[:args.n_attack], args.eps)
        out_path.write_text(json.dumps(record, indent=1))
    total = record["teacher"]["weights"]
    counts = sorted({int(f * total) for f in args.prune_fractions}
                    | {fit["nonzero"] for fit in record["fits"]})
    record["pruning"] = pruning_baseline(teacher, counts, (X_train, y_train),
                                         (X_test, y_test), INPUT_SHAPE)
    out_path.write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
