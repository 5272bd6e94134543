"""CIFAR-100: one-shot pruning anchors at SIM's exact nonzero counts.
====================================================================

The anchors of issue 23 (item 3), implemented in ``examples/_pruning.py``,
on a CIFAR-100 teacher (``--teacher allconv``: ``cifar100_teacher.py``;
``resnet20``: ``cifar100_resnet20.py``), calibrated on the first ``--m``
official training images (the images SIM is fitted on), no fine-tune:

* ``magnitude``: per-layer magnitude of the BatchNorm-folded weights;
* ``magnitude_ls_refit``: that mask, each row refit by least squares to the
  teacher's pre-activations on the pruned model's inputs, layer by layer;
* ``wanda`` (Sun et al. 2023) and ``sparsegpt`` (Frantar & Alistarh 2023,
  sequential Hessians, 1 % dampening, column blocks of 128);

each with the uniform allocation (every layer keeps the same fraction) and,
given ``--sim-results`` (a results JSON of ``cifar100.py``), with SIM's own
per-layer counts; and the existing global magnitude pruning
(``_conv_experiments.magnitude_pruned``, BatchNorm not folded), without and
with a one-epoch fine-tune on the same images. The structured anchor
``l1_filter`` (issue 24; Li et al. 2017: the filters of smallest L1 norm out,
the same share in every layer whose output map no shortcut adds, until the
FLOPs reach the target; without and with a one-epoch fine-tune, Adam at
``--fine-tune-lr``) runs at the
plain-export FLOPs of each ``--sim-results`` fit that records them
(``cifar100.py --penalty channel``) and at ``--flops-fractions`` of the
teacher's FLOPs. The counts are SIM's
``n_nonzero_`` of each fit in ``--sim-results`` (conv and linear weights,
biases excluded) less the nonzeros of the shortcut kernels SIM fits (a
ResNet's shortcuts cost the teacher and the anchors nothing), and
``--fractions`` of the teacher's weights. Each row
records test accuracy, nonzeros and wall seconds (next to the SIM fit's own
``fit_seconds``, from its JSON) in ``<output-dir>/anchors_<teacher>_m<m>[_<tag>].json``
(a fresh folder by default)::

    python examples/cifar100_anchors.py --teacher allconv --m 10000 \\
        --sim-results examples/results/cifar100_relaxed/cifar100.json \\
        --output-dir examples/results/cifar100_anchors
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

from _shared import default_data_home

ONE_SHOT = ("magnitude", "magnitude_ls_refit", "wanda", "sparsegpt")
METHODS = ONE_SHOT + ("global_magnitude", "l1_filter")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", choices=["allconv", "resnet20"], default="allconv")
    parser.add_argument("--weights", default=None, help="teacher .npz (default: committed)")
    parser.add_argument("--m", type=int, default=2000, help="calibration images")
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--sim-results", default=None,
                        help="results JSON of cifar100.py: its fits' counts and allocations")
    parser.add_argument("--sim-alphas", type=float, nargs="*", default=None,
                        help="only these fits of --sim-results (default: all)")
    parser.add_argument("--fractions", type=float, nargs="*", default=[],
                        help="kept fractions of the teacher's weights (uniform allocation)")
    parser.add_argument("--flops-fractions", type=float, nargs="*", default=[],
                        help="l1_filter at these fractions of the teacher's FLOPs (besides "
                             "the plain FLOPs of each --sim-results fit)")
    parser.add_argument("--allocations", nargs="+", choices=["uniform", "sim"],
                        default=["uniform", "sim"])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--fine-tune-epochs", type=int, default=1)
    parser.add_argument("--fine-tune-lr", type=float, default=1e-4,
                        help="Adam learning rate of the l1_filter fine-tune (1e-3, the "
                             "global-magnitude rows' rate, wrecks the BatchNorm-folded "
                             "ResNet-20: 32%% to 2%% at 0.83 of its FLOPs)")
    parser.add_argument("--fine-tune-m", type=int, default=None,
                        help="training images of the l1_filter fine-tune (default: the "
                             "m calibration images)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="",
                        help="appended to the output file's name (a run of a part of the counts)")
    parser.add_argument("--data-home", default=default_data_home())
    parser.add_argument("--output-dir", default=str(EXAMPLES_DIR / "output" / "cifar100_anchors"))
    return parser.parse_args(argv)


def load(teacher, weights):
    """The teacher module and its weights path."""
    if teacher == "allconv":
        import cifar100_teacher as source
    else:
        import cifar100_resnet20 as source
    path = Path(weights) if weights else source.WEIGHTS
    return source.load_teacher(path), path


def targets(args, teacher, total, input_shape):
    """``(count, allocation name, allocation or None, SIM fit or None)`` to run:
    every selected SIM fit's count on the teacher's layers (uniform and SIM's
    allocation), then every fraction of ``total`` (uniform)."""
    from _pruning import sim_allocation

    runs = []
    if args.sim_results:
        fits = json.loads(Path(args.sim_results).read_text())["fits"]
        for fit in fits:
            if args.sim_alphas is not None and not any(
                    np.isclose(fit["alpha"], a) for a in args.sim_alphas):
                continue
            allocation, extra = sim_allocation(fit, teacher, input_shape)
            sim = ({"alpha": fit["alpha"], "nonzero": fit["nonzero"],
                    "shortcut_nonzero": extra, "test_accuracy": fit["test_accuracy"],
                    "fit_seconds": fit["fit_seconds"]})
            count = fit["nonzero"] - extra  # the teacher's shortcuts are free
            if "uniform" in args.allocations:
                runs.append((count, "uniform", None, sim))
            if "sim" in args.allocations:
                runs.append((count, "sim", allocation, sim))
    runs += [(round(f * total), "uniform", None, None) for f in args.fractions]
    return runs


def flops_targets(args, teacher_flops):
    """``(flops, SIM fit or None)`` of the structured anchor: each selected
    SIM fit's plain-export FLOPs, then ``--flops-fractions`` of the teacher's."""
    runs = []
    if args.sim_results:
        for fit in json.loads(Path(args.sim_results).read_text())["fits"]:
            if "plain_flops" in fit and (args.sim_alphas is None or any(
                    np.isclose(fit["alpha"], a) for a in args.sim_alphas)):
                runs.append((fit["plain_flops"], {
                    "alpha": fit["alpha"], "plain_flops": fit["plain_flops"],
                    "test_accuracy": fit["test_accuracy"],
                    "fit_seconds": fit["fit_seconds"]}))
    return runs + [(round(f * teacher_flops), None) for f in args.flops_fractions]


def filter_rows(teacher, flops, tuning, test, epochs, input_shape, lr):
    """L1-norm filter pruning (Li et al. 2017) at ``flops`` multiply-adds per
    image, then the same model after ``epochs`` epochs of fine-tuning on the
    images and labels ``tuning`` (pruned filters and their readers' entries
    kept zero; Adam at ``lr``)."""
    import _pruning
    from _conv_experiments import fine_tune

    start = time.perf_counter()
    pruned, masks, fraction = _pruning.l1_filter_at_flops(teacher, flops, input_shape)
    seconds = time.perf_counter() - start
    reached = _pruning.structured_flops(pruned, input_shape)
    row = {"allocation": "uniform", "filter_fraction": fraction, "flops": reached,
           "nonzero": _pruning.count_nonzero(pruned)}
    rows = [{"method": "l1_filter", **row, "seconds": seconds,
             "test_accuracy": _pruning.accuracy(pruned, *test)}]
    images, labels = tuning
    start = time.perf_counter()
    fine_tune(pruned, masks, images.reshape(len(images), -1).numpy(), labels, input_shape,
              epochs=epochs, lr=lr)
    rows.append({"method": "l1_filter_fine_tuned", **row, "fine_tune_epochs": epochs,
                 "fine_tune_images": len(labels), "fine_tune_lr": lr,
                 "seconds": seconds + time.perf_counter() - start,
                 "test_accuracy": _pruning.accuracy(pruned, *test)})
    return rows


def one_shot_row(method, teacher, count, name, allocation, calibration, test):
    """Prune with one of ``_pruning.METHODS`` and measure it."""
    import _pruning

    if allocation is None:
        allocation = _pruning.uniform_allocation(teacher, count)
    pruned, seconds = _pruning.timed(_pruning.METHODS[method], teacher, allocation,
                                     calibration[0])
    return {"method": method, "allocation": name,
            "test_accuracy": _pruning.accuracy(pruned, *test),
            "nonzero": _pruning.count_nonzero(pruned), "seconds": seconds,
            "per_layer": allocation}


def global_rows(teacher, count, calibration, test, epochs, input_shape):
    """Global magnitude pruning (the repository's), then the same model after
    ``epochs`` epochs of masked fine-tuning on the calibration images."""
    import _pruning
    from _conv_experiments import fine_tune, magnitude_pruned

    start = time.perf_counter()
    pruned, masks = magnitude_pruned(teacher, count)
    seconds = time.perf_counter() - start
    rows = [{"method": "global_magnitude", "allocation": "global",
             "test_accuracy": _pruning.accuracy(pruned, *test),
             "nonzero": _pruning.count_nonzero(pruned), "seconds": seconds}]
    images, labels = calibration
    start = time.perf_counter()
    fine_tune(pruned, masks, images.reshape(len(images), -1).numpy(), labels, input_shape,
              epochs=epochs)
    rows.append({"method": "global_magnitude_fine_tuned", "allocation": "global",
                 "fine_tune_epochs": epochs,
                 "test_accuracy": _pruning.accuracy(pruned, *test),
                 "nonzero": _pruning.count_nonzero(pruned),
                 "seconds": seconds + time.perf_counter() - start})
    return rows


def main(argv=None):
    args = parse_args(argv)
    import _pruning
    import torch
    from _conv_experiments import log, teacher_weight_count
    from cifar100_teacher import INPUT_SHAPE

    from sksim.datasets import load_cifar100

    torch.set_num_threads(args.threads)
    data = load_cifar100(args.data_home)
    teacher, weights = load(args.teacher, args.weights)

    def images(X):
        return torch.from_numpy(np.ascontiguousarray(X)).reshape(-1, *INPUT_SHAPE)

    calibration = (images(data.X_train[:args.m]), data.y_train[:args.m])
    test = (images(data.X_test[:args.n_test]), data.y_test[:args.n_test])
    total = teacher_weight_count(teacher)
    assert total == _pruning.count_nonzero(teacher)  # SIM's count of the dense teacher
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"anchors_{args.teacher}_m{args.m}{args.tag and '_' + args.tag}.json"
    record = {
        "command": " ".join(sys.argv),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "teacher": {"name": args.teacher,
                    "weights": str(weights.relative_to(REPO_ROOT)
                                   if weights.is_relative_to(REPO_ROOT) else weights),
                    "test_accuracy": _pruning.accuracy(teacher, *test),
                    "weights_count": total},
        "m": args.m, "n_test": len(test[1]), "sim_results": args.sim_results,
        "rows": [],
    }
    log("teacher", record["teacher"])

    def add(row, count, sim):
        row.update(target_nonzero=count, kept_fraction=count / total, sim=sim)
        log(json.dumps({k: v for k, v in row.items() if k != "per_layer"}))
        record["rows"].append(row)
        out_path.write_text(json.dumps(record, indent=1))  # each row as it comes

    if "l1_filter" in args.methods:
        teacher_flops = _pruning.structured_flops(teacher, INPUT_SHAPE)
        record["teacher"]["flops"] = teacher_flops
        n_tune = args.m if args.fine_tune_m is None else args.fine_tune_m
        tuning = (images(data.X_train[:n_tune]), data.y_train[:n_tune])
        for flops, sim in flops_targets(args, teacher_flops):
            for row in filter_rows(teacher, flops, tuning, test,
                                   args.fine_tune_epochs, INPUT_SHAPE, args.fine_tune_lr):
                row.update(target_flops=flops, flops_fraction=row["flops"] / teacher_flops,
                           sim=sim)
                log(json.dumps(row))
                record["rows"].append(row)
                out_path.write_text(json.dumps(record, indent=1))
    global_done = set()
    for count, name, allocation, sim in targets(args, teacher, total, INPUT_SHAPE):
        for method in ONE_SHOT:
            if method in args.methods:
                add(one_shot_row(method, teacher, count, name, allocation, calibration,
                                 test), count, sim)
        if "global_magnitude" in args.methods and count not in global_done:
            global_done.add(count)  # one global pruning per count, whatever the allocation
            for row in global_rows(teacher, count, calibration, test,
                                   args.fine_tune_epochs, INPUT_SHAPE):
                add(row, count, sim)
    return record


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
