"""What the examples and the benchmarks share: the data folder, the MLP teacher
recipe and its cache, the training subsets and the JSON writer.

Not part of the package. ``examples/_experiments.py`` and
``examples/torch_fashion_mnist.py`` import it from their own folder;
``benchmarks/_common.py`` puts ``examples/`` on the path first. One recipe and
one cache-key format for all of them, so a teacher trained by any script is
found by the others.

Teacher recipe: a ReLU MLP ``n_in - widths - 10`` built right after
``torch.manual_seed(seed)``, trained by Adam (lr 1e-3) on the cross-entropy,
the batches drawn from a torch generator seeded with ``seed``. The committed
results in ``examples/results/`` and ``benchmarks/results/`` were produced by
teachers of exactly this recipe: changing an operation here changes the
trained weights, and the cached ones no longer match it.

Teacher cache: ``<key>.npz`` (the state dict and ``_train_seconds``) in
``benchmarks/cache/`` or ``examples/output/cache/`` (both git-ignored),
looked up in that order.
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_CACHE = REPO_ROOT / "benchmarks" / "cache"
EXAMPLES_CACHE = REPO_ROOT / "examples" / "output" / "cache"
TEACHER_CACHES = (BENCH_CACHE, EXAMPLES_CACHE)


def run_script(main):
    """Run a command-line script's ``main``: a missing data or result file is
    its message on stderr and exit status 2, not a traceback."""
    try:
        main()
    except FileNotFoundError as error:
        print(f"{Path(sys.argv[0]).name}: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def default_data_home():
    """``SKSIM_DATA``, else ``../shared/data`` next to the repository, else None."""
    env = os.environ.get("SKSIM_DATA")
    if env:
        return env
    shared = REPO_ROOT.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def subset_indices(n_train, m, seed=0):
    """First ``m`` entries of one fixed permutation of the training set, so the
    subsets of growing ``m`` are nested."""
    return np.random.default_rng(seed).permutation(n_train)[:m]


# ------------------------------------------------------------------- teacher
def build_mlp(n_in, widths, n_out=10):
    """An untrained ReLU MLP ``n_in - widths - n_out`` (torch's default init)."""
    from torch import nn

    layers, previous = [], n_in
    for width in widths:
        layers += [nn.Linear(previous, width), nn.ReLU()]
        previous = width
    layers.append(nn.Linear(previous, n_out))
    return nn.Sequential(*layers)


def linear_layers(model):
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def train_mlp(model, X, y, *, epochs, seed, lr=1e-3, batch=128, masks=None):
    """Adam on the cross-entropy; returns the model in eval mode.

    ``masks`` (one 0/1 tensor per Linear weight) are re-applied after every
    step, which fine-tunes a pruned network without regrowing its weights.
    """
    import torch
    from torch import nn

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    inputs, targets = torch.as_tensor(X), torch.as_tensor(y)
    generator = torch.Generator().manual_seed(seed)
    layers = linear_layers(model)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch):
            index = order[start:start + batch]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs[index]), targets[index])
            loss.backward()
            optimizer.step()
            if masks is not None:
                with torch.no_grad():
                    for layer, mask in zip(layers, masks):
                        layer.weight.mul_(mask)
    return model.eval()


def teacher_key(n_in, widths, *, epochs, seed, dataset="fashion-mnist"):
    """Name of a teacher's cache file. Fashion-MNIST teachers carry no dataset
    prefix: the name the benchmarks gave them first, kept so that teachers
    already trained are found."""
    name = f"mlp{n_in}-{'-'.join(map(str, widths))}-10_seed{seed}_ep{epochs}"
    return name if dataset == "fashion-mnist" else f"{dataset}_{name}"


class CachedTeacher(NamedTuple):
    model: object          # torch module in eval mode
    path: Path             # its cache file
    train_seconds: float   # training time (when it was trained, for a cached one)
    trained_now: bool


def _load_state(model, path):
    """Load the weights saved in ``path`` into ``model``; returns the training
    time stored with them."""
    import torch

    with np.load(path) as archive:
        state = {k: torch.as_tensor(archive[k]) for k in archive.files
                 if not k.startswith("_")}
        train_seconds = float(archive["_train_seconds"])
    model.load_state_dict(state)
    return train_seconds


def _save_state(model, path, train_seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    np.savez(path, _train_seconds=train_seconds, **arrays)


def cached_teacher(X, y, widths, *, epochs, seed, batch=128, dataset="fashion-mnist",
                   save_dir=EXAMPLES_CACHE, log=print):
    """The teacher of the recipe trained on ``(X, y)``, from the first cache
    folder that has it, else trained now and saved in ``save_dir``."""
    import torch

    n_in = X.shape[1]
    key = teacher_key(n_in, widths, epochs=epochs, seed=seed, dataset=dataset)
    # Seeded right before building: the initial weights are part of the recipe.
    torch.manual_seed(seed)
    model = build_mlp(n_in, widths)
    cached = [folder / f"{key}.npz" for folder in TEACHER_CACHES
              if (folder / f"{key}.npz").is_file()]
    if cached:
        train_seconds = _load_state(model, cached[0])
        return CachedTeacher(model.eval(), cached[0], train_seconds, False)
    path = Path(save_dir) / f"{key}.npz"
    log(f"training teacher {key} (cached afterwards in {path})")
    start = time.perf_counter()
    train_mlp(model, X, y, epochs=epochs, seed=seed, batch=batch)
    train_seconds = time.perf_counter() - start
    _save_state(model, path, train_seconds)
    return CachedTeacher(model, path, train_seconds, True)


# ----------------------------------------------------------------------- I/O
def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


def write_json(path, payload):
    """Write ``payload`` (numpy scalars and arrays allowed) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path
