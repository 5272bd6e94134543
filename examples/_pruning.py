"""One-shot pruning anchors for the SIM comparisons (issue 23, item 3).

Not part of the package: the examples' own implementation of the pruning
methods SIM is compared with, at SIM's exact nonzero counts, on the same
calibration images and without fine-tuning:

* :func:`magnitude`: per-layer magnitude of the BatchNorm-folded weights;
* :func:`magnitude_ls_refit`: the same mask, then every output row refit by
  least squares to the teacher's pre-activations, on the pruned model's own
  inputs to the layer (layer after layer);
* :func:`wanda`: ``|W_ij| * ||X_j||_2`` per output row (Sun et al. 2023);
* :func:`sparsegpt`: Frantar & Alistarh 2023 (OBS updates, column blocks of
  128, adaptive masks within each block, 1 % dampening);
* :func:`l1_filter` (structured, issue 24): whole filters of smallest L1 norm
  out (Li et al. 2017), at a FLOPs count (:func:`l1_filter_at_flops`).

All four work on any torch module whose prunable layers (``nn.Conv2d``,
``nn.Linear``) are each called once: :func:`fold_batchnorm` folds every
BatchNorm that directly follows such a layer, :func:`prunable_layers` lists
the layers in the order the forward pass calls them (torch.fx), and each
layer's inputs and outputs are captured by a forward hook that stops the pass
right after the layer. A layer is pruned once every layer called before it is
pruned, so its statistics come from the partially pruned model (the
"sequential" variant of the SparseGPT and Wanda papers' code).

The nonzero count (:func:`count_nonzero`) is SIM's ``n_nonzero_``: conv and
linear weights, BatchNorm folded, biases excluded. A per-layer allocation is
a dict ``{layer name: kept weights}``, uniform (:func:`uniform_allocation`)
or SIM's own per-layer counts.
"""

import copy
import time

import numpy as np

BATCH = 200  # calibration images per forward pass (memory of the float64 patches)


# ------------------------------------------------------------------ layers
def _prunable_types():
    import torch

    return (torch.nn.Conv2d, torch.nn.Linear)


def _layer_calls(module):
    """``(node, submodule)`` of every call_module node of ``module``'s fx graph."""
    import torch

    graph = torch.fx.symbolic_trace(module).graph
    return [(node, module.get_submodule(node.target)) for node in graph.nodes
            if node.op == "call_module"]


def prunable_layers(module):
    """Names of the conv and linear layers of ``module``, in call order.

    Parameters
    ----------
    module : torch.nn.Module
        A module torch.fx can trace.

    Returns
    -------
    list of str
        Qualified submodule names, in the order the forward pass calls them
        (a topological order of the computation, which is what sequential
        pruning needs; ``module.modules()`` order need not be).
    """
    names = [node.target for node, layer in _layer_calls(module)
             if isinstance(layer, _prunable_types())]
    if len(set(names)) != len(names):
        raise ValueError("a conv or linear layer is called twice: its inputs are not "
                         "one layer's calibration data")
    return names


def fold_batchnorm(module):
    """A copy of ``module`` with each BatchNorm after a conv/linear layer folded.

    Parameters
    ----------
    module : torch.nn.Module
        Traceable by torch.fx; read in eval mode (running statistics).

    Returns
    -------
    torch.nn.Module
        A deep copy in eval mode in which every ``BatchNorm1d``/``2d`` whose
        input is a conv or linear layer used by nothing else is folded into
        that layer (weights scaled per output channel, a bias added) and
        replaced by ``nn.Identity``. Its eval-mode outputs equal the
        original's up to rounding.
    """
    import torch

    folded = copy.deepcopy(module).eval()
    for node, norm in _layer_calls(folded):
        if not isinstance(norm, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            continue
        source = node.args[0]
        if (getattr(source, "op", None) != "call_module" or len(source.users) != 1
                or not isinstance(folded.get_submodule(source.target), _prunable_types())):
            raise ValueError(f"BatchNorm {node.target!r} does not directly follow a conv "
                             "or linear layer used only by it: it cannot be folded")
        _fold_into(folded.get_submodule(source.target), norm)
        folded.set_submodule(node.target, torch.nn.Identity())
    return folded


def _fold_into(layer, norm):
    """Fold eval-mode BatchNorm ``norm`` into ``layer`` (in place)."""
    import torch

    if norm.running_mean is None:
        raise ValueError("a BatchNorm without running statistics cannot be folded")
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var.double() + norm.eps)
        shift = -norm.running_mean.double() * scale
        if norm.affine:
            scale = scale * norm.weight.double()
            shift = shift * norm.weight.double() + norm.bias.double()
        weight = layer.weight.double()
        bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        layer.weight.copy_(weight * scale.reshape(shape))
        layer.bias = torch.nn.Parameter((bias * scale + shift).to(layer.weight.dtype))


def count_nonzero(module):
    """Nonzero conv and linear weights (SIM's ``n_nonzero_``: biases excluded).

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    int
    """
    return int(sum(int((m.weight != 0).sum()) for m in module.modules()
                   if isinstance(m, _prunable_types())))


# -------------------------------------------------------------- allocation
def uniform_allocation(module, total):
    """Every layer keeps the same fraction of its weights, ``total`` in all.

    Parameters
    ----------
    module : torch.nn.Module
    total : int
        Kept weights over all prunable layers.

    Returns
    -------
    dict
        ``{layer name: kept weights}`` summing exactly to ``total``: the
        proportional shares rounded down, the remainder given one each to
        the layers of the largest fractional parts (largest remainders).
    """
    names = prunable_layers(module)
    sizes = np.array([module.get_submodule(n).weight.numel() for n in names])
    if not 0 <= total <= sizes.sum():
        raise ValueError(f"total {total} outside [0, {sizes.sum()}]")
    shares = total * sizes / sizes.sum()
    counts = np.floor(shares).astype(int)
    order = np.argsort(-(shares - counts), kind="stable")
    counts[order[:total - counts.sum()]] += 1
    return dict(zip(names, counts.tolist()))


def sim_allocation(fit, module, input_shape):
    """SIM's own per-layer counts, from a fit record of ``cifar100.py``.

    Parameters
    ----------
    fit : dict
        One entry of a results JSON's ``fits``: ``nonzero`` (SIM's
        ``n_nonzero_``) and ``kernel_nonzeros_per_link`` (nonzero kernel
        entries of each link of each state block, the teacher's own layer
        first), or, from a chain teacher's older records,
        ``kernel_nonzeros_per_block``.
    module : torch.nn.Module
        The teacher (BatchNorm folded or not).
    input_shape : tuple
        Per-sample input shape, for reading the teacher's graph.

    Returns
    -------
    allocation : dict
        ``{layer name: kept weights}``: the count of block ``b``'s first link
        for the layer feeding block ``b`` (the layers in call order), the
        rest of the count outside the state blocks for the last layer (SIM's
        output head).
    extra : int
        Nonzeros of SIM's other links (a ResNet's shortcuts, which SIM fits
        as kernels and the teacher computes without weights): the anchors
        get the allocation only, so both spend the same count on the
        teacher's layers.
    """
    import torch

    from sksim.baselines.torch_graph import read_shaped, shaped_graph

    maps, _ = read_shaped(torch, shaped_graph(torch, module, torch.zeros(2, *input_shape)),
                          input_shape)
    names = prunable_layers(module)
    links = fit.get("kernel_nonzeros_per_link")
    if links is None:
        if any(len(block) != 1 for block in maps.structure.links):
            raise ValueError("a block of the teacher's graph has several links (shortcuts) "
                             "and the fit record has no kernel_nonzeros_per_link")
        links = [[count] for count in fit["kernel_nonzeros_per_block"]]
    if len(links) != len(names) - 1 or len(maps.head_kernels) != 1:
        raise ValueError(f"{len(links)} SIM blocks and {len(maps.head_kernels)} head links "
                         f"for {len(names)} layers")
    for name, kernels in zip(names, maps.kernels):
        if kernels[0].size != module.get_submodule(name).weight.numel():
            raise ValueError(f"block of layer {name!r}: its first link is not the layer")
    in_blocks = int(sum(sum(block) for block in links))
    counts = [block[0] for block in links] + [int(fit["nonzero"]) - in_blocks]
    allocation = dict(zip(names, (int(c) for c in counts)))
    check_allocation(module, allocation)
    return allocation, in_blocks - int(sum(block[0] for block in links))


def check_allocation(module, allocation):
    """Raise unless ``allocation`` names each prunable layer once with a count
    between 0 and its number of weights."""
    names = prunable_layers(module)
    if sorted(allocation) != sorted(names):
        raise ValueError(f"the allocation names {sorted(allocation)}, the layers are {names}")
    for name in names:
        size = module.get_submodule(name).weight.numel()
        if not 0 <= allocation[name] <= size:
            raise ValueError(f"layer {name!r}: {allocation[name]} kept of {size} weights")


# ----------------------------------------------------------------- capture
class _Stop(Exception):
    """Raised by a capture hook: the rest of the forward pass is not needed."""


def capture(module, name, images):
    """The input and output of layer ``name`` when ``module`` runs on ``images``.

    Parameters
    ----------
    module : torch.nn.Module
    name : str
        Qualified name of a submodule called once per forward pass.
    images : torch.Tensor
        A batch of inputs.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        The layer's input and output, detached copies (an in-place
        operation later cannot change them: the pass stops at the layer).
    """
    import torch

    seen = {}

    def hook(layer, inputs, output):
        seen["io"] = (inputs[0].detach().clone(), output.detach().clone())
        raise _Stop

    handle = module.get_submodule(name).register_forward_hook(hook)
    try:
        with torch.no_grad():
            module(images)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "io" not in seen:
        raise ValueError(f"layer {name!r} was not called")
    return seen["io"]


def design(layer, inputs):
    """The layer's inputs as rows of a linear map, float64.

    Parameters
    ----------
    layer : torch.nn.Conv2d or torch.nn.Linear
    inputs : torch.Tensor
        The layer's input batch.

    Returns
    -------
    torch.Tensor of shape (n_rows, n_columns)
        For a convolution one row per image and output position, the im2col
        patch (``unfold``: in_channels x kh x kw in the order of
        ``weight.flatten(1)``); for a linear layer the input rows. Then
        ``design @ weight.flatten(1).T + bias`` is the layer's output.
    """
    import torch

    x = inputs.double()
    if isinstance(layer, torch.nn.Conv2d):
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding,
                                                                           str):
            raise ValueError("only groups=1 convolutions with numeric zero padding")
        patches = torch.nn.functional.unfold(x, layer.kernel_size, dilation=layer.dilation,
                                             padding=layer.padding, stride=layer.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return x.reshape(-1, layer.in_features)


def output_rows(layer, outputs):
    """The layer's outputs as (n_rows, out_features) float64, rows matching
    :func:`design` (a conv's channels last)."""
    import torch

    y = outputs.double()
    if isinstance(layer, torch.nn.Conv2d):
        return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    return y.reshape(-1, layer.out_features)


def _batches(images, batch=BATCH):
    for start in range(0, images.shape[0], batch):
        yield images[start:start + batch]


def layer_statistics(model, name, images, *, teacher=None, intercept=False,
                     squares_only=False):
    """Second moments of layer ``name``'s inputs in ``model`` over ``images``.

    Parameters
    ----------
    model : torch.nn.Module
        The (partially pruned) model whose inputs to the layer are the design.
    name : str
    images : torch.Tensor
        Calibration inputs, run in batches of ``BATCH``.
    teacher : torch.nn.Module, default=None
        When given, its outputs of the same layer are the targets ``T`` and
        ``X^T T`` is accumulated too.
    intercept : bool, default=False
        Append a column of ones to the design (a refit bias).
    squares_only : bool, default=False
        Only the squared column norms (``diag(X^T X)``), as Wanda needs.

    Returns
    -------
    dict
        ``gram`` (X^T X, or its diagonal), ``cross`` (X^T T, with a teacher),
        ``rows`` (design rows seen); all float64, summed over the batches.
    """
    import torch

    layer = model.get_submodule(name)
    stats = {"gram": 0.0, "cross": None, "rows": 0}
    for batch in _batches(images):
        X = design(layer, capture(model, name, batch)[0])
        if intercept:
            X = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)
        stats["gram"] = stats["gram"] + ((X * X).sum(0) if squares_only else X.T @ X)
        stats["rows"] += X.shape[0]
        if teacher is not None:
            T = output_rows(layer, capture(teacher, name, batch)[1])
            stats["cross"] = X.T @ T if stats["cross"] is None else stats["cross"] + X.T @ T
    return stats


# ---------------------------------------------------------------- methods
def magnitude_mask(weight, keep):
    """Boolean mask of the ``keep`` largest ``|weight|`` entries (exactly
    ``keep``: ties broken by ``torch.topk``)."""
    import torch

    flat = weight.detach().abs().flatten()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.topk(flat, int(keep)).indices] = True
    return mask.reshape(weight.shape)


def row_counts(total, n_rows, scores=None):
    """Kept entries per row: ``total // n_rows`` each, the remainder one more
    in the rows whose next-best score (``scores[r]``) is largest (the first
    rows when no scores are given)."""
    counts = np.full(n_rows, total // n_rows)
    extra = total - counts.sum()
    order = np.arange(n_rows) if scores is None else np.argsort(-np.asarray(scores),
                                                                 kind="stable")
    counts[order[:extra]] += 1
    return counts


def _prune_sequentially(teacher, allocation, images, prune_layer):
    """Fold the teacher's BatchNorm, then prune its layers in call order with
    ``prune_layer(model, teacher, name, keep, images)`` (which edits
    ``model.<name>`` in place); returns the pruned model."""
    teacher = fold_batchnorm(teacher)
    check_allocation(teacher, allocation)
    model = copy.deepcopy(teacher)
    for name in prunable_layers(teacher):
        prune_layer(model, teacher, name, allocation[name], images)
    return model


def magnitude(teacher, allocation, images=None):
    """Per-layer magnitude pruning of the BatchNorm-folded teacher.

    Parameters
    ----------
    teacher : torch.nn.Module
    allocation : dict
        ``{layer name: kept weights}``.
    images : ignored
        For the same call as the other methods (no calibration data used).

    Returns
    -------
    torch.nn.Module
        The folded teacher keeping, in each layer, its largest weights.
    """
    import torch

    def prune(model, teacher, name, keep, images):
        layer = model.get_submodule(name)
        with torch.no_grad():
            layer.weight.mul_(magnitude_mask(layer.weight, keep))

    return _prune_sequentially(teacher, allocation, images, prune)


def solve_rows(gram, cross, mask, intercept, weight):
    """Least-squares rows on their kept columns, from the normal equations.

    Parameters
    ----------
    gram : torch.Tensor of shape (d, d) or (d + 1, d + 1)
        ``X^T X`` (with the ones column last when ``intercept``).
    cross : torch.Tensor of shape (d [+ 1], n_out)
        ``X^T T``.
    mask : torch.Tensor of shape (n_out, d), bool
        Kept columns of each row.
    intercept : bool
        The last column is the bias (always kept).
    weight : torch.Tensor of shape (n_out, d)
        The teacher's weights: a kept column that is zero on all the
        calibration data (``X^T X`` diagonal zero: a dead channel) is not
        determined by the data, and keeps the teacher's value, so the count
        of nonzeros stays the allocated one.

    Returns
    -------
    (torch.Tensor, torch.Tensor or None)
        Weights (n_out, d), zero outside the mask, and the bias (n_out,).
        A singular system (collinear kept columns) gets a ridge of
        ``1e-10 * mean(diag)`` added.
    """
    import torch

    n_out, d = mask.shape
    live = gram.diagonal()[:d] > 0
    weight = torch.where(mask & ~live, weight.double(), 0.0)
    bias = torch.zeros(n_out, dtype=gram.dtype) if intercept else None
    bias_column = torch.tensor([d]) if intercept else torch.tensor([], dtype=torch.long)
    for row in range(n_out):
        columns = torch.cat([torch.nonzero(mask[row] & live).flatten(), bias_column])
        if columns.numel() == 0:
            continue
        A = gram[columns][:, columns]
        b = cross[columns, row]
        factor, info = torch.linalg.cholesky_ex(A)
        if info != 0:
            ridge = 1e-10 * max(float(A.diagonal().mean()), 1e-300)
            factor = torch.linalg.cholesky(A + ridge * torch.eye(len(columns), dtype=A.dtype))
        solution = torch.cholesky_solve(b[:, None], factor)[:, 0]
        kept = columns.numel() - int(intercept)
        weight[row, columns[:kept]] = solution[:kept]
        if intercept:
            bias[row] = solution[-1]
    return weight, bias


def magnitude_ls_refit(teacher, allocation, images):
    """Magnitude mask, then a least-squares refit of each row, layer by layer.

    Parameters
    ----------
    teacher : torch.nn.Module
    allocation : dict
        ``{layer name: kept weights}``.
    images : torch.Tensor
        Calibration inputs (batch first).

    Returns
    -------
    torch.nn.Module
        The folded teacher where, in call order, each layer keeps its largest
        folded weights and every output row (a conv's output channel, over
        in_channels x kh x kw taps) and its bias are refit by least squares:
        design = the pruned model's inputs to the layer (earlier layers
        already pruned and refit), targets = the folded teacher's own
        outputs of the layer (its pre-activations on its own inputs).
    """
    import torch

    def prune(model, teacher, name, keep, images):
        layer = model.get_submodule(name)
        mask = magnitude_mask(layer.weight, keep).flatten(1)
        intercept = layer.bias is not None
        stats = layer_statistics(model, name, images, teacher=teacher, intercept=intercept)
        weight, bias = solve_rows(stats["gram"], stats["cross"], mask, intercept,
                                  layer.weight.detach().flatten(1))
        with torch.no_grad():
            layer.weight.copy_(weight.reshape(layer.weight.shape))
            if intercept:
                layer.bias.copy_(bias)

    return _prune_sequentially(teacher, allocation, images, prune)


def wanda(teacher, allocation, images):
    """Wanda (Sun et al. 2023): ``|W_ij| ||X_j||_2``, top entries per row.

    Parameters
    ----------
    teacher : torch.nn.Module
    allocation : dict
        ``{layer name: kept weights}``.
    images : torch.Tensor
        Calibration inputs.

    Returns
    -------
    torch.nn.Module
        The folded teacher where each layer keeps, in every output row, the
        entries of the largest score, ``|W_ij|`` times the l2 norm of input
        column ``j`` (a conv's im2col column) on the pruned model's inputs;
        no weight update. A layer's count not divisible by its rows gives the
        remainder to the rows of the largest next score (see
        :func:`row_counts`).
    """
    import torch

    def prune(model, teacher, name, keep, images):
        layer = model.get_submodule(name)
        weight = layer.weight.detach().flatten(1).double()
        norms = layer_statistics(model, name, images, squares_only=True)["gram"].sqrt()
        score = weight.abs() * norms[None, :]
        ranked = score.sort(dim=1, descending=True).values
        base = keep // weight.shape[0]
        following = ranked[:, base] if base < weight.shape[1] else torch.zeros(len(ranked))
        counts = row_counts(keep, weight.shape[0], following.numpy())
        mask = torch.zeros_like(weight, dtype=torch.bool)
        for row, k in enumerate(counts):
            mask[row, torch.topk(score[row], int(k)).indices] = True
        with torch.no_grad():
            layer.weight.mul_(mask.reshape(layer.weight.shape))

    return _prune_sequentially(teacher, allocation, images, prune)


def sparsegpt_weights(weight, gram, keep, *, block=128, damp=0.01):
    """SparseGPT's pruning of one layer's weights (Frantar & Alistarh 2023).

    Parameters
    ----------
    weight : torch.Tensor of shape (n_out, d)
    gram : torch.Tensor of shape (d, d)
        ``H = X^T X`` of the layer's inputs (the scale does not matter: the
        dampening is relative).
    keep : int
        Kept entries of ``weight``, exactly.
    block : int, default=128
        Columns per block: the mask of a block is chosen just before the
        block is processed, from the weights as updated so far.
    damp : float, default=0.01
        ``damp * mean(diag H)`` added to the diagonal.

    Returns
    -------
    torch.Tensor of shape (n_out, d), float64
        The pruned and updated weights. Column by column, a pruned weight's
        error ``(w - 0) / [U]_jj`` (U the upper Cholesky factor of H^-1) is
        propagated onto the columns not yet processed (the OBS update),
        within the block at once and to the later blocks in one product. The
        score of an entry is ``w^2 / [U]_jj^2``; each block prunes its share
        of the layer's pruned entries (proportional to its width, shares
        rounded so that they sum exactly). Columns that are always zero on
        the calibration data (``H_jj = 0``) get ``H_jj = 1`` and score zero:
        pruning them costs nothing there. Nothing pruned means no update: the
        weights come back unchanged.
    """
    import torch

    W = weight.detach().double().clone()
    H = gram.double().clone()
    d = W.shape[1]
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    H += damp * H.diagonal().mean() * torch.eye(d, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    prune_total = W.numel() - int(keep)
    edges = np.round(prune_total * np.minimum(np.arange(0, d + block, block), d) / d)
    for index, start in enumerate(range(0, d, block)):
        stop = min(start + block, d)
        W1, U1 = W[:, start:stop].clone(), U[start:stop, start:stop]
        errors = torch.zeros_like(W1)
        score = W1 ** 2 / U1.diagonal()[None, :] ** 2
        score[:, dead[start:stop]] = 0.0
        n_prune = int(edges[index + 1] - edges[index])
        pruned = torch.zeros_like(W1, dtype=torch.bool).flatten()
        pruned[torch.topk(score.flatten(), n_prune, largest=False).indices] = True
        pruned = pruned.reshape(W1.shape)
        for j in range(stop - start):
            w = W1[:, j]
            q = torch.where(pruned[:, j], torch.zeros_like(w), w)
            error = (w - q) / U1[j, j]
            W1[:, j:] -= error[:, None] * U1[j, j:][None, :]
            W1[:, j] = q
            errors[:, j] = error
        W[:, start:stop] = W1
        W[:, stop:] -= errors @ U[start:stop, stop:]
    return W


def sparsegpt(teacher, allocation, images, *, block=128, damp=0.01):
    """SparseGPT on every layer in call order (Hessians from the pruned model).

    Parameters
    ----------
    teacher : torch.nn.Module
    allocation : dict
        ``{layer name: kept weights}``.
    images : torch.Tensor
        Calibration inputs.
    block, damp : see :func:`sparsegpt_weights`.

    Returns
    -------
    torch.nn.Module
        The folded teacher, each layer pruned by :func:`sparsegpt_weights`
        with ``H = X^T X`` of its inputs in the model whose earlier layers
        are already pruned; biases unchanged.
    """
    import torch

    def prune(model, teacher, name, keep, images):
        layer = model.get_submodule(name)
        gram = layer_statistics(model, name, images)["gram"]
        weight = sparsegpt_weights(layer.weight.flatten(1), gram, keep, block=block,
                                   damp=damp)
        with torch.no_grad():
            layer.weight.copy_(weight.reshape(layer.weight.shape))

    return _prune_sequentially(teacher, allocation, images, prune)


METHODS = {"magnitude": magnitude, "magnitude_ls_refit": magnitude_ls_refit,
           "wanda": wanda, "sparsegpt": sparsegpt}


# ----------------------------------------------------------- whole filters
# layers a pruned filter's zero map passes through unchanged (channel by channel)
_CHANNELWISE = ("BatchNorm1d", "BatchNorm2d", "ReLU", "Identity", "MaxPool2d", "AvgPool2d",
                "AdaptiveAvgPool2d", "Flatten")
_CHANNELWISE_CALLS = ("relu", "flatten", "adaptive_avg_pool2d", "max_pool2d", "avg_pool2d")


def filter_prunable(module):
    """``{conv: reader}``: the conv layers whose filters can go, each with the
    one conv or linear layer that reads its output.

    A filter can go when its output map reaches a single layer through
    channel-wise operations only (BatchNorm, ReLU, pooling, flatten): not a
    map added to a shortcut or read twice. On a ResNet these are the first
    convolutions of the residual blocks, the layers Li et al. (2017) prune.
    """
    import torch

    graph = torch.fx.symbolic_trace(module).graph
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(module.get_submodule(node.target),
                                                      torch.nn.Conv2d):
            continue
        current = node
        while len(current.users) == 1:
            (user,) = current.users
            if user.op == "call_module":
                layer = module.get_submodule(user.target)
                if isinstance(layer, _prunable_types()):
                    pairs[node.target] = user.target
                    break
                if type(layer).__name__ not in _CHANNELWISE:
                    break
            elif getattr(user.target, "__name__", user.target) not in _CHANNELWISE_CALLS:
                break
            current = user
    return pairs


def l1_filter(teacher, fraction):
    """L1-norm filter pruning (Li et al. 2017), without fine-tune.

    Parameters
    ----------
    teacher : torch.nn.Module
    fraction : float
        Share of the filters each :func:`filter_prunable` layer loses: the
        ``round(fraction * n_filters)`` of smallest L1 norm of the teacher's
        kernels (the paper's criterion, BatchNorm not folded in).

    Returns
    -------
    pruned : torch.nn.Module
        The BatchNorm-folded teacher with each pruned filter's weights and
        folded bias zeroed (its map is 0 after the ReLU, the channel removed)
        and the reader's kernel entries on that channel zeroed (they read
        zeros).
    masks : dict
        ``{parameter name: bool mask}`` of the zeroed entries' complement,
        for a fine-tune that keeps them zero.
    """
    import torch

    pruned = fold_batchnorm(teacher)
    masks = {}

    def mask_of(name):
        parameter = pruned.get_parameter(name)
        return masks.setdefault(name, torch.ones_like(parameter, dtype=torch.bool))

    for conv_name, reader_name in filter_prunable(pruned).items():
        norms = teacher.get_submodule(conv_name).weight.detach().abs().flatten(1).sum(1)
        dropped = torch.argsort(norms, stable=True)[:int(round(fraction * len(norms)))]
        mask_of(f"{conv_name}.weight")[dropped] = False
        if pruned.get_submodule(conv_name).bias is not None:
            mask_of(f"{conv_name}.bias")[dropped] = False
        reader = mask_of(f"{reader_name}.weight")
        # a linear reader of a flattened map reads each channel's positions together
        reader.view(reader.shape[0], len(norms), -1)[:, dropped] = False
    with torch.no_grad():
        for name, mask in masks.items():
            pruned.get_parameter(name).mul_(mask)
    return pruned, masks


def structured_flops(module, input_shape):
    """Multiply-adds per sample of ``module``'s conv and linear layers with
    the output channels whose weights are all zero and the input channels no
    weight reads left out (what a network rebuilt without them computes; the
    dense count for a dense module, as ``sksim.plain_export.count_flops``)."""
    import torch

    total = []

    def hook(layer, inputs, output):
        weight = layer.weight.detach()
        flat = weight.flatten(2) if weight.dim() > 2 else weight[:, :, None]
        n_out = int((flat != 0).any(dim=(1, 2)).sum())
        n_in = int((flat != 0).any(dim=(0, 2)).sum())
        positions = output[0, 0].numel() if output.dim() > 2 else 1
        total.append(n_out * n_in * flat.shape[2] * positions)

    handles = [layer.register_forward_hook(hook) for layer in module.modules()
               if isinstance(layer, _prunable_types())]
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return int(sum(total))


def l1_filter_at_flops(teacher, flops, input_shape):
    """:func:`l1_filter` at the fraction whose :func:`structured_flops` is the
    largest not above ``flops`` (bisection over the fraction; the counts are
    steps). Returns ``(pruned, masks, fraction)``."""
    low, high = 0.0, 1.0
    for _ in range(30):
        middle = 0.5 * (low + high)
        if structured_flops(l1_filter(teacher, middle)[0], input_shape) <= flops:
            high = middle
        else:
            low = middle
    pruned, masks = l1_filter(teacher, high)
    return pruned, masks, high


# ------------------------------------------------------------- measuring
def accuracy(module, images, labels, batch=500):
    """Test accuracy of ``module`` (eval mode, no gradients) on a tensor of
    images and an array of labels."""
    import torch

    module.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            logits = module(images[start:start + batch])
            correct += int((logits.argmax(1).numpy() == labels[start:start + batch]).sum())
    return correct / images.shape[0]


def timed(method, teacher, allocation, images):
    """``(pruned module, wall seconds)`` of one method (folding included)."""
    start = time.perf_counter()
    pruned = method(teacher, allocation, images)
    return pruned, time.perf_counter() - start
