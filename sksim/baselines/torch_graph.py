"""A torch teacher read as a graph of state blocks and links (torch.fx).

``torch.fx.symbolic_trace`` gives the teacher's computation as nodes (module
calls, function calls, method calls). Every *activation* node is a state
block; its input must be a sum of affine *links* of earlier blocks'
activations or of the network input, which this module works out by
interpreting each node on symbolic values:

* a :class:`_Source` is the input or a block's activation output, possibly
  through parameter-free pooling stages (average or max pooling) and
  flattening;
* an :class:`_Affine` is a sum of terms, each a linear map of one source
  (a convolution, a dense map, global average pooling then a dense map),
  plus a bias.

Convolutions and linear layers turn a source into an affine value;
BatchNorm (eval mode) folds into one; additions add them (a source added
directly is an identity shortcut, a 1x1 convolution with an identity
kernel); strided subsampling ``x[:, :, ::s, ::s]`` and zero channel padding
(``F.pad``) compose with each term, which gives the parameter-free "option
A" shortcut of the CIFAR ResNets. Anything else is refused, naming the node.

The result is the teacher as a weight-shared model (:class:`TeacherMaps`),
checked numerically: each recorded pre-activation equals the structure's own
evaluation of its links on the recorded activations of their sources.
:func:`recording_module` gives the graph that returns the outputs and every
block's pre-activation in one forward pass (activations made out-of-place,
so an in-place ReLU cannot overwrite what is recorded).
"""

import operator
import traceback
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from ..blocks import (
    INPUT,
    RELU,
    Activation,
    Link,
    Pool,
    Structure,
    activate_tensor,
    check_structure,
    link_output,
    per_state,
    pooled_shape,
)


class GraphError(ValueError):
    """The teacher's graph is not a weight-shared SIM model (the message names
    the node and what is supported). ``fatal`` is True when the refusal
    holds for a flat fit too (an unsupported activation, inputs of the wrong
    shape), so no flat model is fitted in its place."""

    def __init__(self, message, fatal=False):
        super().__init__(message)
        self.fatal = fatal


def SUPPORTED_ACTIVATION_MODULES(torch):  # noqa: N802 - a constant that needs torch
    """The activation module types a teacher may use."""
    nn = torch.nn
    return (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Hardtanh)


class TeacherMaps(NamedTuple):
    """The teacher as a weight-shared model: its structure and folded weights.

    ``kernels[b][l]`` is the kernel of link ``l`` of block ``b`` as a 2-D
    array (n_out, width), ``biases[b]`` block ``b``'s bias (per channel);
    ``head_kernels`` / ``head_bias`` the same for the outputs.
    """

    structure: Structure
    kernels: list
    biases: list
    head_kernels: list
    head_bias: np.ndarray


SUPPORTED = """\
Supported in a teacher's forward (eval mode):

* layers: ``nn.Conv2d`` (groups 1, dilation 1, zero padding, square kernel
  and stride; also ``F.conv2d``), ``nn.Linear`` (also ``F.linear``),
  ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` after a layer (folded into it);
* activations, as modules or functions, in place or not: ReLU
  (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu``), LeakyReLU
  (slope in [0, 1]), ReLU6, Hardtanh;
* pooling after an activation: ``nn.AvgPool2d`` / ``F.avg_pool2d`` (any
  size, stride and padding, ``count_include_pad=True``), ``nn.MaxPool2d`` /
  ``F.max_pool2d`` (dilation 1), ``nn.AdaptiveAvgPool2d`` /
  ``F.adaptive_avg_pool2d`` (output size dividing the input), ``x.mean((2, 3))``;
* shapes: ``nn.Flatten``, ``torch.flatten``, ``x.view`` / ``x.reshape`` to
  (batch, -1), ``x.size()``;
* shortcuts: ``+`` / ``torch.add`` / in-place adds of layers' outputs and
  activations (identity shortcuts), 1x1 convolution (+ BatchNorm)
  projections, ``x[:, :, ::s, ::s]`` and ``F.pad`` of the channels with zeros
  (option A);
* ``nn.Dropout*``, ``nn.Identity``, ``Tensor.contiguous`` (no-ops in eval mode).
"""

_NOT_MONOTONE = {"GELU", "SiLU", "Mish", "Hardswish", "ELU", "SELU", "CELU", "Softplus"}


@dataclass
class _Source:
    """The input (``block == INPUT``) or block ``block``'s activation output
    (of per-sample shape ``base``), through ``pools``; ``flat`` once
    flattened."""

    block: int
    base: tuple
    pools: tuple = ()
    flat: bool = False

    @property
    def shape(self):
        return pooled_shape(self.base, self.pools) if self.pools else self.base


@dataclass
class _Term:
    """A linear map of one source: ``kind`` conv / dense / pool (global
    average pooling then dense), ``kernel`` (n_out, c_in, k, k) for conv,
    (n_out, width) otherwise."""

    source: _Source
    kind: str
    kernel: np.ndarray
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0

    def link(self):
        return Link(self.source.block, self.kind, self.kernel_size, self.stride,
                    self.padding, self.source.pools)


@dataclass
class _Affine:
    """``sum of terms + bias``: ``shape`` per sample, ``bias`` per channel
    (spatial) or per unit (flat)."""

    terms: list
    bias: np.ndarray
    shape: tuple
    flat: bool = field(default=False)


def _numpy(tensor):
    return tensor.detach().cpu().double().numpy()


def _shape(node):
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise GraphError(f"node {node.name!r} ({node.op} {_target_name(node)}) does not "
                         "produce a single tensor.")
    return tuple(int(v) for v in meta.shape[1:])


def _target_name(node):
    target = node.target
    return getattr(target, "__name__", str(target))


def _identity_term(source):
    if len(source.shape) == 3 and not source.flat:
        channels = source.shape[0]
        return _Term(source, "conv", np.eye(channels).reshape(channels, channels, 1, 1))
    width = int(np.prod(source.shape))
    return _Term(source, "dense", np.eye(width))


def _as_affine(value, shape):
    if isinstance(value, _Affine):
        return value
    term = _identity_term(value)
    return _Affine([term], np.zeros(term.kernel.shape[0]), shape, value.flat)


# --------------------------------------------------------------------- activations
def module_activation(torch, module):
    """The Activation of an activation module, None if ``module`` is not one."""
    nn = torch.nn
    if isinstance(module, nn.ReLU6):
        return Activation(0.0, 0.0, 6.0)
    if isinstance(module, nn.ReLU):
        return RELU
    if isinstance(module, nn.LeakyReLU):
        return _leaky(module.negative_slope, repr(module))
    if isinstance(module, nn.Hardtanh):
        low = float(module.min_val)
        return Activation(0.0 if low >= 0 else 1.0, low, float(module.max_val))
    return None


def _leaky(slope, where):
    if not 0.0 <= slope <= 1.0:
        raise GraphError(f"{where}: a negative slope outside [0, 1] makes the activation "
                         "non-monotone or expansive; SIM's well-posedness needs a "
                         "monotone 1-Lipschitz activation.", fatal=True)
    return Activation(float(slope), -np.inf, np.inf)


def _argument(node, index, name, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _function_activation(torch, node):
    """The Activation of a call_function / call_method activation node, None
    for any other node."""
    if node.op == "call_function" and node.target not in _activation_callables(torch):
        return None
    name = _target_name(node)
    if name in ("relu", "relu_"):
        return RELU
    if name == "relu6":
        return Activation(0.0, 0.0, 6.0)
    if name.startswith("leaky_relu"):
        return _leaky(float(_argument(node, 1, "negative_slope", 0.01)), node.name)
    if name.startswith("hardtanh"):
        low = float(_argument(node, 1, "min_val", -1.0))
        # clipped at a nonnegative low, the slope below zero never shows
        return Activation(0.0 if low >= 0 else 1.0, low,
                          float(_argument(node, 2, "max_val", 1.0)))
    return None


def _is_inplace(node, module=None):
    if module is not None:
        return bool(getattr(module, "inplace", False))
    if node.op in ("call_function", "call_method"):
        name = _target_name(node)
        return name.endswith("_") or name == "iadd" \
            or bool(node.kwargs.get("inplace", False))
    return False


# --------------------------------------------------------------------- the reader
class _Reader:
    """Interprets the traced graph node by node (see the module docstring)."""

    def __init__(self, torch, graph_module):
        self.torch = torch
        self.graph_module = graph_module
        self.values = {}
        self.block_shapes, self.block_terms, self.biases = [], [], []
        self.activations, self.pre_nodes = [], []
        self.head = None

    # -- dispatch
    def read(self):
        for node in self.graph_module.graph.nodes:
            self.values[node] = self._node(node)
        if self.head is None:
            raise GraphError("the teacher has no output")
        return self

    def _node(self, node):
        if node.op == "placeholder":
            if any(v for v in self.values.values() if isinstance(v, _Source)
                   and v.block == INPUT):
                raise GraphError(f"the teacher's forward takes a second input "
                                 f"({node.name!r}); only one input tensor is supported.")
            return _Source(INPUT, _shape(node))
        if node.op == "get_attr":
            return self._get_attr(node)
        if node.op == "output":
            return self._output(node)
        if node.op == "call_module":
            return self._module(node, self.graph_module.get_submodule(node.target))
        return self._function(node)

    def _resolve(self, value):
        """A node's symbolic value; anything else as it is."""
        return self.values[value] if hasattr(value, "op") else value

    def _argument(self, node, index, name, default):
        return self._resolve(_argument(node, index, name, default))

    def _arg(self, node, index=0):
        return self._resolve(node.args[index])

    def _refuse(self, node, why, fatal=False):
        raise GraphError(f"node {node.name!r} ({node.op} {_describe(node, self)}): {why} "
                         "See sksim.baselines.torch_graph.SUPPORTED for what a teacher "
                         "may contain.", fatal=fatal)

    def _get_attr(self, node):
        value = self.graph_module
        for part in node.target.split("."):
            value = getattr(value, part)
        return value

    def _output(self, node):
        value = self._arg(node)
        if isinstance(value, (tuple, list)):
            self._refuse(node, "the teacher returns several values; it must return one "
                               "tensor of outputs.")
        if not isinstance(value, _Affine) or len(value.shape) != 1:
            self._refuse(node, "the output must be an affine map (a Linear layer) of "
                               "the last activations.")
        self.head = value
        return value

    # -- modules
    def _module(self, node, module):
        nn = self.torch.nn
        name = type(module).__name__
        if isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)):
            return self._arg(node)
        if isinstance(module, nn.Conv2d):
            return self._conv(node, self._arg(node), module.weight, module.bias,
                              module.stride, module.padding, module.dilation,
                              module.groups, module.padding_mode)
        if isinstance(module, nn.Linear):
            return self._linear(node, self._arg(node), module.weight, module.bias)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return self._batch_norm(node, self._arg(node), module)
        if isinstance(module, nn.Flatten):
            return self._flatten(node, self._arg(node))
        if isinstance(module, nn.AvgPool2d):
            return self._avg_pool(node, module.kernel_size, module.stride, module.padding,
                                  module.ceil_mode, module.count_include_pad,
                                  module.divisor_override)
        if isinstance(module, nn.MaxPool2d):
            return self._max_pool(node, module.kernel_size, module.stride, module.padding,
                                  module.dilation, module.ceil_mode,
                                  module.return_indices)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return self._adaptive_avg_pool(node, module.output_size)
        if name in _NOT_MONOTONE or isinstance(module, (nn.Tanh, nn.Sigmoid)):
            self._refuse(node, f"{name} is not supported: SIM's well-posedness and the "
                               "row problems assume a monotone, 1-Lipschitz, piecewise-"
                               f"linear activation (ReLU, LeakyReLU, ReLU6, Hardtanh); "
                               f"{name} is not monotone or not piecewise linear.",
                         fatal=True)
        self._refuse(node, f"the module type {name} is not supported.")

    # -- functions and methods
    def _function(self, node):
        torch, functional = self.torch, self.torch.nn.functional
        target, name = node.target, _target_name(node)
        args = [self._resolve(a) for a in node.args]
        if node.op == "call_method" and name == "size":
            return _Shape()
        if target is operator.getitem:
            return self._getitem(node, args[0], args[1])
        if isinstance(args[0] if args else None, _Shape) or name in ("getattr",):
            return _Shape()
        if target is activate_tensor:  # every activation, after _out_of_place
            return self._activate(node, Activation(*node.args[1:]))
        if name in ("gelu", "silu", "tanh", "sigmoid", "elu", "selu", "mish",
                    "softplus", "hardswish"):
            self._refuse(node, f"{name} is not supported: SIM needs a monotone, "
                               "1-Lipschitz, piecewise-linear activation (ReLU, "
                               "LeakyReLU, ReLU6, Hardtanh).", fatal=True)
        if target in (operator.add, operator.iadd, torch.add) or (
                node.op == "call_method" and name in ("add", "add_")):
            return self._add(node, args[0], args[1])
        if name in ("dropout", "contiguous", "dropout2d", "dropout1d"):
            return args[0]
        if target is torch.flatten or (node.op == "call_method"
                                       and name in ("flatten", "view", "reshape")):
            return self._reshape(node, args[0])
        if target is functional.conv2d:
            return self._conv(node, args[0], args[1], self._argument(node, 2, "bias", None),
                              self._argument(node, 3, "stride", 1),
                              self._argument(node, 4, "padding", 0),
                              self._argument(node, 5, "dilation", 1),
                              self._argument(node, 6, "groups", 1), "zeros")
        if target is functional.linear:
            return self._linear(node, args[0], args[1], self._argument(node, 2, "bias", None))
        if target is functional.avg_pool2d:
            return self._avg_pool(node, self._argument(node, 1, "kernel_size", None),
                                  self._argument(node, 2, "stride", None),
                                  self._argument(node, 3, "padding", 0),
                                  self._argument(node, 4, "ceil_mode", False),
                                  self._argument(node, 5, "count_include_pad", True),
                                  self._argument(node, 6, "divisor_override", None))
        if target is functional.max_pool2d:
            return self._max_pool(node, self._argument(node, 1, "kernel_size", None),
                                  self._argument(node, 2, "stride", None),
                                  self._argument(node, 3, "padding", 0),
                                  self._argument(node, 4, "dilation", 1),
                                  self._argument(node, 5, "ceil_mode", False),
                                  self._argument(node, 6, "return_indices", False))
        if target is functional.adaptive_avg_pool2d:
            return self._adaptive_avg_pool(node, self._argument(node, 1, "output_size", None))
        if node.op == "call_method" and name == "mean":
            return self._mean(node, args[0])
        if target is functional.pad:
            return self._pad(node, args[0])
        self._refuse(node, "this operation is not supported.")

    # -- the operations
    def _activate(self, node, activation):
        value = self._arg(node)
        if isinstance(value, _Source) and activation.is_relu() and value.block != INPUT \
                and self.activations[value.block].low >= 0.0:
            return value  # ReLU of nonnegative states (pooled or not) changes nothing
        if isinstance(value, _Source):
            self._refuse(node, "an activation applied to an activation's output or to "
                               "the input; each activation must follow a layer.")
        self.block_shapes.append(value.shape)
        self.block_terms.append(value.terms)
        self.biases.append(value.bias)
        self.activations.append(activation)
        self.pre_nodes.append(node.args[0])
        return _Source(len(self.block_shapes) - 1, value.shape, flat=value.flat)

    def _source(self, node, value, what):
        if not isinstance(value, _Source):
            self._refuse(node, f"{what} must read the input or an activation's output "
                               "(two layers in a row without an activation between them "
                               "are not supported).")
        return value

    def _conv(self, node, value, weight, bias, stride, padding, dilation, groups, mode):
        source = self._source(node, value, "a convolution")
        kernel = _numpy(weight)
        size, stride = _pair(kernel.shape[2:]), _pair(stride)
        dilation = _pair(dilation)
        if isinstance(padding, str):
            padding = (size[0] // 2, size[1] // 2) if padding == "same" and \
                stride == (1, 1) and size[0] % 2 else (0, 0) if padding == "valid" else None
        padding = _pair(padding) if padding is not None else None
        if (groups != 1 or dilation != (1, 1) or mode != "zeros" or padding is None
                or size[0] != size[1] or stride[0] != stride[1] or padding[0] != padding[1]):
            self._refuse(node, "only square convolutions with groups=1, dilation=1, equal "
                               "strides and zero padding are supported.")
        if source.flat or len(source.shape) != 3:
            self._refuse(node, "a convolution needs a (channels, height, width) source.")
        term = _Term(source, "conv", kernel, size[0], stride[0], padding[0])
        bias = _numpy(bias) if bias is not None else np.zeros(kernel.shape[0])
        return _Affine([term], bias, _shape(node))

    def _linear(self, node, value, weight, bias):
        source = self._source(node, value, "a linear layer")
        if len(source.shape) != 1 and not source.flat:
            self._refuse(node, "a linear layer must read a flat (batch, features) "
                               "tensor; flatten it first.")
        kernel = _numpy(weight)
        bias = _numpy(bias) if bias is not None else np.zeros(kernel.shape[0])
        if _global_average(source):  # global average pooling then dense: "pool"
            term = _Term(replace(source, pools=source.pools[:-1]), "pool", kernel)
        else:
            term = _Term(source, "dense", kernel)
        return _Affine([term], bias, _shape(node), flat=True)

    def _batch_norm(self, node, value, norm):
        if not isinstance(value, _Affine):
            self._refuse(node, "BatchNorm must directly follow a convolution or linear "
                               "layer (it is folded into it).")
        root = np.sqrt(_numpy(norm.running_var) + norm.eps)
        scale = _numpy(norm.weight) / root if norm.affine else 1.0 / root
        shift = _numpy(norm.bias) if norm.affine else 0.0
        terms = [replace(t, kernel=t.kernel * scale.reshape((-1,) + (1,) * (t.kernel.ndim - 1)))
                 for t in value.terms]
        bias = (value.bias - _numpy(norm.running_mean)) * scale + shift
        return _Affine(terms, bias, value.shape, value.flat)

    def _flatten(self, node, value):
        if not isinstance(value, (_Source, _Affine)):
            self._refuse(node, "flattens something that is not a layer's output or an "
                               "activation.")
        return replace(value, flat=True)

    def _reshape(self, node, value):
        shape = _shape(node)
        before = value.shape
        if shape == before:
            return value
        if len(shape) == 1 and shape[0] == int(np.prod(before)):
            return self._flatten(node, value)
        self._refuse(node, f"a reshape from {before} to {shape} per sample; only "
                           "flattening to (batch, -1) is supported.")

    def _pool(self, node, value, stage):
        if isinstance(value, _Affine):
            self._refuse(node, "pooling between a layer and its activation is not "
                               "supported; pool after the activation (for max pooling "
                               "and ReLU the result is the same).")
        if value.flat or len(value.shape) != 3:
            self._refuse(node, "pooling needs a (channels, height, width) source.")
        return replace(value, pools=value.pools + (stage,))

    def _avg_pool(self, node, size, stride, padding, ceil_mode, count_include_pad,
                  divisor_override):
        size = _pair(size)
        stride = size if stride in (None, ()) or stride == [] else _pair(stride)
        padding = _pair(padding)
        if ceil_mode or divisor_override or (padding[0] and not count_include_pad) \
                or size[0] != size[1] or stride[0] != stride[1] or padding[0] != padding[1]:
            self._refuse(node, "average pooling needs square windows and strides, "
                               "ceil_mode=False, no divisor_override, and "
                               "count_include_pad=True when padded.")
        return self._pool(node, self._arg(node), Pool("avg", size[0], stride[0],
                                                      padding[0]))

    def _max_pool(self, node, size, stride, padding, dilation, ceil_mode, return_indices):
        size = _pair(size)
        stride = size if stride in (None, ()) or stride == [] else _pair(stride)
        padding = _pair(padding)
        if ceil_mode or return_indices or _pair(dilation) != (1, 1) \
                or size[0] != size[1] or stride[0] != stride[1] or padding[0] != padding[1]:
            self._refuse(node, "max pooling needs square windows and strides, "
                               "dilation=1, ceil_mode=False and return_indices=False.")
        return self._pool(node, self._arg(node), Pool("max", size[0], stride[0],
                                                      padding[0]))

    def _adaptive_avg_pool(self, node, output_size):
        value = self._arg(node)
        if not isinstance(value, _Source) or len(value.shape) != 3:
            return self._pool(node, value, None)
        height, width = value.shape[1:]
        out = _pair(output_size)
        out = (height if out[0] is None else out[0], width if out[1] is None else out[1])
        if height != width or out[0] != out[1] or height % out[0]:
            self._refuse(node, f"adaptive average pooling from {height}x{width} to "
                               f"{out[0]}x{out[1]}: only square maps and output sizes "
                               "dividing the input size are supported.")
        step = height // out[0]
        return self._pool(node, value, Pool("avg", step, step, 0))

    def _mean(self, node, value):
        dims = self._argument(node, 1, "dim", None)
        keep = self._argument(node, 2, "keepdim", False)
        dims = tuple(d % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims])) \
            if dims is not None else ()
        if set(dims) != {2, 3} or not isinstance(value, _Source) or len(value.shape) != 3:
            self._refuse(node, "only x.mean((2, 3)) (global average pooling) of an "
                               "activation's output is supported.")
        size = value.shape[1]
        if value.shape[1] != value.shape[2]:
            self._refuse(node, "global average pooling of a non-square map.")
        pooled = self._pool(node, value, Pool("avg", size, size, 0))
        return pooled if keep else replace(pooled, flat=True)

    def _add(self, node, left, right):
        if not all(isinstance(v, (_Source, _Affine)) for v in (left, right)):
            self._refuse(node, "only sums of layers' outputs and activations are "
                               "supported (no constants).")
        shape = _shape(node)
        if left.shape != right.shape:
            self._refuse(node, f"adds tensors of shapes {left.shape} and {right.shape}.")
        left, right = _as_affine(left, shape), _as_affine(right, shape)
        return _Affine(left.terms + right.terms, left.bias + right.bias, shape,
                       left.flat or right.flat)

    def _getitem(self, node, value, index):
        if isinstance(value, _Shape):
            return _Shape()
        if not isinstance(value, (_Source, _Affine)) or len(value.shape) != 3:
            self._refuse(node, "indexing is only supported as x[:, :, ::s, ::s] "
                               "(subsampling) of a (channels, height, width) tensor.")
        index = index if isinstance(index, tuple) else (index,)
        full = slice(None)
        rows = index[2] if len(index) > 2 else full
        cols = index[3] if len(index) > 3 else full
        if (len(index) > 4 or any(i != full for i in index[:2])
                or not all(isinstance(s, slice) and s.start in (None, 0) and s.stop is None
                           for s in (rows, cols))
                or (rows.step or 1) != (cols.step or 1)):
            self._refuse(node, "indexing is only supported as x[:, :, ::s, ::s].")
        step = rows.step or 1
        affine = _as_affine(value, value.shape)
        terms = []
        for term in affine.terms:
            if term.kind != "conv":
                self._refuse(node, "subsampling of a dense term.")
            terms.append(replace(term, stride=term.stride * step))
        return _Affine(terms, affine.bias, _shape(node))

    def _pad(self, node, value):
        pad = tuple(self._argument(node, 1, "pad", ()))
        mode = self._argument(node, 2, "mode", "constant")
        fill = self._argument(node, 3, "value", None)
        if not isinstance(value, (_Source, _Affine)) or len(value.shape) != 3 \
                or mode != "constant" or fill not in (None, 0, 0.0) \
                or len(pad) != 6 or any(pad[:4]):
            self._refuse(node, "padding is only supported as F.pad(x, (0, 0, 0, 0, a, b)) "
                               "(zero channels, as in option A shortcuts).")
        before, after = pad[4], pad[5]
        affine = _as_affine(value, value.shape)
        terms = [replace(t, kernel=np.pad(t.kernel, [(before, after)]
                                          + [(0, 0)] * (t.kernel.ndim - 1)))
                 for t in affine.terms]
        return _Affine(terms, np.pad(affine.bias, (before, after)), _shape(node))


class _Shape:
    """A non-tensor value (``x.size()`` and its items): only reshape arguments."""


def _activation_callables(torch):
    functional = torch.nn.functional
    return {functional.relu, functional.relu_, torch.relu, torch.relu_,
            functional.leaky_relu, functional.leaky_relu_, functional.hardtanh,
            functional.hardtanh_, functional.relu6}


def _describe(node, reader):
    if node.op == "call_module":
        module = reader.graph_module.get_submodule(node.target)
        return f"{node.target}: {type(module).__name__}"
    return _target_name(node)


def _pair(value):
    if isinstance(value, (tuple, list)):
        return tuple(value) if len(value) == 2 else (value[0], value[0])
    return (value, value)


def _global_average(source):
    """Whether the last pooling stage of ``source`` averages its whole map."""
    if not source.pools or source.pools[-1].kind != "avg":
        return False
    last = source.pools[-1]
    before = pooled_shape(source.base, source.pools[:-1])
    return last.padding == 0 and before[1] == before[2] == last.size


# ------------------------------------------------------------- graph -> structure
def _merged_links(terms):
    """Terms of one block as (Link, 2-D kernel), equal links merged (summed)."""
    merged = {}
    for term in terms:
        link = term.link()
        kernel = term.kernel.reshape(term.kernel.shape[0], -1)
        merged[link] = merged[link] + kernel if link in merged else kernel
    # state links first (their columns carry the kappa bound), then the input
    links = sorted(merged, key=lambda link: link.source == INPUT)
    return links, [merged[link] for link in links]


def _structure(reader, input_shape):
    links, kernels = [], []
    for terms in reader.block_terms:
        block_links, block_kernels = _merged_links(terms)
        links.append(tuple(block_links))
        kernels.append(block_kernels)
    head_links, head_kernels = _merged_links(reader.head.terms)
    activations = tuple(reader.activations)
    structure = Structure(input_shape, tuple(reader.block_shapes), tuple(links),
                          tuple(head_links), int(reader.head.shape[0]),
                          () if all(a.is_relu() for a in activations) else activations)
    try:
        check_structure(structure)
    except ValueError as exc:
        raise GraphError(f"the teacher's graph does not form a weight-shared model: "
                         f"{exc}") from exc
    return TeacherMaps(structure, kernels, list(reader.biases), head_kernels,
                       reader.head.bias)


# ------------------------------------------------------------------- tracing
def traced(torch, module):
    """``torch.fx.symbolic_trace(module)`` with a message naming the operation
    that stopped the trace, and in-place activations and adds made
    out-of-place (their other readers rewired to their result, which keeps
    the computation the same)."""
    try:
        graph_module = torch.fx.symbolic_trace(module)
    except Exception as exc:
        where = _user_frame(exc)
        raise GraphError(
            f"torch.fx could not trace the teacher ({type(exc).__name__}: {exc})"
            f"{where}. The forward must not branch on tensor values or sizes computed "
            "from them; write such logic without Python control flow on tensors."
        ) from exc
    _out_of_place(torch, graph_module)
    return graph_module


def _user_frame(exc):
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename]
    if not frames:
        return ""
    frame = frames[-1]
    return f", at {frame.filename}:{frame.lineno}: {frame.line}"


def _out_of_place(torch, graph_module):
    """Rewrite every activation (module or function, in place or not) as one
    out-of-place call of :func:`sksim.blocks.activate_tensor`, and in-place
    adds as adds: later readers of an overwritten tensor read the result
    instead, so the computation is the same and each pre-activation survives
    to be recorded."""
    graph = graph_module.graph
    order = {node: i for i, node in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        module = graph_module.get_submodule(node.target) if node.op == "call_module" \
            else None
        activation = (module_activation(torch, module) if module is not None
                      else _function_activation(torch, node)
                      if node.op in ("call_function", "call_method") else None)
        inplace = _is_inplace(node, module)
        if inplace and node.args and hasattr(node.args[0], "op"):
            overwritten = node.args[0]
            for user in list(overwritten.users):
                if user is not node and order[user] > order[node]:
                    user.replace_input_with(overwritten, node)
        if activation is not None:
            _replace(graph, order, node, activate_tensor, (node.args[0], *activation))
        elif inplace and node.op in ("call_function", "call_method") and \
                _target_name(node) in ("iadd", "add_"):
            _replace(graph, order, node, operator.add, tuple(node.args[:2]))
    graph.lint()
    graph_module.recompile()


def _replace(graph, order, node, function, args):
    """Put a call of ``function`` on ``args`` in the place of ``node``."""
    with graph.inserting_after(node):
        replacement = graph.call_function(function, args)
    node.replace_all_uses_with(replacement)
    graph.erase_node(node)
    order[replacement] = order.pop(node)


def shaped_graph(torch, module, inputs):
    """The traced graph (:func:`traced`) with every node's output shape from a
    forward pass on ``inputs``. Tracing patches torch globally for its
    duration, so it must not overlap another trace or forward pass of the
    module: callers that run in threads hold a lock and keep the result."""
    from torch.fx.passes.shape_prop import ShapeProp

    graph_module = traced(torch, module)
    try:
        with torch.no_grad():
            ShapeProp(graph_module).propagate(inputs)
    except Exception as exc:
        raise _input_error(exc, inputs) from exc
    return graph_module


def read_shaped(torch, graph_module, input_shape):
    """(TeacherMaps, pre-activation nodes) of a :func:`shaped_graph`; reads
    the current weights of its modules."""
    reader = _Reader(torch, graph_module).read()
    return _structure(reader, input_shape), reader.pre_nodes


def _input_error(exc, inputs):
    while exc.__cause__ is not None:  # ShapeProp wraps the module's own error
        exc = exc.__cause__
    return GraphError(
        f"the teacher fails on inputs of shape {tuple(inputs.shape)} ({type(exc).__name__}: "
        f"{exc}); set TorchBaseline's input_shape to the per-sample shape the module "
        "expects, e.g. input_shape=(1, 8, 8) for one-channel 8x8 images.", fatal=True)


def recording_module(torch, graph_module, pre_nodes):
    """A GraphModule returning ``(outputs, pre-activation_0, ...)``."""
    graph = torch.fx.Graph()
    mapping = {}
    output = None
    for node in graph_module.graph.nodes:
        if node.op == "output":
            output = node
            continue
        mapping[node] = graph.node_copy(node, lambda n: mapping[n])
    # every in-place operation has been rewritten or refused, so nothing
    # overwrites a recorded tensor after it is computed
    graph.output((mapping[output.args[0]], *(mapping[pre] for pre in pre_nodes)))
    return torch.fx.GraphModule(graph_module, graph)


# ------------------------------------------------------------------ the check
def check_teacher(maps, inputs, pre_activations, outputs, rtol):
    """Raise GraphError unless every recorded pre-activation (and the output)
    equals its links applied to the recorded activations of their sources."""
    structure = maps.structure
    sources = {INPUT: inputs}
    for index, pre in enumerate(pre_activations):
        predicted = _evaluate(structure, structure.links[index], maps.kernels[index],
                              sources) + per_state(maps.biases[index],
                                                   structure.block_shapes[index])
        _check_close(predicted, pre, f"block {index}", rtol)
        sources[index] = structure.activation(index)(pre)
    predicted = _evaluate(structure, structure.head, maps.head_kernels, sources) \
        + maps.head_bias
    _check_close(predicted, outputs, "the output", rtol)


def _evaluate(structure, links, kernels, sources):
    return sum(link_output(structure, link, kernel, sources[link.source])
               for link, kernel in zip(links, kernels))


def _check_close(predicted, recorded, where, rtol):
    scale = max(1.0, float(np.abs(recorded).max(initial=0.0)))
    error = float(np.abs(predicted - recorded).max(initial=0.0))
    if error > rtol * scale:
        raise GraphError(
            f"{where} of the teacher is not the map its graph describes (largest "
            f"difference {error:.3g}, relative to {scale:.3g}): an operation the graph "
            "reader does not see (a custom autograd function, a parameter changed "
            "during forward, a module in training mode)?")
