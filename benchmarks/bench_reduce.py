"""The weight-shared fit against its floor, and the reduce stage's two backends
(issue 23, item 4).

The ResNet-20 of ``examples/cifar100_resnet20.py`` (committed weights) on the
first ``--m`` CIFAR-100 training images, ``SIMClassifier(alpha=0.04,
adaptive_l1=2, output_alpha=1e-3, relax=0.01)`` (the CIFAR-100 runs' setting),
fitted with ``TorchBaseline(gram_backend="numpy")`` (each block's patch Gram by
BLAS ``syrk`` on the host) and ``gram_backend="torch"`` (the same sums built
and accumulated with torch on the teacher's device: here the CPU), in
interleaved rounds (median of ``--repeats``). The floor, measured in the same
run: the teacher's forward pass over the ``m`` images plus the blocks' patch
Gram flops at this machine's rate of the reduce stage's own Gram product
(``sksim.design.part_products`` on random designs of each block's width; see
``fit_floor`` in ``examples/_conv_experiments.py``). Skipped without the
CIFAR-100 files.

Run:  python benchmarks/bench_reduce.py
      python benchmarks/bench_reduce.py --quick    (smoke run)
Writes benchmarks/results/reduce.json.
"""

import time

import _common as C
import numpy as np


def parse_args():
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=1000)
    parser.set_defaults(repeats=2)
    args = parser.parse_args()
    if args.quick:
        args.m, args.repeats = 300, 1
    return args


def main():
    args = parse_args()
    import torch
    from _conv_experiments import fit_floor, teacher_logits
    from cifar100_resnet20 import load_teacher
    from cifar100_teacher import INPUT_SHAPE

    from sksim import SIMClassifier, TorchBaseline
    from sksim.datasets import load_cifar100

    try:
        data = load_cifar100(args.data_home)
    except (FileNotFoundError, ValueError) as exc:
        C.log(f"CIFAR-100 skipped: {exc}")
        return
    X, y = data.X_train[:args.m], data.y_train[:args.m]
    teacher = load_teacher().eval()
    start = time.perf_counter()
    logits = teacher_logits(teacher, X, INPUT_SHAPE)
    forward_seconds = time.perf_counter() - start

    def fit(backend):
        baseline = TorchBaseline(teacher, input_shape=INPUT_SHAPE, batch_size=250,
                                 classes=list(range(100)), gram_backend=backend)
        est = SIMClassifier(baseline, alpha=0.04, adaptive_l1=2.0, output_alpha=1e-3,
                            relax=0.01, random_state=0)
        start = time.perf_counter()
        est.fit(X, y, baseline_outputs=logits)
        return time.perf_counter() - start, est

    times = {"numpy": [], "torch": []}
    models = {}
    for _ in range(args.repeats):  # interleaved: both backends see the same machine
        for backend in times:
            seconds, models[backend] = fit(backend)
            times[backend].append(seconds)
            C.log(f"{backend}: {seconds:.1f} s")
    floor = fit_floor(models["numpy"], args.m, forward_seconds)
    medians = {b: float(np.median(t)) for b, t in times.items()}
    agreement = float(np.mean(models["numpy"].predict(X) == models["torch"].predict(X)))
    payload = {
        "command": C.command_line(), "arguments": vars(args),
        "machine": C.machine_info(), "m": args.m,
        "teacher": "cifar-100 ResNet-20", "torch_threads": torch.get_num_threads(),
        "floor": floor,
        "fits": {b: {**C.summary(t), "over_floor": medians[b] / floor["seconds"]}
                 for b, t in times.items()},
        "torch_over_numpy": medians["torch"] / medians["numpy"],
        "train_agreement_torch_numpy": agreement,
    }
    C.log(f"floor {floor['seconds']:.1f} s; numpy {medians['numpy']:.1f} s "
          f"({payload['fits']['numpy']['over_floor']:.2f}x); torch {medians['torch']:.1f} s "
          f"({payload['fits']['torch']['over_floor']:.2f}x)")
    C.write_json("reduce", payload, args.output, args.quick)


if __name__ == "__main__":
    main()
