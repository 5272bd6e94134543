"""Shared code of the sparsity, robustness and data-use experiments (issue 5).

Not part of the package: ``examples/sparsity.py``, ``examples/robustness.py``
and ``examples/data_use.py`` import it from their own folder.

Datasets (``load_dataset``):

* ``fashion-mnist``: the official 60,000 / 10,000 split; the teacher is the
  784-64-32-16-10 ReLU MLP of ``examples/torch_fashion_mnist.py`` (Adam,
  lr 1e-3, batches of 128, 10 epochs, seed 0), loaded from
  ``benchmarks/cache/`` or ``examples/output/cache/`` when present.
* ``mnist``: only MNIST's 10,000-image test split is available offline; it is
  split 70/30, stratified, seed 0 (7,000 train / 3,000 test). Teacher
  784-64-32-16-10, 20 epochs, otherwise the same recipe.
* ``digits``: scikit-learn's 8x8 digits scaled to [0, 1], split 70/30,
  stratified, seed 0 (1,257 / 540). Teacher 64-64-32-16-10, 200 epochs,
  batches of 32.

Counting: "nonzeros" are weights only. For the teacher, the entries of its
weight matrices (biases excluded; they are kept by pruning); for SIM,
``n_nonzero_`` = nonzeros of A, B, C and D (intercepts excluded).
"""

import copy
import os
import sys
import time
from pathlib import Path

import _shared as shared  # the teacher recipe and cache, shared with the benchmarks
import numpy as np
from _shared import cached_teacher, default_data_home, linear_layers, train_mlp

EXAMPLES_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXAMPLES_DIR.parent
RESULTS_DIR = EXAMPLES_DIR / "results"
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

subset_indices = shared.subset_indices  # the scripts' E.subset_indices

SEED = 0
KAPPA = 0.95
DATASETS = ("fashion-mnist", "mnist", "digits")

# per dataset: hidden widths, epochs, batch size of the teacher; default m
TEACHER_RECIPES = {
    "fashion-mnist": {"widths": (64, 32, 16), "epochs": 10, "batch": 128},
    "mnist": {"widths": (64, 32, 16), "epochs": 20, "batch": 128},
    "digits": {"widths": (64, 32, 16), "epochs": 200, "batch": 32},
}
DEFAULT_M = {"fashion-mnist": 5000, "mnist": 5000, "digits": 1000}


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


def fresh_output_dir():
    """``examples/output/run-<UTC time>``: a run never overwrites the committed
    ``examples/results`` (or an earlier run) unless asked to."""
    return EXAMPLES_DIR / "output" / time.strftime("run-%Y%m%d-%H%M%S", time.gmtime())


def add_common_arguments(parser):
    parser.add_argument("--dataset", choices=DATASETS, default="fashion-mnist")
    parser.add_argument("--data-home", default=default_data_home(),
                        help="folder with fashion-mnist/ and mnist/ .npz files "
                             "(default: $SKSIM_DATA, else ../shared/data, else OpenML)")
    parser.add_argument("--output-dir", default=str(fresh_output_dir()),
                        help="where results go (default: a new examples/output/run-<UTC "
                             "time>/; pass examples/results to regenerate the committed "
                             "results)")
    parser.add_argument("--seed", type=int, default=SEED)
    return parser


# ---------------------------------------------------------------------- data
def load_dataset(name, data_home=None, seed=SEED):
    """Bunch with X_train, y_train, X_test, y_test (float32 in [0, 1], int64)."""
    from sklearn.model_selection import train_test_split
    from sklearn.utils import Bunch

    data_home = default_data_home() if data_home is None else data_home
    if name == "fashion-mnist":
        from sksim.datasets import load_fashion_mnist

        data = load_fashion_mnist(data_home)
        data.description = "Fashion-MNIST, official split: 60,000 train / 10,000 test"
        return data
    if name == "mnist":
        from sksim.datasets import load_mnist

        full = load_mnist(data_home, splits=("test",))
        X, y = full.X_test, full.y_test
        description = ("MNIST test split (10,000 images; the only split available "
                       f"offline), split 70/30 stratified, seed {seed}")
    elif name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = (X / 16.0).astype(np.float32)
        y = y.astype(np.int64)
        description = ("scikit-learn digits (1,797 8x8 images scaled to [0, 1]), "
                       f"split 70/30 stratified, seed {seed}")
    else:
        raise ValueError(name)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=seed)
    return Bunch(X_train=np.ascontiguousarray(X_train, dtype=np.float32),
                 y_train=y_train.astype(np.int64),
                 X_test=np.ascontiguousarray(X_test, dtype=np.float32),
                 y_test=y_test.astype(np.int64), description=description)


def split_subset(n_train, m, n_val=5000, seed=SEED):
    """(SIM subset, validation subset): the first m of the permutation and the
    next (at most n_val) training samples, disjoint."""
    order = np.random.default_rng(seed).permutation(n_train)
    if m >= n_train:
        raise ValueError(f"m={m} leaves no validation samples (n_train={n_train})")
    return order[:m], order[m:m + n_val]


# ------------------------------------------------------------------- teacher
def get_teacher(dataset, data, seed=SEED):
    """(torch teacher in eval mode, info dict); trained once, then cached."""
    recipe = TEACHER_RECIPES[dataset]
    widths, epochs, batch = recipe["widths"], recipe["epochs"], recipe["batch"]
    teacher = cached_teacher(data.X_train, data.y_train, widths, epochs=epochs,
                             seed=seed, batch=batch, dataset=dataset, log=log)
    model = teacher.model
    n_in = data.X_train.shape[1]
    info = {"architecture": f"MLP {n_in}-{'-'.join(map(str, widths))}-10 (ReLU)",
            "recipe": f"Adam lr 1e-3, batch {batch}, {epochs} epochs on the "
                      f"{len(data.X_train):,} training images, seed {seed}",
            "train_seconds": teacher.train_seconds}
    if teacher.trained_now:
        info["trained_now"] = True
    else:
        info["loaded_from"] = str(teacher.path.relative_to(REPO_ROOT))
    for p in model.parameters():
        p.requires_grad_(False)
    info["test_accuracy"] = torch_accuracy(model, data.X_test, data.y_test)
    info["n_weights"] = n_weights(model)
    info["n_biases"] = int(sum(layer.bias.numel() for layer in linear_layers(model)))
    return model, info


def torch_logits(model, X, batch=4096):
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch):
            out.append(model(torch.as_tensor(X[start:start + batch])).double().numpy())
    return np.concatenate(out)


def torch_accuracy(model, X, y):
    return float(np.mean(torch_logits(model, X).argmax(1) == y))


def n_weights(model):
    """Nonzero weights (biases excluded) of all Linear layers."""
    return int(sum(int((layer.weight != 0).sum()) for layer in linear_layers(model)))


def teacher_weight_count(model):
    return int(sum(layer.weight.numel() for layer in linear_layers(model)))


# ------------------------------------------------------------------- pruning
def magnitude_prune(model, n_keep):
    """Global magnitude pruning of all weight matrices (biases kept): keep the
    ``n_keep`` weights of largest |w| over all layers. Returns (copy, masks)."""
    import torch

    pruned = copy.deepcopy(model)
    layers = linear_layers(pruned)
    magnitudes = torch.cat([layer.weight.detach().abs().flatten() for layer in layers])
    n_keep = int(min(max(n_keep, 0), magnitudes.numel()))
    keep = torch.zeros(magnitudes.numel(), dtype=torch.bool)
    if n_keep:
        keep[torch.topk(magnitudes, n_keep, sorted=False).indices] = True
    masks, offset = [], 0
    with torch.no_grad():
        for layer in layers:
            size = layer.weight.numel()
            mask = keep[offset:offset + size].reshape(layer.weight.shape).float()
            layer.weight.mul_(mask)
            masks.append(mask)
            offset += size
    return pruned.eval(), masks


def fine_tune(pruned, masks, X, y, *, epochs=1, lr=1e-4, batch=128, seed=SEED):
    """A short fine-tune of a pruned network with its mask fixed."""
    tuned = copy.deepcopy(pruned)
    for p in tuned.parameters():
        p.requires_grad_(True)
    train_mlp(tuned, X, y, epochs=epochs, seed=seed, lr=lr, batch=batch, masks=masks)
    for p in tuned.parameters():
        p.requires_grad_(False)
    return tuned.eval()


# ------------------------------------------------------------------------ SIM
def record(teacher, X):
    """(states, logits) of the teacher on X, exactly what ``fit`` would record."""
    from sksim import TorchBaseline

    return TorchBaseline(teacher).record(X)


def layer_scales(teacher, kappa=KAPPA):
    """Per-state scales that make the teacher itself a well-posed implicit model:
    layer l+1 is scaled by kappa / ||W_{l+1}||_inf relative to layer l (ReLU is
    positively homogeneous), the trick sksim applies to scikit-learn teachers."""
    layers = linear_layers(teacher)
    scale, scales = 1.0, []
    for i, layer in enumerate(layers[:-1]):
        if i > 0:
            # The norm of the float32 weights summed in float32, not
            # sksim.baselines.well_posed_layer_scales (float64 sums): the scales
            # differ by up to 4e-8 relative, and these produced the committed
            # sim_rescaled series.
            norm = float(layer.weight.abs().sum(1).max())
            scale *= min(1.0, kappa / norm)
        scales.append(np.full(layer.out_features, scale))
    return np.concatenate(scales)


def fit_sim(X, y, states, logits, **params):
    """Fit SIMClassifier on recorded states; returns (estimator, seconds)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from sksim import SIMClassifier

    params.setdefault("kappa", KAPPA)
    est = SIMClassifier(None, **params)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(X, y, states=states, baseline_outputs=logits)
    seconds = time.perf_counter() - start
    est.fit_warnings_ = [str(w.message)[:200] for w in caught]
    return est, seconds


def teacher_implicit_form(teacher):
    """(A, B, C, D) of a torch ReLU MLP written as an implicit model (raw scale)."""
    from sksim.baselines import mlp_implicit_blocks

    layers = linear_layers(teacher)
    coefs = [layer.weight.detach().double().numpy().T for layer in layers]
    intercepts = [layer.bias.detach().double().numpy() for layer in layers]
    return mlp_implicit_blocks(coefs, intercepts)[:4]


def sim_summary(est, data, n_teacher_weights, seconds=None):
    from sksim.inspection import infinity_norm

    out = {
        "test_accuracy": float(est.score(data.X_test, data.y_test)),
        "n_nonzero": int(est.n_nonzero_),
        "nonzero_fraction": est.n_nonzero_ / n_teacher_weights,
        "nnz_A_B_C_D": [int(getattr(est, n).nnz) for n in ("A_", "B_", "C_", "D_")],
        "norms_inf_A_B_C_D": [infinity_norm(getattr(est, n))
                              for n in ("A_", "B_", "C_", "D_")],
        "lipschitz_bound": float(est.lipschitz_bound_),
        "lipschitz_abs_path_bound": est.lipschitz_path_bound_,
    }
    if seconds is not None:
        out["fit_seconds"] = round(seconds, 2)
    if getattr(est, "fit_warnings_", None):
        out["fit_warnings"] = est.fit_warnings_
    return out


def has_row_bound():
    import inspect

    import sksim

    return "row_bound" in inspect.signature(sksim.SIMClassifier).parameters


# ---------------------------------------------------------- Lipschitz bounds
def teacher_lipschitz(teacher, kappa=KAPPA):
    """Certified l_inf -> l_inf Lipschitz bounds of a ReLU MLP teacher.

    * ``product``: the standard feed-forward bound prod_l ||W_l||_inf.
    * ``implicit_raw``: the SIM formula ||C|| ||B|| / (1 - ||A||) + ||D|| on the
      teacher written as an implicit model (A = hidden-to-hidden weights,
      strictly block lower triangular; B = first layer; C = last layer; D = 0);
      None when ||A||_inf >= 1 (the formula does not apply).
    * ``implicit_rescaled``: the same formula after the layerwise rescaling
      that makes every block of A have ||.||_inf = k (same function), for
      k = kappa and for the best k = h / (h + 1) with h hidden-to-hidden
      blocks: ||W_last|| ||W_1|| prod ||W_mid|| / (k^h (1 - k)).
    """
    from sksim.inspection import path_bound

    norms = [float(layer.weight.abs().sum(1).max()) for layer in linear_layers(teacher)]
    first, middle, last = norms[0], norms[1:-1], norms[-1]
    product = float(np.prod(norms))
    a_norm = max(middle) if middle else 0.0
    raw = last * first / (1 - a_norm) if a_norm < 1 else None
    h = len(middle)
    mid = float(np.prod(middle)) if middle else 1.0

    def rescaled(k):
        return last * first * mid / (k ** h * (1 - k))

    best_k = h / (h + 1) if h else 0.0
    return {
        "abs_path": path_bound(*teacher_implicit_form(teacher)),
        "layer_norms_inf": norms,
        "A_norm_inf_raw": a_norm,
        "product": product,
        "implicit_raw": raw,
        "implicit_rescaled_kappa": rescaled(kappa),
        "kappa": kappa,
        "implicit_rescaled_best": rescaled(best_k) if h else last * first,
        "best_kappa": best_k,
    }


# ------------------------------------------------------------------- attacks
def _batched_correct(forward, X, y, batch):
    import torch

    correct = []
    with torch.no_grad():
        for start in range(0, len(X), batch):
            logits = forward(torch.as_tensor(X[start:start + batch]))
            correct.append(logits.argmax(1).numpy() == y[start:start + batch])
    return np.concatenate(correct)


def noise_accuracy(forward, X, y, eps, *, seed=SEED, batch=1000):
    rng = np.random.default_rng(seed)
    noisy = np.clip(X + rng.uniform(-eps, eps, X.shape).astype(np.float32), 0, 1)
    return float(_batched_correct(forward, noisy, y, batch).mean())


def pgd_correct(forward, X, y, eps, *, steps, step_size=None, random_start=True,
                seed=SEED, batch=500, return_examples=False):
    """Per-sample correctness under an l_inf PGD attack on the cross-entropy.

    ``steps=1, random_start=False, step_size=eps`` is FGSM. A sample counts as
    robust only if it is classified correctly at every iterate the attack
    evaluated (the start and each step), a slightly stronger criterion than
    looking at the last iterate only.
    """
    import torch
    from torch import nn

    step_size = 2.5 * eps / steps if step_size is None else step_size
    generator = torch.Generator().manual_seed(seed)
    robust, examples = [], []
    for start in range(0, len(X), batch):
        x0 = torch.as_tensor(X[start:start + batch])
        target = torch.as_tensor(y[start:start + batch])
        ok = torch.ones(len(x0), dtype=torch.bool)
        if random_start:
            noise = (torch.rand(x0.shape, generator=generator) * 2 - 1) * eps
            x = (x0 + noise).clamp(0, 1)
        else:
            x = x0.clone()
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            logits = forward(x)
            ok &= logits.detach().argmax(1) == target
            loss = nn.functional.cross_entropy(logits.float(), target)
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                x = x + step_size * grad.sign()
                x = torch.min(torch.max(x, x0 - eps), x0 + eps).clamp(0, 1)
        with torch.no_grad():
            ok &= forward(x).argmax(1) == target
        robust.append(ok.numpy())
        examples.append(x.detach().numpy())
    if return_examples:
        return np.concatenate(robust), np.concatenate(examples)
    return np.concatenate(robust)


def fgsm_accuracy(forward, X, y, eps, **kw):
    return float(pgd_correct(forward, X, y, eps, steps=1, step_size=eps,
                             random_start=False, **kw).mean())


def pgd_accuracy(forward, X, y, eps, *, steps=20, **kw):
    return float(pgd_correct(forward, X, y, eps, steps=steps, **kw).mean())


def _record_iterate(x, logits, target, ok, best, best_score):
    """One attack iterate ``x``: clear ``ok`` where it is misclassified and
    keep it in ``best`` where it is the strongest so far (the first
    misclassified iterate, else the one of largest loss)."""
    import torch
    from torch import nn

    wrong = logits.detach().argmax(1) != target
    loss = nn.functional.cross_entropy(logits.detach().double(), target,
                                       reduction="none")
    score = torch.where(wrong, torch.full_like(loss, np.inf), loss)
    better = score > best_score
    best[better] = x.detach()[better].to(best.dtype)
    best_score[better] = score[better]
    ok.logical_and_(~wrong)


def strong_pgd_correct(forward, X, y, eps, *, steps=20, step_size=None, restarts=2,
                       seed=SEED, batch=500, dtype=None, clip=(0, 1),
                       return_examples=False):
    """Per-sample correctness under a stronger l_inf PGD on the cross-entropy.

    Each of ``restarts`` runs starts at a uniform random point of the eps
    ball (clipped to ``clip``) and takes ``steps`` signed-gradient steps of
    ``step_size`` (default ``eps / 4``), each projected onto the ball and
    ``clip``. A sample is robust only if it is classified correctly at every
    iterate of every restart (the start, each step and the end).
    ``forward`` is a torch module or callable taking a tensor of ``dtype``
    (default ``torch.float64``: ``sim_forward64``; a float32 teacher wants
    ``dtype=torch.float32`` or a ``.double()`` copy).

    Returns the boolean array, and with ``return_examples`` also the strongest
    example of each sample (float64): its first misclassified iterate, else
    the iterate of largest loss.
    """
    import torch
    from torch import nn

    dtype = torch.float64 if dtype is None else dtype
    step_size = eps / 4 if step_size is None else step_size
    low, high = clip if clip is not None else (-np.inf, np.inf)
    generator = torch.Generator().manual_seed(seed)
    robust, examples = [], []
    for start in range(0, len(X), batch):
        x0 = torch.as_tensor(np.asarray(X[start:start + batch]), dtype=dtype)
        target = torch.as_tensor(np.asarray(y[start:start + batch]), dtype=torch.long)
        ok = torch.ones(len(x0), dtype=torch.bool)
        best = x0.clone()
        best_score = torch.full((len(x0),), -np.inf, dtype=torch.float64)

        for _ in range(restarts):
            noise = (torch.rand(x0.shape, generator=generator, dtype=dtype) * 2 - 1) * eps
            x = (x0 + noise).clamp(low, high)
            for _ in range(steps):
                x = x.detach().requires_grad_(True)
                logits = forward(x)
                _record_iterate(x, logits, target, ok, best, best_score)
                loss = nn.functional.cross_entropy(logits, target, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    x = x + step_size * grad.sign()
                    x = torch.min(torch.max(x, x0 - eps), x0 + eps).clamp(low, high)
            with torch.no_grad():
                _record_iterate(x, forward(x), target, ok, best, best_score)
        robust.append(ok.numpy())
        examples.append(best.double().numpy())
    if return_examples:
        return np.concatenate(robust), np.concatenate(examples)
    return np.concatenate(robust)


def attack_sanity(forward, X, y, eps_large, **kw):
    """Accuracy under ``strong_pgd_correct`` at a large eps: near 0 when the
    attack works (a gradient-masked or broken attack leaves it high)."""
    return float(strong_pgd_correct(forward, X, y, eps_large, **kw).mean())


def adversarial_fine_tune(model, X, y, eps, *, seconds, steps=7, step_size=None,
                          lr=1e-3, optimizer="adam", batch=128, seed=SEED, clip=(0, 1)):
    """PGD adversarial training (Madry et al., 2018) of a float32 copy of ``model``.

    Each batch is replaced by its l_inf PGD examples (uniform random start in
    the eps ball, ``steps`` signed-gradient steps of ``step_size``, default
    ``2.5 eps / steps``, projected onto the ball and ``clip``), and the model
    takes one step (Adam, or ``optimizer="sgd"`` with momentum 0.9) on their
    cross-entropy. Runs until ``seconds`` of wall time are spent (checked
    before every batch). ``model`` itself is not changed.

    Returns ``(tuned model in eval mode, info)``; info has the epochs (a
    fraction for the last, partial one), batches and seconds spent and the
    attack's settings.
    """
    import torch
    from torch import nn

    step_size = 2.5 * eps / steps if step_size is None else step_size
    low, high = clip if clip is not None else (-np.inf, np.inf)
    tuned = copy.deepcopy(model).float()
    for p in tuned.parameters():
        p.requires_grad_(True)
    if optimizer == "adam":
        opt = torch.optim.Adam(tuned.parameters(), lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=0.9)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {optimizer!r}")
    inputs = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    targets = torch.as_tensor(np.asarray(y), dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    n_batches_per_epoch = -(-len(inputs) // batch)
    n_batches, epochs, begin = 0, 0, time.perf_counter()
    done = False
    while not done:
        order = torch.randperm(len(inputs), generator=generator)
        for number, start in enumerate(range(0, len(inputs), batch)):
            if time.perf_counter() - begin >= seconds:
                done = True
                epochs += number / n_batches_per_epoch
                break
            index = order[start:start + batch]
            x0, target = inputs[index], targets[index]
            tuned.eval()
            noise = (torch.rand(x0.shape, generator=generator) * 2 - 1) * eps
            x = (x0 + noise).clamp(low, high)
            for _ in range(steps):
                x = x.detach().requires_grad_(True)
                loss = nn.functional.cross_entropy(tuned(x), target)
                (grad,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    x = x + step_size * grad.sign()
                    x = torch.min(torch.max(x, x0 - eps), x0 + eps).clamp(low, high)
            tuned.train()
            opt.zero_grad()
            nn.functional.cross_entropy(tuned(x.detach()), target).backward()
            opt.step()
            n_batches += 1
        else:
            epochs += 1
    for p in tuned.parameters():
        p.requires_grad_(False)
    info = {"epochs": round(epochs, 3), "batches": n_batches,
            "seconds": round(time.perf_counter() - begin, 2), "eps": eps, "steps": steps,
            "step_size": step_size, "optimizer": optimizer, "lr": lr, "batch": batch,
            "seed": seed}
    return tuned.eval(), info


def mlp_layers(module):
    """A torch ReLU MLP (``nn.Sequential`` of Linear and ReLU, Flatten,
    Identity, Dropout allowed) as ``(coefs, intercepts)`` float64 lists in
    scikit-learn's convention (``weight.T``), for
    ``sksim.certify.certified_mlp_predictions``. Every Linear but the last
    must be followed by a ReLU. The submodules are read in registration
    order, so the result is checked against ``module`` on random inputs."""
    import torch
    from torch import nn

    coefs, intercepts, kinds = [], [], []
    for layer in module.modules():
        if next(layer.children(), None) is not None:
            continue  # a container
        if isinstance(layer, nn.Linear):
            coefs.append(layer.weight.detach().double().numpy().T.copy())
            bias = layer.bias
            intercepts.append(np.zeros(layer.out_features) if bias is None
                              else bias.detach().double().numpy().copy())
            kinds.append("linear")
        elif isinstance(layer, nn.ReLU):
            kinds.append("relu")
        elif not isinstance(layer, (nn.Flatten, nn.Identity, nn.Dropout)):
            raise TypeError(f"mlp_layers reads Linear, ReLU, Flatten, Identity and "
                             f"Dropout only; got {type(layer).__name__}")
    expected = ["linear", "relu"] * (len(coefs) - 1) + ["linear"]
    if not coefs or kinds != expected:
        raise ValueError(f"not a ReLU MLP (Linear, ReLU, ..., Linear): {kinds}")
    # registration order is not necessarily the forward order: check
    probe = np.random.default_rng(0).uniform(size=(4, coefs[0].shape[0]))
    dtype = next(module.parameters()).dtype
    with torch.no_grad():
        expected_out = module(torch.as_tensor(probe, dtype=dtype)).double().numpy()
    out = probe
    for weight, bias in zip(coefs[:-1], intercepts[:-1]):
        out = np.maximum(out @ weight + bias, 0.0)
    out = out @ coefs[-1] + intercepts[-1]
    if not np.allclose(out, expected_out, rtol=1e-4, atol=1e-4):
        raise ValueError("the Linear/ReLU layers read in registration order do not "
                         "compute the module's outputs")
    return coefs, intercepts


def sim_forward64(est, tol=1e-10):
    """The fitted SIM model as a float64 torch module (dense weights), its
    fixed-point loops run to ``tol`` (for attacks that must not be weakened
    by a loose float32 equilibrium)."""
    import torch

    return est.to_torch(dtype=torch.float64, sparse=False, tol=tol).eval()


def sim_forward(est, tol=1e-6):
    """The fitted SIM model as a float32 torch module, ``est.to_torch``
    (gradients by implicit differentiation through the equilibrium).

    Exported from a shallow copy whose ``equilibrium_tol`` is relaxed to
    ``tol``: the estimator's default 1e-12 is below float32 resolution, so the
    torch fixed-point loop could run to its iteration cap. Dense weights
    (``sparse=False``): on CPU, torch's dense products are much faster than
    its sparse COO ones at these sizes.
    """
    import torch

    relaxed = copy.copy(est).set_params(equilibrium_tol=tol)
    return relaxed.to_torch(dtype=torch.float32, sparse=False).eval()


# ---------------------------------------------------------------------- I/O
def write_json(path, payload):
    path = shared.write_json(path, payload)
    log(f"wrote {path}")
    return path


def environment():
    import platform

    import scipy
    import sklearn
    import torch

    import sksim

    return {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "torch": torch.__version__, "sksim": sksim.__version__,
            "cpus_available": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path):
    """Write ``fig`` to ``path`` and close it (many figures per run otherwise
    pile up in pyplot's memory)."""
    fig.savefig(path, dpi=130)
    pyplot().close(fig)
    log(f"saved {path}")
