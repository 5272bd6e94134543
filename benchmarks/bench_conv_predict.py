"""Inference-time ratio of a weight-shared SIM model (issue 11's predict target).

Fits ``SIMClassifier`` on the CIFAR-100 all-convolutional teacher of
``examples/cifar100_teacher.py`` (first ``--m`` training images, outputs
matched to its logits, ``--alpha``, ``relax=0.01``, ``output_alpha=3e-3``),
then times on the 10,000 test images, interleaved round by round so that
machine noise hits all of them alike (median of ``--repeats``):

* the teacher's forward pass (torch, float32, batches of 500, eval mode);
* ``est.decision_function(X)``: the certified float64 model (torch's float64
  ``conv2d`` since torch is imported, chunked by sksim);
* ``est.to_torch(dtype=torch.float32)`` on the same batches: the same model at
  the teacher's precision (its labels are compared with the float64 ones).

CIFAR-100 has no download fallback: ``--data-home`` (default ``$SKSIM_DATA``,
else ``../shared/data``) must hold ``cifar-100/cifar-100-{train,test}.npz``.

Run:  python benchmarks/bench_conv_predict.py
      python benchmarks/bench_conv_predict.py --quick    (smoke run, m = 1000)
Writes benchmarks/results/conv_predict.json.
"""

import sys
import time

import numpy as np

import _common as C

BATCH = 500


def parse_args():
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.16)
    parser.set_defaults(repeats=3)
    args = parser.parse_args()
    if args.quick:
        args.m, args.repeats = 1000, 1  # the first 1,000 images hold all 100 classes
    return args


def main():
    args = parse_args()
    sys.path.insert(0, str(C.REPO_ROOT / "examples"))
    import torch
    from _conv_experiments import batched_outputs, teacher_logits
    from cifar100_teacher import INPUT_SHAPE, WEIGHTS, load_teacher

    from sksim import SIMClassifier, TorchBaseline
    from sksim.datasets import load_cifar100

    data = load_cifar100(args.data_home)
    teacher = load_teacher(WEIGHTS).eval()
    X_train, y_train = data.X_train[:args.m], data.y_train[:args.m]
    X_test = np.ascontiguousarray(data.X_test, dtype=np.float64)
    train_logits = teacher_logits(teacher, X_train, INPUT_SHAPE, BATCH)
    est = SIMClassifier(TorchBaseline(teacher, input_shape=INPUT_SHAPE, batch_size=250),
                        alpha=args.alpha, relax=0.01, output_alpha=3e-3, random_state=0)
    start = time.perf_counter()
    est.fit(X_train, y_train, baseline_outputs=train_logits)
    fit_seconds = time.perf_counter() - start
    module32 = est.to_torch(dtype=torch.float32)
    candidates = {"teacher_float32": lambda: teacher_logits(teacher, X_test, INPUT_SHAPE,
                                                            BATCH),
                  "sim_decision_function_float64": lambda: est.decision_function(X_test),
                  "sim_to_torch_float32": lambda: batched_outputs(module32, X_test, BATCH)}
    times = {name: [] for name in candidates}
    outputs = {}
    for name, run in candidates.items():  # warm-up (allocations, lazy init)
        outputs[name] = run()
    for _ in range(args.repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    labels = {name: out.argmax(axis=1) for name, out in outputs.items()}
    teacher_median = float(np.median(times["teacher_float32"]))
    result = {**C.header(args), "problem": {"dataset": "CIFAR-100", "m": args.m,
                                            "alpha": args.alpha, "relax": 0.01,
                                            "output_alpha": 3e-3},
              "fit_seconds": fit_seconds, "n_nonzero": est.n_nonzero_,
              "torch_threads": torch.get_num_threads(), "timings": {}}
    for name in candidates:
        result["timings"][name] = {**C.summary(times[name]),
                                   "over_teacher": float(np.median(times[name])
                                                         / teacher_median)}
    result["test_accuracy"] = {name: float(np.mean(labels[name] == data.y_test))
                               for name in labels}
    result["float32_agrees_with_float64"] = float(np.mean(
        labels["sim_to_torch_float32"] == labels["sim_decision_function_float64"]))
    print(C.table([[name, f"{t['median_s']:.2f}", f"{t['over_teacher']:.2f}x"]
                   for name, t in result["timings"].items()],
                  ["", "median s", "/ teacher"]))
    C.write_json("conv_predict", result, args.output, args.quick)


if __name__ == "__main__":
    main()
