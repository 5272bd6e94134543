"""Perturbation-aware state matching: the teacher recorded also on perturbed
inputs ``u'``, so that every row is fitted to reproduce the teacher's *clean*
pre-activations from the states and inputs of the perturbed run.

For a row the design (its Gram) comes from the perturbed run and the targets
from the clean one: still one convex problem per row, on the same solvers,
with the same certificates and kappa bound. The perturbed inputs are

* ``"uniform"``: ``u + eps * U[-1, 1]`` per feature;
* ``"fgsm"``: one signed-gradient step of size ``eps`` on the teacher's loss;
* ``"pgd"``: ``PGD_STEPS`` signed-gradient steps of ``PGD_STEP * eps`` from a
  uniform start in the ball, each projected back onto it,

clipped to ``perturbation_range`` when it is set. The teacher's loss is its
own clean output's: a classifier's cross-entropy to the class it predicts on
the clean input (its own label, not y's, so no label leaks into the attack),
a regressor's squared distance to its clean output (whose gradient vanishes
at ``u``: a regressor's FGSM step starts from a uniform point of half the
radius). The random draws of a row are keyed by the seed and the row's
values, so every pass over the data (the state stage, the output stage, a
chunk of a memmap or of a dask array) perturbs a row the same way.
"""

import zlib
from typing import NamedTuple

import numpy as np

PGD_STEPS = 10
PGD_STEP = 0.25  # of eps


class Perturbation(NamedTuple):
    """How a fit perturbs its inputs (picklable: it travels to the workers).

    Attributes
    ----------
    kind : {"uniform", "fgsm", "pgd"}
    eps : float
        The l_inf radius, in the inputs' units.
    low, high : float or None
        ``perturbation_range``: the perturbed inputs are clipped to it.
    loss : {"cross_entropy", "squared"}
        The teacher's loss the attacks ascend.
    seed : int
    mix : {"both", "perturbed"}
        ``"both"``: every sample enters the row problems twice, clean and
        perturbed (both against the clean targets); ``"perturbed"``: only the
        perturbed copy.
    """

    kind: str
    eps: float
    low: object
    high: object
    loss: str
    seed: int
    mix: str


def from_estimator(est):
    """The estimator's Perturbation, or None without one; draws the seed of
    the fit from ``random_state``."""
    from sklearn.base import is_classifier
    from sklearn.utils import check_random_state

    if est.perturbation is None:
        return None
    eps = est.perturbation_eps
    if eps is None or not eps > 0:
        raise ValueError(
            f"perturbation={est.perturbation!r} needs perturbation_eps > 0 (the l_inf "
            f"radius of the perturbations, in the units of X); got {eps!r}.")
    low, high = _range(est.perturbation_range)
    seed = int(check_random_state(est.random_state).randint(2**31 - 1))
    loss = "cross_entropy" if is_classifier(est) else "squared"
    return Perturbation(est.perturbation, float(eps), low, high, loss, seed,
                        est.perturbation_mix)


def _range(value):
    if value is None:
        return None, None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"perturbation_range must be None or a pair (low, high) of numbers; got "
            f"{value!r}.") from None
    if not low < high:
        raise ValueError(f"perturbation_range must have low < high; got {value!r}.")
    return low, high


def check_teacher(perturbation, has_teacher):
    """A perturbed run needs a teacher to run (not precomputed states)."""
    if perturbation is not None and not has_teacher:
        raise ValueError(
            "perturbation needs a teacher to record on the perturbed inputs; with "
            "precomputed states (states=...) there is none. Pass the teacher as "
            "baseline instead, or set perturbation=None.")


# ---------------------------------------------------------- perturbed inputs
def perturbed_inputs(perturbation, teacher, X, outputs):
    """The perturbed copy of the rows ``X``.

    Parameters
    ----------
    perturbation : Perturbation
    teacher : ("mlp", coefs, intercepts) or TorchBaseline
        The teacher whose loss the attacks ascend.
    X : ndarray of shape (n_samples, n_features)
        Clean inputs (float64).
    outputs : ndarray of shape (n_samples, n_outputs)
        The teacher's raw outputs on ``X``.

    Returns
    -------
    X_perturbed : ndarray of shape (n_samples, n_features), float64
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    p = perturbation
    noise = _row_noise(p.seed, X)
    if p.kind == "uniform":
        return _clipped(p, X + p.eps * noise)
    reference = np.asarray(outputs, dtype=np.float64).reshape(len(X), -1)
    if p.kind == "fgsm":
        start = X if p.loss == "cross_entropy" else _clipped(p, X + 0.5 * p.eps * noise)
        return _step(p, X, start, p.eps, teacher, reference)
    current = _clipped(p, X + p.eps * noise)
    for _ in range(PGD_STEPS):
        current = _step(p, X, current, PGD_STEP * p.eps, teacher, reference)
    return current


def _row_noise(seed, X):
    """U[-1, 1] noise of each row, drawn from (seed, a checksum of the row)."""
    noise = np.empty_like(X)
    for i, row in enumerate(X):
        key = zlib.crc32(row.tobytes())
        noise[i] = np.random.default_rng([seed, key]).uniform(-1.0, 1.0, X.shape[1])
    return noise


def _clipped(p, X):
    if p.low is not None:
        np.clip(X, p.low, p.high, out=X)
    return X


def _step(p, clean, current, size, teacher, reference):
    """One signed-gradient ascent step, projected onto the eps ball of
    ``clean`` (and the range)."""
    gradient = loss_gradient(teacher, current, reference, p.loss)
    moved = current + size * np.sign(gradient)
    np.clip(moved, clean - p.eps, clean + p.eps, out=moved)
    return _clipped(p, moved)


def loss_gradient(teacher, X, reference, loss):
    """Gradient with respect to ``X`` of the teacher's loss against its clean
    outputs ``reference`` (see the module's docstring), summed over samples.

    Parameters
    ----------
    teacher : ("mlp", coefs, intercepts) or TorchBaseline
    X : ndarray of shape (n_samples, n_features)
    reference : ndarray of shape (n_samples, n_outputs)
    loss : {"cross_entropy", "squared"}

    Returns
    -------
    gradient : ndarray of shape (n_samples, n_features)
    """
    if isinstance(teacher, tuple):
        _, coefs, intercepts = teacher
        return _mlp_gradient(coefs, intercepts, X, reference, loss)
    return _torch_gradient(teacher, X, reference, loss)


def _output_gradient(outputs, reference, loss):
    """d loss / d outputs: softmax (sigmoid for one logit) minus the clean
    prediction's indicator, or the difference to the clean outputs."""
    if loss == "squared":
        return outputs - reference
    if outputs.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-outputs)) - (reference > 0)
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    gradient = shifted / shifted.sum(axis=1, keepdims=True)
    gradient[np.arange(len(outputs)), reference.argmax(axis=1)] -= 1.0
    return gradient


def _mlp_gradient(coefs, intercepts, X, reference, loss):
    """Backpropagation through a scikit-learn ReLU MLP's layers."""
    pre_activations, hidden = [], X
    for coef, intercept in zip(coefs[:-1], intercepts[:-1]):
        pre = hidden @ coef + intercept
        pre_activations.append(pre)
        hidden = np.maximum(pre, 0.0)
    gradient = _output_gradient(hidden @ coefs[-1] + intercepts[-1], reference, loss)
    gradient = gradient @ coefs[-1].T
    for coef, pre in zip(reversed(coefs[:-1]), reversed(pre_activations)):
        gradient = (gradient * (pre > 0)) @ coef.T
    return gradient


def _torch_gradient(teacher, X, reference, loss):
    """Autograd through the teacher's module, batch by batch, in eval mode."""
    import torch

    inputs = teacher._reshape(X)
    parts = []
    with teacher._eval_mode(), torch.enable_grad():
        for start in range(0, len(X), teacher.batch_size):
            batch = teacher._tensor(torch, inputs[start:start + teacher.batch_size])
            batch.requires_grad_(True)
            outputs = teacher.module(batch).reshape(len(batch), -1).double()
            target = torch.as_tensor(reference[start:start + teacher.batch_size],
                                     device=outputs.device)
            weight = torch.as_tensor(_output_gradient(
                outputs.detach().cpu().numpy(), target.cpu().numpy(), loss),
                device=outputs.device)
            # the loss's gradient in the outputs is known in closed form: push it back
            (gradient,) = torch.autograd.grad(outputs, batch, grad_outputs=weight)
            parts.append(gradient.reshape(len(batch), -1).cpu().double().numpy())
    return np.concatenate(parts)


# ----------------------------------------------------------- teacher batches
def design_pairs(perturbation, teacher, X, states, outputs, record):
    """The inputs and states the rows' design is built from, each paired with
    the clean targets: ``[(X, states)]`` without a perturbation, else the
    perturbed copy (``record(X')`` gives its states), after the clean one
    when ``mix="both"``."""
    if perturbation is None:
        return [(X, states)]
    X_perturbed = perturbed_inputs(perturbation, teacher, X, outputs)
    perturbed = (X_perturbed, record(X_perturbed))
    return [(X, states), perturbed] if perturbation.mix == "both" else [perturbed]


def teacher_batches(perturbation, teacher, X):
    """A torch teacher's batches on ``X`` for the weight-shared reductions:
    ``(rows, pre_activations, outputs, designs)`` per batch, ``designs`` its
    ``(inputs, pre-activations)`` pairs (:func:`design_pairs`)."""
    for rows, pre, outputs in teacher.iter_batches(X):
        yield rows, pre, outputs, design_pairs(
            perturbation, teacher, X[rows], pre, outputs,
            lambda X_p: next(iter(teacher.iter_batches(X_p)))[1])
