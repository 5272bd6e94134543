"""The CIFAR-100 teacher: an all-convolutional ReLU network trained on the CPU.
============================================================================

Architecture (about 0.29 M parameters, 71,680 ReLU states per image)::

    conv 3-32      3x3, stride 1   BatchNorm  ReLU    32 x 32 x 32
    conv 32-32     3x3, stride 2   BatchNorm  ReLU    32 x 16 x 16
    conv 32-64     3x3, stride 1   BatchNorm  ReLU    64 x 16 x 16
    conv 64-64     3x3, stride 2   BatchNorm  ReLU    64 x  8 x  8
    conv 64-128    3x3, stride 1   BatchNorm  ReLU   128 x  8 x  8
    conv 128-128   3x3, stride 2   BatchNorm  ReLU   128 x  4 x  4
    global average pooling, linear 128-100

Every map between two ReLUs is affine (convolutions with zero padding,
BatchNorm in eval mode, average pooling), so the network is exactly an
implicit model in its states. Inputs are the raw pixels in [0, 1] in
(channel, row, column) order, as :func:`sksim.datasets.load_cifar100` returns
them; no input normalisation (the first BatchNorm plays that role), so a zero
padding pixel is a black pixel both for the teacher and for a SIM model.

Training: SGD (Nesterov, momentum 0.9, weight decay 5e-4), batches of 128,
one-cycle learning rate up to 0.1, random crops (4-pixel zero padding) and
horizontal flips, seed 0. Weights and running statistics are saved to a plain
``.npz`` (no pickle) after every epoch, with a JSON record of the test
accuracy per epoch, so an interrupted run loses at most one epoch::

    python examples/cifar100_teacher.py --epochs 10 --output-dir examples/weights

:func:`load_teacher` rebuilds the trained module in eval mode.
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
WEIGHTS = EXAMPLES_DIR / "weights" / "cifar100_allconv.npz"
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

CHANNELS = (32, 32, 64, 64, 128, 128)
STRIDES = (1, 2, 1, 2, 1, 2)
INPUT_SHAPE = (3, 32, 32)
N_CLASSES = 100


def build_teacher():
    """The untrained all-convolutional network (torch ``nn.Sequential``)."""
    from torch import nn

    layers = []
    previous = INPUT_SHAPE[0]
    for width, stride in zip(CHANNELS, STRIDES):
        layers += [nn.Conv2d(previous, width, 3, stride=stride, padding=1, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU()]
        previous = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, N_CLASSES)]
    return nn.Sequential(*layers)


def save_weights(module, path):
    arrays = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    tmp = Path(str(path) + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_teacher(path=WEIGHTS):
    """The trained teacher in eval mode (weights read without pickle)."""
    import torch

    module = build_teacher()
    with np.load(path, allow_pickle=False) as archive:
        state = {k: torch.from_numpy(archive[k]) for k in archive.files}
    module.load_state_dict(state)
    return module.eval()


def _augment(batch, generator):
    """Random 32x32 crops of the 4-pixel zero-padded images, random flips."""
    import torch

    n = batch.shape[0]
    padded = torch.nn.functional.pad(batch, (4, 4, 4, 4))
    rows = torch.randint(0, 9, (n,), generator=generator)
    cols = torch.randint(0, 9, (n,), generator=generator)
    index = torch.arange(32)
    row_index = (rows[:, None] + index)[:, None, :, None].expand(n, 3, 32, 40)
    cropped = padded.gather(2, row_index)
    col_index = (cols[:, None] + index)[:, None, None, :].expand(n, 3, 32, 32)
    cropped = cropped.gather(3, col_index)
    flip = torch.rand(n, generator=generator) < 0.5
    cropped[flip] = cropped[flip].flip(3)
    return cropped


def accuracy(module, X, y, batch=1000):
    import torch

    module.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, X.shape[0], batch):
            images = torch.from_numpy(X[start:start + batch]).reshape(-1, *INPUT_SHAPE)
            correct += int((module(images).argmax(1).numpy()
                            == y[start:start + batch]).sum())
    return correct / X.shape[0]


def train(data, epochs, output_path, seed=0, batch=128, max_lr=0.1, log=print):
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    # channels-last convolutions are ~1.3x faster on these CPUs
    module = build_teacher().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(module.parameters(), lr=max_lr, momentum=0.9,
                                nesterov=True, weight_decay=5e-4)
    steps = epochs * ((data.X_train.shape[0] + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr,
                                                   total_steps=steps)
    X = torch.from_numpy(data.X_train).reshape(-1, *INPUT_SHAPE)
    y = torch.from_numpy(data.y_train)
    record = {"architecture": "allconv " + "-".join(map(str, CHANNELS)) + " gap linear",
              "parameters": int(sum(p.numel() for p in module.parameters())),
              "epochs": epochs, "batch": batch, "max_lr": max_lr, "seed": seed,
              "torch_threads": torch.get_num_threads(), "history": []}
    for epoch in range(epochs):
        train_epoch(module, optimizer, schedule, (X, y), batch, generator, data, record)
        save_weights(module, output_path)
        Path(output_path).with_suffix(".json").write_text(json.dumps(record, indent=1))
        log(epoch_line(record, epochs))
    return module


def train_epoch(module, optimizer, schedule, tensors, batch, generator, data, record):
    """One epoch over the augmented training tensors ``(X, y)`` in random
    order, then the test accuracy, appended to ``record["history"]``."""
    import torch

    X, y = tensors
    start = time.perf_counter()
    module.train()
    order = torch.randperm(X.shape[0], generator=generator)
    total_loss = 0.0
    for first in range(0, X.shape[0], batch):
        index = order[first:first + batch]
        loss = torch.nn.functional.cross_entropy(
            module(_augment(X[index], generator).contiguous(
                memory_format=torch.channels_last)), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        total_loss += loss.item() * index.shape[0]
    seconds = time.perf_counter() - start
    test = accuracy(module, data.X_test, data.y_test)
    record["history"].append({"epoch": len(record["history"]) + 1,
                              "seconds": round(seconds, 1),
                              "train_loss": total_loss / X.shape[0],
                              "test_accuracy": test})
    record["test_accuracy"] = test


def epoch_line(record, epochs):
    last = record["history"][-1]
    return (f"epoch {last['epoch']}/{epochs}: loss {last['train_loss']:.3f}, "
            f"test accuracy {last['test_accuracy']:.4f}, {last['seconds']:.0f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-home", default=os.environ.get("SKSIM_DATA")
                        or str(REPO_ROOT.parent / "shared" / "data"))
    parser.add_argument("--output-dir", default=str(EXAMPLES_DIR / "output"),
                        help="folder for cifar100_allconv.npz/.json (fresh by default)")
    args = parser.parse_args(argv)
    import torch

    from sksim.datasets import load_cifar100

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_cifar100(args.data_home)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train(data, args.epochs, out / WEIGHTS.name,
          log=lambda *a: print(time.strftime("[%H:%M:%S]"), *a, flush=True))


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
