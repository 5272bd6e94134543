"""FLOPs and wall time of ``to_torch(plain=True)`` next to the teacher's forward pass
(structured-SIM issue, item 3).

Fits SIM on two teachers and times, interleaved round by round (median of
``--repeats``), CPU float32, batches of 500, with 1 and with 2 torch threads:

* the teacher's forward pass on the test images;
* the fitted model's plain export (``to_torch(plain=True)``: torch.nn layers,
  dense kernels, unread channels removed) on the same batches.

The MLP's SIM models use ``penalty="l1"`` (zeros scattered in the rows) at
``--alphas``, ``penalty="channel"`` (whole hidden units out) at
``--channel-alphas`` (flat, ``structure="feedforward"``: every block also reads
the inputs and all earlier blocks), and ``penalty="channel"`` with
``weight_sharing=True`` at ``--chain-alphas`` (the teacher's own chain of
Linear layers, each reading the one before: the structured model).

Teachers: the Fashion-MNIST MLP 784-64-32-16-10 of the other benchmarks (SIM
``structure="feedforward"`` on ``--m`` training images at each of ``--alphas``)
and, when the CIFAR-100 files are present, the all-convolutional teacher of
``examples/cifar100_teacher.py`` (weight-shared SIM on ``--cifar-m`` training
images, ``relax`` 0.01, ``output_alpha`` 3e-3: ``penalty="l1"`` at ``alpha`` 0.16,
and ``penalty="channel"`` with ``block_alpha="relative"``, the setting chosen on held-out
images, at ``--cifar-channel-alphas``) and the ResNet-20 of ``examples/cifar100_resnet20.py``
(the same images; ``adaptive_l1=2``, ``output_alpha`` 1e-3: ``penalty="l1"`` at alpha 0.04,
``penalty="channel"`` at ``--resnet-channel-alphas``). FLOPs are the
multiply-adds of the Conv2d and Linear layers per image
(:func:`sksim.plain_export.count_flops`, the same count for the teacher).

Run:  python benchmarks/bench_plain_export.py
      python benchmarks/bench_plain_export.py --quick    (smoke run)
Writes benchmarks/results/plain_export.json.
"""

import copy
import sys
import time

import _common as C
import numpy as np

BATCH = 500


def parse_args():
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=5000)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--channel-alphas", type=float, nargs="+", default=[1e-3, 1e-2, 3e-2],
                        help="alphas of the penalty='channel' models (whole hidden units out)")
    parser.add_argument("--chain-alphas", type=float, nargs="+", default=[3e-3, 1e-2, 3e-2],
                        help="alphas of the penalty='channel' models in the teacher's chain "
                             "(weight_sharing=True)")
    parser.add_argument("--cifar-m", type=int, default=2000)
    parser.add_argument("--cifar-channel-alphas", type=float, nargs="*",
                        default=[0.02, 0.04, 0.06])
    parser.add_argument("--resnet-channel-alphas", type=float, nargs="*",
                        default=[0.0025])
    parser.set_defaults(repeats=5)
    args = parser.parse_args()
    if args.quick:
        args.m, args.cifar_m, args.repeats, args.alphas = 1000, 0, 1, [1e-2]
        args.channel_alphas, args.chain_alphas = [1e-2], [1e-2]
    return args


def forward_batches(module, X):
    import torch

    with torch.no_grad():
        return np.vstack([module(torch.as_tensor(X[i:i + BATCH])).numpy()
                          for i in range(0, len(X), BATCH)])


def timed(candidates, X, repeats, threads):
    """Median seconds of each candidate over ``X`` with ``threads`` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for module in candidates.values():  # warm-up
            forward_batches(module, X)
        times = {name: [] for name in candidates}
        for _ in range(repeats):
            for name, module in candidates.items():
                start = time.perf_counter()
                forward_batches(module, X)
                times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return times


def measure(name, teacher, models, X_test, y_test, input_shape, args):
    """The teacher and each fitted model's plain export, timed side by side."""
    from sksim.plain_export import count_flops

    teacher_labels = forward_batches(teacher, X_test).argmax(axis=1)
    candidates = {"teacher": teacher}
    record = {"problem": name, "teacher_flops": count_flops(teacher, input_shape),
              "teacher_test_accuracy": float(np.mean(teacher_labels == y_test)),
              "models": []}
    for label, est, fit_seconds in models:
        plain = est.to_torch(plain=True)
        candidates[label] = plain
        labels = est.classes_[forward_batches(plain, X_test).argmax(axis=1)]
        record["models"].append({
            "name": label, "fit_seconds": round(fit_seconds, 2),
            "n_nonzero": int(est.n_nonzero_),
            "plain_parameters": int(sum(p.numel() for p in plain.parameters())),
            "flops": count_flops(plain, input_shape),
            "test_accuracy": float(np.mean(labels == y_test)),
            "agreement_with_teacher": float(np.mean(labels == teacher_labels)),
            "agreement_with_float64_predict": float(np.mean(labels == est.predict(X_test)))})
    for threads in (1, 2):
        times = timed(candidates, X_test, args.repeats, threads)
        teacher_median = float(np.median(times["teacher"]))
        record[f"threads_{threads}"] = {
            label: {**C.summary(times[label]),
                    "over_teacher": float(np.median(times[label]) / teacher_median)}
            for label in candidates}
    for model in record["models"]:
        C.log(f"{name} {model['name']}: flops {model['flops']:,} (teacher "
              f"{record['teacher_flops']:,}), time / teacher "
              f"{record['threads_1'][model['name']]['over_teacher']:.2f}x (1 thread), "
              f"{record['threads_2'][model['name']]['over_teacher']:.2f}x (2 threads), "
              f"accuracy {model['test_accuracy']:.4f}")
    return record


def fashion_mnist(args):
    from sksim import SIMClassifier, TorchBaseline

    data = C.load_data(args.data_home)
    teacher, _ = C.get_teacher(C.WIDTHS["64-32-16"], data)
    teacher = copy.deepcopy(teacher).float().eval()
    X, y = data.X_train[:args.m], data.y_train[:args.m]
    models = []
    for kind, alphas in (("l1", args.alphas), ("channel", args.channel_alphas),
                         ("channel_chain", args.chain_alphas)):
        for alpha in alphas:
            params = ({"penalty": "channel", "weight_sharing": True}
                      if kind == "channel_chain" else
                      {"penalty": kind, "structure": "feedforward"})
            est = SIMClassifier(TorchBaseline(teacher), alpha=alpha, random_state=0,
                                **params)
            start = time.perf_counter()
            est.fit(X, y)
            models.append((f"sim_{kind}_alpha_{alpha:g}", est,
                           time.perf_counter() - start))
    return measure("fashion-mnist MLP 784-64-32-16-10", teacher, models,
                   np.ascontiguousarray(data.X_test, dtype=np.float32), data.y_test,
                   (784,), args)


def cifar100(args, name):
    """The all-convolutional teacher (``name="allconv"``) or the ResNet-20
    (``"resnet20"``: ``penalty="l1"`` at alpha 0.04 and ``penalty="channel"`` at
    ``--resnet-channel-alphas``, both ``adaptive_l1=2``, ``output_alpha`` 1e-3)."""
    import torch

    sys.path.insert(0, str(C.REPO_ROOT / "examples"))
    import cifar100_resnet20
    import cifar100_teacher
    from cifar100_teacher import INPUT_SHAPE

    from sksim import SIMClassifier, TorchBaseline
    from sksim.datasets import load_cifar100

    try:
        data = load_cifar100(args.data_home)
    except (FileNotFoundError, ValueError) as exc:
        C.log(f"CIFAR-100 skipped: {exc}")
        return None
    source = cifar100_teacher if name == "allconv" else cifar100_resnet20
    conv = source.load_teacher().eval()
    teacher = torch.nn.Sequential(torch.nn.Unflatten(1, INPUT_SHAPE), conv).eval()
    X, y = data.X_train[:args.cifar_m], data.y_train[:args.cifar_m]
    if name == "allconv":
        common = {"output_alpha": 3e-3}
        settings = [("l1", 0.16, "positions")] + [("channel", a, "relative")
                                                  for a in args.cifar_channel_alphas]
    else:
        common = {"output_alpha": 1e-3, "adaptive_l1": 2.0}
        settings = [("l1", 0.04, "positions")] + [("channel", a, "relative")
                                                  for a in args.resnet_channel_alphas]
    models = []
    for penalty, alpha, block_alpha in settings:
        est = SIMClassifier(TorchBaseline(conv, input_shape=INPUT_SHAPE, batch_size=250,
                                          classes=list(range(100))),
                            alpha=alpha, penalty=penalty, block_alpha=block_alpha,
                            relax=0.01, random_state=0, **common)
        start = time.perf_counter()
        est.fit(X, y)
        models.append((f"sim_{penalty}_alpha_{alpha:g}", est, time.perf_counter() - start))
    title = {"allconv": "cifar-100 all-convolutional", "resnet20": "cifar-100 ResNet-20"}
    return measure(title[name], teacher, models,
                   np.ascontiguousarray(data.X_test, dtype=np.float32), data.y_test,
                   (3 * 32 * 32,), args)


def main():
    args = parse_args()
    problems = [fashion_mnist(args)]
    if args.cifar_m:
        problems += [cifar100(args, "allconv"), cifar100(args, "resnet20")]
    result = {**C.header(args), "batch": BATCH,
              "problems": [p for p in problems if p is not None]}
    C.write_json("plain_export", result, args.output, args.quick)


if __name__ == "__main__":
    main()
