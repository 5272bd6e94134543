"""Shared code of the convolutional-teacher experiments (cifar100.py,
fashion_mnist_cnn.py): teacher logits and weight count, and the alpha sweep
that fits weight-shared SIM models and measures each one."""

import json
import resource
import time

import numpy as np


def log(*args):
    print(time.strftime("[%H:%M:%S]"), *args, flush=True)


def peak_rss_gb():
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def teacher_logits(module, X, input_shape, batch=500):
    import torch

    out = []
    module.eval()
    with torch.no_grad():
        for start in range(0, X.shape[0], batch):
            images = torch.from_numpy(np.ascontiguousarray(X[start:start + batch],
                                                           dtype=np.float32))
            out.append(module(images.reshape(-1, *input_shape)).double().numpy())
    return np.vstack(out)


def teacher_weight_count(module):
    """Weights of the conv and linear layers (biases and BatchNorm excluded:
    BatchNorm folds into the convolutions)."""
    import torch

    return int(sum(m.weight.numel() for m in module.modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))))


def alpha_sweep(baseline, alphas, params, train, test, teacher):
    """Fit SIMClassifier(baseline, alpha, **params) for each alpha on
    ``train = (X, y, teacher logits)`` (outputs matched to the logits) and
    yield one record per fit measured on ``test``; ``teacher`` holds the
    teacher's ``weights`` count and ``forward_seconds`` on the test set."""
    from sksim import SIMClassifier

    X_train, y_train, train_logits = train
    X_test, y_test, test_logits = test
    teacher_pred = test_logits.argmax(axis=1)
    for alpha in alphas:
        model = SIMClassifier(baseline, alpha=alpha, random_state=0, **params)
        start = time.perf_counter()
        model.fit(X_train, y_train, baseline_outputs=train_logits)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scores = model.decision_function(X_test)
        predict_seconds = time.perf_counter() - start
        sim_pred = model.classes_[scores.argmax(axis=1)]
        fit = {
            "alpha": alpha,
            "test_accuracy": float(np.mean(sim_pred == y_test)),
            "agreement": float(np.mean(sim_pred == teacher_pred)),
            "nonzero": model.n_nonzero_,
            "fraction_of_teacher": model.n_nonzero_ / teacher["weights"],
            "fit_seconds": fit_seconds,
            "predict_seconds": predict_seconds,
            "predict_over_teacher": predict_seconds / teacher["forward_seconds"],
            "peak_rss_gb": peak_rss_gb(),
            "lipschitz_bound": model.lipschitz_bound_,
            "lipschitz_path_bound": model.lipschitz_path_bound_,
            "max_relative_state_gap": float(np.max(
                model.state_duality_gaps_ / np.maximum(model.state_objectives_, 1e-300))),
            "block_scales": model.block_scales_.tolist(),
            "kernel_nonzeros_per_block": [int(sum(np.count_nonzero(k) for k in block))
                                          for block in model.kernels_],
        }
        log(json.dumps(fit))
        yield fit
