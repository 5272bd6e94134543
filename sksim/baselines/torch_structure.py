"""The block structure of a torch teacher, read off its modules.

One forward pass with hooks on every leaf module gives the modules that run
between consecutive ReLUs (the *segments*). Each segment must be one of the
affine maps of :mod:`sksim.blocks`, with BatchNorm (eval mode) folded into
the preceding convolution or linear layer:

* ``Conv2d [BatchNorm2d]``: a ``conv`` link (groups 1, dilation 1, zero padding);
* ``[Flatten] Linear [BatchNorm1d]``: a ``dense`` link;
* ``AdaptiveAvgPool2d(1) | AvgPool2d over the whole map, Flatten, Linear``: a ``pool`` link.

Dropout and Identity modules are skipped (eval mode). A max-pool is not
affine in the states and is refused (SIM could only approximate it), and so
is any other module. The chain is then checked numerically: each recorded
pre-activation must equal its segment's folded map applied to the previous
block's ReLU output, which catches what hooks cannot see (a functional
``relu``, a skip connection, an operation outside modules).
"""

from typing import NamedTuple

import numpy as np

from ..blocks import INPUT, Link, Structure, check_structure, link_output, per_state

_SKIPPED = ("Dropout", "Dropout1d", "Dropout2d", "Identity")


class NotAChainError(ValueError):
    """The teacher is not a chain of affine maps between its ReLU modules."""


class TeacherMaps(NamedTuple):
    """The teacher as a weight-shared model: its structure and folded weights.

    ``kernels[b]`` and ``biases[b]`` are block ``b``'s kernel (one link: the
    teacher's layer) as a 2-D array (n_out, width) and its bias (n_out,);
    ``head_kernel``/``head_bias`` the same for the outputs.
    """

    structure: Structure
    kernels: list
    biases: list
    head_kernel: np.ndarray
    head_bias: np.ndarray


def _numpy(tensor):
    return tensor.detach().cpu().double().numpy()


def _fold_batch_norm(kernel, bias, norm):
    """Fold an eval-mode BatchNorm into the preceding map (per output channel)."""
    scale = _numpy(norm.weight) / np.sqrt(_numpy(norm.running_var) + norm.eps) \
        if norm.affine else 1.0 / np.sqrt(_numpy(norm.running_var) + norm.eps)
    shift = _numpy(norm.bias) if norm.affine else 0.0
    kernel = kernel * np.reshape(scale, (-1,) + (1,) * (kernel.ndim - 1))
    bias = (bias - _numpy(norm.running_mean)) * scale + shift
    return kernel, bias


_CHAIN_HINT = (" Between consecutive nn.ReLU modules (and after the last one) a "
               "teacher for weight sharing applies one affine layer; an activation "
               "called as a function (torch.relu, F.relu) is invisible to the hooks.")


def _segment_link(torch, segment, source, source_shape, where):
    """(Link, kernel (n_out, width), bias) of the modules ``segment``."""
    try:
        return _parse_segment(torch, segment, source, source_shape, where)
    except ValueError as exc:
        raise NotAChainError(str(exc) + _CHAIN_HINT) from None


def _parse_segment(torch, segment, source, source_shape, where):
    nn = torch.nn
    modules = [m for m in segment if type(m).__name__ not in _SKIPPED]
    names = [type(m).__name__ for m in modules]
    if any(isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool2d))
           for m in modules):
        raise ValueError(
            f"{where}: max-pooling between ReLUs ({names}) is not affine in the "
            "states, so a SIM model cannot represent it exactly; use strided "
            "convolutions or average pooling in the teacher.")
    if not modules:
        raise ValueError(f"{where}: no layer runs between two activations.")
    first = modules[0]
    if isinstance(first, nn.Conv2d):
        conv, rest = first, modules[1:]
        padding = conv.padding
        if (conv.groups != 1 or tuple(conv.dilation) != (1, 1)
                or conv.padding_mode != "zeros" or isinstance(padding, str)
                or conv.kernel_size[0] != conv.kernel_size[1]
                or conv.stride[0] != conv.stride[1] or padding[0] != padding[1]):
            raise ValueError(
                f"{where}: only square Conv2d with groups=1, dilation=1, equal "
                f"strides and numeric zero padding are supported; got {conv!r}.")
        link = Link(source, "conv", conv.kernel_size[0], conv.stride[0], padding[0])
        kernel, bias = _folded(conv, rest, nn.BatchNorm2d, where)
        return link, kernel.reshape(kernel.shape[0], -1), bias
    kind = "dense"
    rest = modules
    if isinstance(rest[0], (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        pool = rest[0]
        whole = (isinstance(pool, nn.AdaptiveAvgPool2d)
                 and tuple(np.broadcast_to(pool.output_size, 2)) == (1, 1))
        if isinstance(pool, nn.AvgPool2d) and len(source_shape) == 3:
            size = np.broadcast_to(pool.kernel_size, 2)
            whole = (tuple(size) == tuple(source_shape[1:]) and pool.padding == 0)
        if not whole or len(source_shape) != 3:
            raise ValueError(f"{where}: only global average pooling (to 1x1) is "
                             f"supported before a Linear layer; got {pool!r}.")
        kind, rest = "pool", rest[1:]
    if rest and isinstance(rest[0], nn.Flatten):
        rest = rest[1:]
    if not rest or not isinstance(rest[0], nn.Linear):
        raise ValueError(f"{where}: unsupported modules {names}; a segment between "
                         "activations must be Conv2d [BatchNorm2d], [Flatten] Linear "
                         "[BatchNorm1d] or global average pooling, Flatten, Linear.")
    kernel, bias = _folded(rest[0], rest[1:], nn.BatchNorm1d, where)
    return Link(source, kind), kernel, bias


def _folded(layer, rest, norm_type, where):
    """Weight and bias of ``layer`` with a following ``norm_type`` folded in;
    nothing else may follow it in the segment."""
    kernel = _numpy(layer.weight)
    bias = _numpy(layer.bias) if layer.bias is not None else np.zeros(kernel.shape[0])
    if rest and isinstance(rest[0], norm_type):
        kernel, bias = _fold_batch_norm(kernel, bias, rest[0])
        rest = rest[1:]
    if rest:
        raise ValueError(f"{where}: unsupported modules after {type(layer).__name__}: "
                         f"{[type(m).__name__ for m in rest]}.")
    return kernel, bias


def trace_teacher(torch, module, inputs, activation_types, rtol=1e-10):
    """TeacherMaps of ``module`` from one forward pass on ``inputs``
    (a tensor of a few samples in the module's input shape); ``rtol`` is the
    tolerance of the numerical chain check, relative to the largest value."""
    calls = []
    leaves = [m for m in module.modules() if not list(m.children())]

    def hook(mod, args, output):
        calls.append((mod, args[0], output))

    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            output = module(inputs)
    finally:
        for handle in handles:
            handle.remove()
    segments, current, pre_activations = [], [], []
    for mod, arg, _ in calls:
        if isinstance(mod, activation_types):
            segments.append(current)
            pre_activations.append(_numpy(arg))
            current = []
        else:
            current.append(mod)
    head_segment = current
    input_shape = tuple(inputs.shape[1:])
    block_shapes = tuple(tuple(z.shape[1:]) for z in pre_activations)
    links, kernels, biases = [], [], []
    source_values = _numpy(inputs).reshape(inputs.shape[0], -1)
    for index, segment in enumerate(segments):
        source = INPUT if index == 0 else index - 1
        source_shape = input_shape if index == 0 else block_shapes[index - 1]
        link, kernel, bias = _segment_link(torch, segment, source, source_shape,
                                           f"block {index}")
        links.append((link,))
        kernels.append(kernel)
        biases.append(bias)
    head_source = len(segments) - 1
    head_link, head_kernel, head_bias = _segment_link(
        torch, head_segment, head_source, block_shapes[head_source], "the output layer")
    n_outputs = head_kernel.shape[0]
    structure = Structure(input_shape, block_shapes, tuple(links), (head_link,), n_outputs)
    try:
        check_structure(structure)
    except ValueError as exc:
        raise NotAChainError(f"the teacher's layers do not chain as a weight-shared "
                             f"model: {exc}") from exc
    maps = TeacherMaps(structure, kernels, biases, head_kernel, head_bias)
    # Numerical check of the chain: recorded = folded map of the previous ReLU.
    for index, pre in enumerate(pre_activations):
        link = structure.links[index][0]
        predicted = link_output(structure, link, kernels[index], source_values) \
            + per_state(biases[index], block_shapes[index])
        _check_close(predicted, pre.reshape(pre.shape[0], -1), f"block {index}", rtol)
        source_values = np.maximum(pre.reshape(pre.shape[0], -1), 0.0)
    predicted = link_output(structure, head_link, head_kernel, source_values) + head_bias
    _check_close(predicted, _numpy(output).reshape(output.shape[0], -1), "the output",
                 rtol)
    return maps


def _check_close(predicted, recorded, where, rtol):
    scale = max(1.0, float(np.abs(recorded).max(initial=0.0)))
    error = float(np.abs(predicted - recorded).max(initial=0.0))
    if error > rtol * scale:
        raise NotAChainError(
            f"{where} of the teacher is not the affine map of the previous activation "
            f"that its modules describe (largest difference {error:.3g}): a functional "
            "activation, a skip connection or an operation outside modules? Only "
            "chains of modules are supported for weight sharing.")
