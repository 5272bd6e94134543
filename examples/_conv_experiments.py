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


def batched_outputs(forward, X, batch=500):
    """``forward`` (a float32 tensor of flat rows -> outputs) over X in
    batches, without gradients, as a float64 array."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, X.shape[0], batch):
            rows = torch.from_numpy(np.ascontiguousarray(X[start:start + batch],
                                                         dtype=np.float32))
            out.append(forward(rows).double().numpy())
    return np.vstack(out)


def teacher_logits(module, X, input_shape, batch=500):
    module.eval()
    return batched_outputs(lambda rows: module(rows.reshape(-1, *input_shape)), X, batch)


def gram_flops_per_image(model, positions_per_image=None):
    """Floating-point operations per image of the patch Gram products of a
    weight-shared fit: per block, ``rows (width^2 + 2 width channels)`` (the
    symmetric design product, counted as BLAS counts syrk, and the targets'
    product), ``rows`` the block's positions kept per image."""
    from sksim.blocks import link_width, n_positions

    structure = model.structure_
    flops = {}
    for shape, links in zip(structure.block_shapes, structure.links):
        rows = n_positions(shape) if positions_per_image is None else \
            min(n_positions(shape), positions_per_image)
        width = sum(link_width(structure, link) for link in links)
        flops[width] = flops.get(width, 0) + rows * (width**2 + 2 * width * shape[0])
    return flops


def gemm_rates(widths, rows=65536, repeats=3):
    """GFLOP/s of ``sksim.design.part_products`` (the reduce stage's Gram
    product, with the fit's threading) on random ``(rows, width)`` float64
    designs, the best of ``repeats``, per width."""
    from sksim.design import part_products

    rng = np.random.default_rng(0)
    rates = {}
    for width in widths:
        design = rng.random((rows, width))
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            part_products([(design, design)])
            best = min(best, time.perf_counter() - start)
        rates[width] = rows * width**2 / best / 1e9
    return rates


def fit_floor(model, m, teacher_forward_seconds, positions_per_image=None):
    """The reduce stage's floor for a fit on ``m`` images: the teacher's
    forward over them (measured) plus the patch Gram products at this
    machine's measured GEMM rate (:func:`gemm_rates`, per design width)."""
    flops = gram_flops_per_image(model, positions_per_image)
    rates = gemm_rates(sorted(flops))
    gram_seconds = sum(m * f / (rates[w] * 1e9) for w, f in flops.items())
    return {"gram_gflop": m * sum(flops.values()) / 1e9,
            "gemm_gflops_per_s": {str(w): r for w, r in rates.items()},
            "gram_seconds": gram_seconds,
            "teacher_forward_seconds": teacher_forward_seconds,
            "seconds": gram_seconds + teacher_forward_seconds}


def teacher_weight_count(module):
    """Weights of the conv and linear layers (biases and BatchNorm excluded:
    BatchNorm folds into the convolutions)."""
    import torch

    return int(sum(m.weight.numel() for m in module.modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))))


def alpha_sweep(baseline, alphas, params, train, test, teacher):
    """Fit SIMClassifier(baseline, alpha, **params) for each alpha on
    ``train = (X, y, teacher logits)`` (outputs matched to the logits) and
    yield ``(record, model)`` per fit, measured on ``test``; ``teacher`` holds
    the teacher's ``weights`` count and ``forward_seconds`` on the test set."""
    from sksim import SIMClassifier

    X_train, y_train, train_logits = train
    X_test, y_test, test_logits = test
    teacher_pred = test_logits.argmax(axis=1)
    for alpha in alphas:
        model = SIMClassifier(baseline, alpha=alpha, random_state=0, **params)
        start = time.perf_counter()
        model.fit(X_train, y_train, baseline_outputs=train_logits)
        fit_seconds = time.perf_counter() - start
        peak_after_fit = peak_rss_gb()
        start = time.perf_counter()
        scores = model.decision_function(X_test)
        predict_seconds = time.perf_counter() - start
        sim_pred = model.classes_[scores.argmax(axis=1)]
        float32_seconds, float32_pred = float32_predict(model, X_test)
        fit = {
            "alpha": alpha,
            "test_accuracy": float(np.mean(sim_pred == y_test)),
            "agreement": float(np.mean(sim_pred == teacher_pred)),
            "nonzero": model.n_nonzero_,
            "fraction_of_teacher": model.n_nonzero_ / teacher["weights"],
            "fit_seconds": fit_seconds,
            "predict_seconds": predict_seconds,
            "predict_over_teacher": predict_seconds / teacher["forward_seconds"],
            # the same model through to_torch(dtype=float32): the teacher's precision
            "float32_predict_seconds": float32_seconds,
            "float32_predict_over_teacher": float32_seconds / teacher["forward_seconds"],
            "float32_agreement_with_float64": float(np.mean(float32_pred == sim_pred)),
            # process peaks so far (monotone): only the first fit's
            # after-fit value is the fit's own
            "peak_rss_gb_after_fit": peak_after_fit,
            "peak_rss_gb": peak_rss_gb(),
            "lipschitz_bound": model.lipschitz_bound_,
            "lipschitz_path_bound": model.lipschitz_path_bound_,
            "max_relative_state_gap": float(np.max(
                model.state_duality_gaps_ / np.maximum(model.state_objectives_, 1e-300))),
            "block_scales": model.block_scales_.tolist(),
            "kernel_nonzeros_per_block": [int(sum(np.count_nonzero(k) for k in block))
                                          for block in model.kernels_],
            # per link of each block, in the fitted structure's order: the
            # teacher's own layer first, then its shortcut (a fitted kernel)
            "kernel_nonzeros_per_link": [[int(np.count_nonzero(k)) for k in block]
                                         for block in model.kernels_],
        }
        fit.update(plain_export_record(model, X_test, sim_pred, teacher))
        log(json.dumps(fit))
        yield fit, model


def plain_shape(module, n_features):
    """``(FLOPs per sample, out channels of each Conv2d)`` of a plain export."""
    import torch

    from sksim.plain_export import count_flops

    return count_flops(module, (n_features,)), [
        layer.out_channels for layer in module.modules() if isinstance(layer, torch.nn.Conv2d)]


def plain_export_record(model, X_test, sim_pred, teacher):
    """FLOPs, channels and float32 predict time of ``model.to_torch(plain=True)``
    (torch.nn layers, channels no row reads removed) on ``X_test``, next to the
    teacher's ``flops`` and ``forward_seconds`` (timed earlier in the same run);
    ``{"plain_export": reason}`` for a model that has no plain network."""
    import torch

    try:
        module = model.to_torch(plain=True, dtype=torch.float32)
    except ValueError as exc:  # feedback, or a block left constant
        return {"plain_export": str(exc)}
    start = time.perf_counter()
    scores = batched_outputs(module, X_test, 500)
    seconds = time.perf_counter() - start
    flops, channels = plain_shape(module, X_test.shape[1])
    return {"plain_flops": flops, "plain_flops_fraction": flops / teacher["flops"],
            "plain_conv_channels": channels, "plain_predict_seconds": seconds,
            "plain_predict_over_teacher": seconds / teacher["forward_seconds"],
            "plain_agreement_with_float64": float(np.mean(
                model.classes_[scores.argmax(axis=1)] == sim_pred))}


def float32_predict(model, X, batch=500):
    """Seconds and predicted labels of ``model.to_torch(dtype=torch.float32)``
    on X (batches of ``batch``, as the teacher's forward pass is timed)."""
    import torch

    module = model.to_torch(dtype=torch.float32)
    start = time.perf_counter()
    scores = batched_outputs(module, X, batch)
    seconds = time.perf_counter() - start
    return seconds, model.classes_[scores.argmax(axis=1)]


def _prunable(module):
    import torch

    return [m.weight for m in module.modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def magnitude_pruned(module, keep):
    """A copy of ``module`` keeping its ``keep`` largest conv/linear weights
    (global magnitude pruning; biases and BatchNorm kept) and the masks."""
    import copy

    import torch

    pruned = copy.deepcopy(module).eval()
    weights = _prunable(pruned)
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    keep = int(min(max(keep, 0), magnitudes.numel()))
    threshold = (torch.topk(magnitudes, keep).values.min() if keep
                 else magnitudes.max() + 1)
    masks = []
    with torch.no_grad():
        for w in weights:
            mask = w.abs() >= threshold
            w.mul_(mask)
            masks.append(mask)
    return pruned, masks


def train_classifier(module, X, y, input_shape, *, epochs, lr=1e-3, generator=None,
                     masks=None):
    """Adam on the cross-entropy, batches of 128 in a random order per epoch
    (``generator`` seeds it); with ``masks`` the pruned weights stay zero and
    BatchNorm statistics are frozen (a fine-tune). ``masks``: one per conv and
    linear weight, in module order, or ``{parameter name: mask}``."""
    import torch

    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    images = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).reshape(
        -1, *input_shape)
    labels = torch.from_numpy(np.asarray(y))
    module.train(masks is None)
    if isinstance(masks, dict):
        masked = [(module.get_parameter(name), mask) for name, mask in masks.items()]
    elif masks is not None:
        masked = list(zip(_prunable(module), masks))
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), 128):
            index = order[start:start + 128]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(images[index]), labels[index]).backward()
            optimizer.step()
            if masks is not None:
                with torch.no_grad():
                    for w, mask in masked:
                        w.mul_(mask)
    return module.eval()


def fine_tune(module, masks, X, y, input_shape, epochs=1, lr=1e-3, seed=0):
    """A short fine-tune of a pruned module with its masks kept."""
    import torch

    torch.manual_seed(seed)
    return train_classifier(module, X, y, input_shape, epochs=epochs, lr=lr, masks=masks)


def pruning_baseline(teacher, counts, train, test, input_shape, fine_tune_epochs=1):
    """Test accuracy of the globally magnitude-pruned teacher at each count of
    kept weights, without and with a short fine-tune on ``train``."""
    X_train, y_train = train
    X_test, y_test = test
    total = teacher_weight_count(teacher)
    rows = []
    for keep in counts:
        pruned, masks = magnitude_pruned(teacher, keep)
        accuracy = float(np.mean(teacher_logits(pruned, X_test, input_shape).argmax(1)
                                 == y_test))
        start = time.perf_counter()
        fine_tune(pruned, masks, X_train, y_train, input_shape, epochs=fine_tune_epochs)
        tuned = float(np.mean(teacher_logits(pruned, X_test, input_shape).argmax(1)
                              == y_test))
        row = {"kept": int(keep), "fraction": keep / total, "test_accuracy": accuracy,
               "fine_tuned_accuracy": tuned, "fine_tune_epochs": fine_tune_epochs,
               "fine_tune_seconds": time.perf_counter() - start}
        log(json.dumps(row))
        rows.append(row)
    return rows


def attack_accuracies(predict_logits, X, y, eps_list, *, steps=10, seed=0, batch=250):
    """Accuracy of a differentiable model under l_inf attacks on inputs in
    [0, 1]: uniform noise, FGSM and PGD (``steps`` steps of 2.5 eps / steps from a
    random start), for each eps. ``predict_logits`` maps a float64 tensor of
    flat inputs (n, n_features) to logits."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    labels_all = torch.from_numpy(np.asarray(y))
    result = {"eps": list(eps_list), "noise": [], "fgsm": [], "pgd": []}

    def accuracy(adversary):
        correct = 0
        for start in range(0, X.shape[0], batch):
            u = torch.from_numpy(np.ascontiguousarray(X[start:start + batch],
                                                      dtype=np.float64))
            labels = labels_all[start:start + batch]
            attacked = adversary(u, labels).detach()
            with torch.no_grad():
                logits = predict_logits(attacked)
            correct += int((logits.argmax(1) == labels).sum())
        return correct / X.shape[0]

    def gradient_sign(u, labels):
        u = u.clone().requires_grad_()
        loss = torch.nn.functional.cross_entropy(predict_logits(u), labels)
        (grad,) = torch.autograd.grad(loss, u)
        return grad.sign()

    for eps in eps_list:
        def noise(u, labels, eps=eps):
            step = (torch.rand(u.shape, generator=generator, dtype=u.dtype) * 2 - 1) * eps
            return (u + step).clamp(0, 1)

        def fgsm(u, labels, eps=eps):
            return (u + eps * gradient_sign(u, labels)).clamp(0, 1)

        def pgd(u, labels, eps=eps):
            x = noise(u, labels, eps)
            for _ in range(steps):
                x = x + 2.5 * eps / steps * gradient_sign(x, labels)
                x = torch.min(torch.max(x, u - eps), u + eps).clamp(0, 1)
            return x

        for name, adversary in (("noise", noise), ("fgsm", fgsm), ("pgd", pgd)):
            result[name].append(accuracy(adversary))
        log(f"eps {eps:.4f}: noise {result['noise'][-1]:.3f} fgsm {result['fgsm'][-1]:.3f} "
            f"pgd {result['pgd'][-1]:.3f}")
    return result
