"""Graph teachers as people write them: distilled with defaults (issue 22's table).

Five small torch teachers written the usual way, each trained in the same run
on scikit-learn's digits (1,400 training images, the rest held out; 16x16
bilinear upsampling for the convolutional ones, Adam, 300 steps of 128,
seed 0), then ``SIMClassifier(TorchBaseline(net, input_shape=...)).fit``
with defaults (``alpha=1e-3``) on the training images:

* ``resnet``: torchvision-style BasicBlocks (identity and 1x1 conv + BN
  shortcuts, one ``nn.ReLU(inplace=True)`` used twice per block, ``out +=
  identity``), adaptive average pooling, linear;
* ``vgg``: Conv-ReLU-MaxPool2d(2) twice, Flatten, Linear;
* ``leaky_mlp``: an MLP with ``nn.LeakyReLU(0.1)``;
* ``functional``: a CNN calling ``F.relu`` and ``Tensor.relu_`` in ``forward``,
  ``x.view(x.size(0), -1)``;
* ``avgpool``: a CNN with ``nn.AvgPool2d(2)`` between convolutions.

For each: the teacher's weights (entries of weight matrices and kernels, no
biases or BatchNorm), SIM's nonzero parameters, agreement with the teacher on
the held-out images, both accuracies, SIM's fit time and the teacher's
training time, measured one after the other in this run, everything on one thread
(torch, BLAS, numba). With ``--resnet20``
it also fits the CIFAR-100 ResNet-20 of ``examples/cifar100_resnet20.py`` on
its first 1,000 training images and records the fit time and the peak
resident memory of that fit (needs ``--data-home`` with CIFAR-100 and the
weights in ``examples/weights``).

Run:  python benchmarks/bench_graph_teachers.py [--resnet20 --data-home DIR]
Writes benchmarks/results/graph_teachers.json (or ``--output``).
"""

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

import _common as C

N_TRAIN = 1400
STEPS = 300


def _teachers():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = nn.Sequential(BasicBlock(8, 8, 1))
            self.layer2 = nn.Sequential(BasicBlock(8, 16, 2))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer2(self.layer1(x))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
            self.fc = nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = self.conv2(x).relu_()
            return self.fc(x.view(x.size(0), -1))

    def vgg():
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(16 * 4 * 4, 10))

    def leaky_mlp():
        return nn.Sequential(nn.Linear(64, 32), nn.LeakyReLU(0.1), nn.Linear(32, 16),
                             nn.LeakyReLU(0.1), nn.Linear(16, 10))

    def avgpool():
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    # name: (builder, per-sample input shape)
    return {"resnet": (ResNet, (1, 16, 16)), "vgg": (vgg, (1, 16, 16)),
            "leaky_mlp": (leaky_mlp, (64,)), "functional": (Functional, (1, 8, 8)),
            "avgpool": (avgpool, (1, 16, 16))}


def _digits():
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(C.SEED).permutation(len(X))
    X, y = (X[order] / 16.0).astype(np.float32), y[order]
    upsampled = np.stack([zoom(image.reshape(8, 8), 2, order=1) for image in X])
    return X, upsampled.reshape(len(X), -1).astype(np.float32), y


def _train(module, X, y, shape):
    import torch
    from torch.nn import functional as F

    torch.manual_seed(C.SEED)
    optimizer = torch.optim.Adam(module.parameters(), 1e-2)
    images = torch.from_numpy(X).reshape(-1, *shape)
    labels = torch.from_numpy(y)
    start = time.perf_counter()
    for _ in range(STEPS):
        index = torch.randint(0, len(X), (128,))
        loss = F.cross_entropy(module(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return module.eval(), time.perf_counter() - start


def _one_thread():
    """One thread for torch, BLAS and numba, for training and fitting alike: a
    fair comparison, and on a loaded 2-core machine two OpenBLAS threads were
    measured 40x slower than one on the same Gram product (they spin-wait
    for a core)."""
    import numba
    import threadpoolctl
    import torch

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)


def _warm_up(data):
    """Load sksim's compiled kernels before anything is timed (a fresh
    process pays it once, on its first fit)."""
    from torch import nn

    from sksim import SIMClassifier, TorchBaseline

    flat, _, y = data
    module = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)).eval()
    SIMClassifier(TorchBaseline(module, classes=list(range(10))),
                  weight_sharing=True).fit(flat[:200], y[:200])


def _weights(module):
    return int(sum(p.numel() for p in module.parameters() if p.ndim > 1))


def _run_teacher(name, builder, shape, data):
    import torch

    from sksim import SIMClassifier, TorchBaseline

    flat, upsampled, y = data
    X = flat if np.prod(shape) == 64 else upsampled
    torch.manual_seed(C.SEED)
    module, train_seconds = _train(builder(), X[:N_TRAIN], y[:N_TRAIN], shape)
    with torch.no_grad():
        teacher = module(torch.from_numpy(X[N_TRAIN:]).reshape(-1, *shape)).argmax(1).numpy()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a flat fallback would warn
        model = SIMClassifier(TorchBaseline(module, input_shape=shape)).fit(
            X[:N_TRAIN], y[:N_TRAIN])
    fit_seconds = time.perf_counter() - start
    predicted = model.predict(X[N_TRAIN:])
    record = {"teacher_weights": _weights(module), "sim_nonzero": int(model.n_nonzero_),
              "weight_shared": bool(model._is_weight_shared()),
              "agreement": float(np.mean(predicted == teacher)),
              "sim_accuracy": float(np.mean(predicted == y[N_TRAIN:])),
              "teacher_accuracy": float(np.mean(teacher == y[N_TRAIN:])),
              "fit_seconds": round(fit_seconds, 2),
              "teacher_training_seconds": round(train_seconds, 2),
              "blocks": len(model.structure_.block_shapes)}
    record["targets"] = {
        "fewer_nonzeros_than_teacher_weights": record["sim_nonzero"] < record["teacher_weights"],
        "agreement_at_least_0.97": record["agreement"] >= 0.97,
        "fit_no_longer_than_training": fit_seconds <= train_seconds}
    C.log(f"{name}: {record}")
    return record


def _resnet20(data_home, m=1000):
    """Fit time and peak resident memory of a default fit of the ResNet-20 on
    its first ``m`` CIFAR-100 training images."""
    sys.path.insert(0, str(C.REPO_ROOT / "examples"))
    import cifar100_resnet20 as resnet20

    from sksim import SIMClassifier, TorchBaseline
    from sksim.datasets import load_cifar100

    data = load_cifar100(data_home, splits=("train",))
    teacher = resnet20.load_teacher()
    record_path = resnet20.WEIGHTS.with_suffix(".json")
    epochs = json.loads(record_path.read_text()).get("epochs_done") \
        if record_path.is_file() else None
    X, y = data.X_train[:m], data.y_train[:m]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    model = SIMClassifier(TorchBaseline(teacher, input_shape=(3, 32, 32),
                                        batch_size=100)).fit(X, y)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record = {"m": m, "teacher_epochs": epochs, "fit_seconds": round(seconds, 1),
              "peak_rss_mib": round(peak / 1024, 1),
              "peak_rss_before_fit_mib": round(before / 1024, 1),
              "blocks": len(model.structure_.block_shapes),
              "states_per_image": int(model.n_states_),
              "sim_nonzero": int(model.n_nonzero_),
              "teacher_weights": _weights(teacher),
              "train_accuracy_sim": float(model.score(X, y))}
    print(f"resnet20: {record}", file=sys.stderr)
    return record


def main():
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--resnet20", action="store_true",
                        help="also fit the CIFAR-100 ResNet-20 on 1,000 images")
    parser.add_argument("--only", nargs="*", default=None, help="teachers to run")
    parser.add_argument("--resnet20-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.resnet20_child:
        _one_thread()
        print(json.dumps(_resnet20(args.data_home)))
        return
    if args.quick:
        args.only = args.only or ["leaky_mlp", "functional"]
    _one_thread()
    data = _digits()
    teachers = _teachers()
    _warm_up(data)
    results = {"machine": C.machine_info(), "n_train": N_TRAIN,
               "n_held_out": len(data[2]) - N_TRAIN, "training_steps": STEPS,
               "teachers": {}}
    for name in teachers if args.only is None else args.only:
        builder, shape = teachers[name]
        results["teachers"][name] = _run_teacher(name, builder, shape, data)
    if args.resnet20:
        # a process of its own, so that its peak memory is the fit's alone
        child = subprocess.run([sys.executable, __file__, "--resnet20-child",
                                "--data-home", str(args.data_home)],
                               capture_output=True, text=True, check=True)
        results["resnet20"] = json.loads(child.stdout.strip().splitlines()[-1])
    results["command"] = C.command_line()
    C.write_json("graph_teachers", results, args.output, args.quick)


if __name__ == "__main__":
    main()
