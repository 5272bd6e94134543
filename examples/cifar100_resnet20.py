"""The CIFAR-100 ResNet-20 teacher (He et al. 2016, CIFAR variant), resumable.
===========================================================================

Architecture (0.28 M parameters): a 3x3 convolution 3-16 with BatchNorm and
ReLU, then three stages of three BasicBlocks (16, 32 and 64 channels; the
first block of stages 2 and 3 has stride 2), global average pooling and a
linear layer 64-100. A BasicBlock is conv-BN-ReLU-conv-BN, plus its shortcut,
then ReLU; one ``nn.ReLU`` module is used twice per block, as torchvision
writes it. The shortcut of a block that changes the shape is the original
paper's parameter-free "option A": subsample by 2 and pad the new channels
with zeros. Inputs are raw pixels in [0, 1] in (channel, row, column) order,
as :func:`sksim.datasets.load_cifar100` returns them (no normalisation: the
first BatchNorm plays that role).

Training is the recipe of ``cifar100_teacher.py`` (SGD, Nesterov, momentum
0.9, weight decay 5e-4, batches of 128, one-cycle learning rate up to 0.1,
random crops and flips, seed 0). After every epoch the script writes

* ``cifar100_resnet20.npz``: weights and running statistics (no pickle),
* ``cifar100_resnet20.json``: the record (test accuracy and time per epoch),
* ``cifar100_resnet20.ckpt``: optimizer, schedule and random states,

and a restarted run with the same ``--output-dir`` resumes after the last
completed epoch, so an interruption loses at most one epoch::

    python examples/cifar100_resnet20.py --epochs 30 --data-home DIR \\
        --output-dir examples/weights

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
WEIGHTS = EXAMPLES_DIR / "weights" / "cifar100_resnet20.npz"
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(EXAMPLES_DIR))
    sys.path.insert(0, str(REPO_ROOT))

from cifar100_teacher import (  # noqa: E402
    INPUT_SHAPE,
    N_CLASSES,
    epoch_line,
    save_weights,
    train_epoch,
)

STAGES = (16, 32, 64)
BLOCKS_PER_STAGE = 3


def _modules():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class BasicBlock(nn.Module):
        def __init__(self, in_planes, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.pad = planes - in_planes if (stride != 1 or in_planes != planes) else 0
            self.stride = stride

        def shortcut(self, x):
            if self.stride == 1 and self.pad == 0:
                return x
            # option A: subsample, zero channels on both sides
            x = x[:, :, ::self.stride, ::self.stride]
            return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.shortcut(x))

    class ResNet20(nn.Module):
        def __init__(self, n_classes=N_CLASSES):
            super().__init__()
            self.conv1 = nn.Conv2d(INPUT_SHAPE[0], STAGES[0], 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(STAGES[0])
            self.relu = nn.ReLU(inplace=True)
            blocks, previous = [], STAGES[0]
            for stage, planes in enumerate(STAGES):
                for index in range(BLOCKS_PER_STAGE):
                    stride = 2 if stage > 0 and index == 0 else 1
                    blocks.append(BasicBlock(previous, planes, stride))
                    previous = planes
            self.layers = nn.Sequential(*blocks)
            self.fc = nn.Linear(previous, n_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layers(x)
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            return self.fc(x)

    return ResNet20


def build_teacher():
    """The untrained ResNet-20 (a torch ``nn.Module``), with He initialisation."""
    from torch import nn

    module = _modules()()
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    return module


def load_teacher(path=WEIGHTS):
    """The trained teacher in eval mode (weights read without pickle)."""
    import torch

    module = build_teacher()
    with np.load(path, allow_pickle=False) as archive:
        state = {k: torch.from_numpy(archive[k]) for k in archive.files}
    module.load_state_dict(state)
    return module.eval()


def _save_checkpoint(path, module, optimizer, schedule, generator, record):
    import torch

    tmp = Path(str(path) + ".tmp")
    torch.save({"module": module.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(), "record": record}, tmp)
    os.replace(tmp, path)


def train(data, epochs, output_dir, seed=0, batch=128, max_lr=0.1, log=print):
    import torch

    output_dir = Path(output_dir)
    weights = output_dir / WEIGHTS.name
    checkpoint = weights.with_suffix(".ckpt")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    # channels-last convolutions are ~1.3x faster on these CPUs
    module = build_teacher().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(module.parameters(), lr=max_lr, momentum=0.9,
                                nesterov=True, weight_decay=5e-4)
    steps = epochs * ((data.X_train.shape[0] + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr,
                                                   total_steps=steps)
    record = {"architecture": "resnet20 (option A shortcuts) 16-32-64 gap linear",
              "parameters": int(sum(p.numel() for p in module.parameters())),
              "epochs": epochs, "batch": batch, "max_lr": max_lr, "seed": seed,
              "torch_threads": torch.get_num_threads(), "history": []}
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state["record"]["epochs"] != epochs:
            raise ValueError(f"--epochs {epochs} differs from the checkpoint's "
                             f"{state['record']['epochs']}: the schedule would change; "
                             "use the same --epochs or a fresh --output-dir")
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        record = state["record"]
        log(f"resuming after epoch {len(record['history'])} from {checkpoint}")
    X = torch.from_numpy(data.X_train).reshape(-1, *INPUT_SHAPE)
    y = torch.from_numpy(data.y_train)
    for _ in range(len(record["history"]), epochs):
        train_epoch(module, optimizer, schedule, (X, y), batch, generator, data, record)
        record["epochs_done"] = len(record["history"])
        save_weights(module, weights)
        weights.with_suffix(".json").write_text(json.dumps(record, indent=1))
        _save_checkpoint(checkpoint, module, optimizer, schedule, generator, record)
        log(epoch_line(record, epochs))
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-home", default=os.environ.get("SKSIM_DATA"),
                        help="folder holding cifar-100/ (or set SKSIM_DATA)")
    parser.add_argument("--output-dir", default=str(EXAMPLES_DIR / "output"),
                        help="folder for cifar100_resnet20.npz/.json/.ckpt (fresh by "
                             "default; the same folder resumes)")
    args = parser.parse_args(argv)
    import torch

    from sksim.datasets import load_cifar100

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_cifar100(args.data_home)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train(data, args.epochs, out,
          log=lambda *a: print(time.strftime("[%H:%M:%S]"), *a, flush=True))


if __name__ == "__main__":
    from _shared import run_script

    run_script(main)
