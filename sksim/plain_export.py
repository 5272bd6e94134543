"""A fitted feed-forward SIM model as a plain torch network:
``to_torch(plain=True)``.

The network is a ``torch.fx.GraphModule`` made only of ``torch.nn`` layers
(``Conv2d``, ``Linear``, ``Flatten``, ``AvgPool2d``, ``MaxPool2d``,
``AdaptiveAvgPool2d`` and the activations ``ReLU``, ``LeakyReLU``,
``Hardtanh``) and additions: the model's own topology (a weight-shared
model's blocks and links, the teacher's graph; a flat feed-forward model's
blocks, each reading the inputs and the earlier blocks through the nonzero
blocks of ``B`` and ``A``), with dense kernels. It needs torch alone at run
time (``torch.save`` / ``torch.load`` of a GraphModule keep its generated
code, not a reference to sksim) and exports to ONNX with
``torch.onnx.export``.

A diagonal 1x1 kernel (a fitted identity shortcut) is written as one scale
per channel (a depthwise ``Conv2d``): C multiply-adds per position, not C^2.
Channels no row reads are removed, with their own rows and intercepts, and
so are channels that are identically zero (no kernel entry and an
intercept the activation maps to 0); removing a block's rows can leave
channels of its sources unread in turn, so the pruning runs to a fixed point.
Only a model without feedback exports this way: a lateral link or an
implicit ``A`` needs the fixed-point loop of :mod:`sksim.torch_export`.
"""

import operator

import numpy as np
import torch
from torch import fx, nn

from ._arrays import forward_blocks


# ----------------------------------------------------------- the network
class _Builder:
    """Collects the layers of the network and the nodes of its graph."""

    def __init__(self):
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.count = 0

    def layer(self, module, node):
        name = f"layer{self.count}"
        self.count += 1
        self.root.add_module(name, module)
        return self.graph.call_module(name, (node,))

    def chain(self, modules, node):
        for module in modules:
            node = self.layer(module, node)
        return node

    def total(self, nodes):
        total = nodes[0]
        for node in nodes[1:]:
            total = self.graph.call_function(operator.add, (total, node))
        return total

    def module(self, output, dtype):
        self.graph.output(output)
        return fx.GraphModule(self.root, self.graph).to(dtype).eval()


def _linear(weight, bias):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                      dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight))
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias))
    return layer


def _activation_module(activation):
    """``clip(max(z, slope z), low, high)`` as torch.nn layers."""
    slope, low, high = activation
    modules = [nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)]
    if slope == 1:
        modules = []
    clip_low = low > -np.inf and (slope or low != 0.0)
    if clip_low or high < np.inf:
        modules.append(nn.Hardtanh(low if clip_low else -np.inf, high))
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


# ------------------------------------------------------------ flat model
def _dead_flat_states(model):
    """The states of a flat model that can go: read by no row, or identically
    zero (no entry in their row and a non-positive intercept)."""
    A = abs(model.A).tocsc()
    rows = abs(model.A).tocsr()
    C = abs(model.C).tocsc()
    reads_input = np.diff(model.B.tocsr().indptr) > 0
    alive = np.ones(A.shape[0], dtype=bool)
    while True:
        read = (np.asarray(A[alive].sum(axis=0)).ravel()
                + np.asarray(C.sum(axis=0)).ravel()) > 0
        live_row = (np.asarray(rows[:, alive].sum(axis=1)).ravel() > 0) | reads_input
        kept = alive & read & (live_row | (model.state_intercept > 0))
        if np.array_equal(kept, alive):
            return ~alive
        alive = kept


def flat_module(estimator, dtype):
    """The plain network of a flat feed-forward model."""
    model = estimator._model()
    blocks = forward_blocks(model.A)
    if blocks is None:
        raise ValueError(
            "to_torch(plain=True) needs a model without feedback (structure="
            "'feedforward'): an implicit A is a fixed point, not a plain network; "
            "use to_torch() for it.")
    dead = _dead_flat_states(model)
    A, B = model.A.toarray(), model.B.toarray()
    C, D = model.C.toarray(), model.D.toarray()
    build = _Builder()
    u = build.graph.placeholder("u")
    sources, kept_of = {}, {}
    for start, stop in blocks:
        kept = np.flatnonzero(~dead[start:stop]) + start
        if kept.size == 0:
            continue
        links = [(B[kept], u)] + [(A[np.ix_(kept, kept_of[key])], node)
                                  for key, node in sources.items()]
        nodes = _dense_links(build, links, model.state_intercept[kept])
        activated = build.layer(nn.ReLU(), build.total(nodes))
        sources[(start, stop)] = activated
        kept_of[(start, stop)] = kept
    links = [(D, u)] + [(C[:, kept_of[key]], node) for key, node in sources.items()]
    return build.module(build.total(_dense_links(build, links, model.intercept)), dtype)


def _dense_links(build, links, bias):
    """Linear layers of the ``(weight, source node)`` links with a nonzero
    weight, the first one carrying ``bias`` (the first link alone when none
    has a nonzero weight: a constant block)."""
    kept = [link for link in links if np.any(link[0])] or links[:1]
    return [build.layer(_linear(weight, bias if i == 0 else None), node)
            for i, (weight, node) in enumerate(kept)]


# ------------------------------------------------- weight-shared model
def _link_kernel(structure, link, kernel):
    """A link's kernel as (out, source channels, ...) so channels index axis 1."""
    channels = structure.link_source_shape(link)[0]
    return np.asarray(kernel).reshape(kernel.shape[0], channels, -1)


def _dead_channels(structure, kernels, head_kernels, intercepts):
    """Per block, the channels that can go (see the module's docstring)."""
    n_blocks = len(structure.block_shapes)
    readers = [[] for _ in range(n_blocks)]  # the (kernel, reader block) reading a block
    shaped = [[_link_kernel(structure, link, k) for link, k in zip(links, block)]
              for links, block in zip(structure.links, kernels)]
    for b, links in enumerate(structure.links):
        for i, link in enumerate(links):
            if link.source == b:
                raise ValueError(
                    "to_torch(plain=True) needs a model without lateral links "
                    "(lateral_kernel=None): a block reading itself is a fixed point, "
                    "not a plain network; use to_torch() for it.")
            if link.source >= 0:
                readers[link.source].append((shaped[b][i], b))
    for link, kernel in zip(structure.head, head_kernels):
        if link.source >= 0:
            readers[link.source].append((_link_kernel(structure, link, kernel), None))
    alive = [np.ones(shape[0], dtype=bool) for shape in structure.block_shapes]
    changed = True
    while changed:
        changed = False
        for b in range(n_blocks):
            row_live = np.zeros(structure.block_shapes[b][0], dtype=bool)
            for link, kernel in zip(structure.links[b], shaped[b]):
                used = kernel if link.source < 0 else kernel[:, alive[link.source]]
                row_live |= np.any(used != 0, axis=(1, 2))
            zero = ~row_live & (structure.activation(b)(np.asarray(intercepts[b])) == 0)
            read = np.zeros_like(row_live)
            for kernel, reader in readers[b]:
                rows = kernel if reader is None else kernel[alive[reader]]
                read |= np.any(rows != 0, axis=(0, 2))
            kept = alive[b] & read & ~zero
            if not np.array_equal(kept, alive[b]):
                alive[b], changed = kept, True
    return [~a for a in alive]


def shared_module(estimator, dtype):
    """The plain network of a weight-shared model."""
    model = estimator._shared_model
    structure = model.structure
    dead = _dead_channels(structure, model.kernels, model.head_kernels, model.intercepts)
    kept = [np.flatnonzero(~d) for d in dead]
    build = _Builder()
    u = build.graph.placeholder("u")
    images = build.graph.call_method("reshape", (u, (-1, *structure.input_shape)))
    sources = {-1: images}
    for b, (links, block_kernels) in enumerate(zip(structure.links, model.kernels)):
        if kept[b].size == 0:
            continue
        intercept = np.asarray(model.intercepts[b])[kept[b]]
        nodes = []
        for link, kernel in zip(links, block_kernels):
            node = _shared_link(build, structure, link, kernel, sources, kept, kept[b],
                                None if nodes else intercept)
            if node is not None:
                nodes.append(node)
        if not nodes:
            raise ValueError(
                f"block {b} of the model is constant (its rows read only removed "
                "channels); to_torch(plain=True) cannot write it as a layer, use "
                "to_torch().")
        sources[b] = build.layer(_activation_module(structure.activation(b)),
                                 build.total(nodes))
    nodes = []
    out_rows = np.arange(structure.n_outputs)
    for link, kernel in zip(structure.head, model.head_kernels):
        node = _shared_link(build, structure, link, kernel, sources, kept, out_rows,
                            None if nodes else np.asarray(model.head_intercept))
        if node is not None:
            nodes.append(node)
    return build.module(build.total(nodes), dtype)


def _shared_link(build, structure, link, kernel, sources, kept, rows, bias):
    """One link's pools and map, on the kept rows and source channels (None
    when its source block was removed entirely)."""
    if link.source >= 0 and (link.source not in sources):
        return None
    shaped = _link_kernel(structure, link, kernel)[rows]
    if link.source >= 0:
        shaped = shaped[:, kept[link.source]]
    modules = [nn.AvgPool2d(stage.size, stage.stride, stage.padding, count_include_pad=True)
               if stage.kind == "avg" else nn.MaxPool2d(stage.size, stage.stride,
                                                        stage.padding)
               for stage in link.pool]
    if link.kind == "conv":
        # a diagonal 1x1 kernel (an identity shortcut) is one scale per channel
        groups = shaped.shape[0] if _is_diagonal(shaped) else 1
        conv = nn.Conv2d(shaped.shape[1], shaped.shape[0], link.kernel_size, link.stride,
                         link.padding, bias=bias is not None, groups=groups,
                         dtype=torch.float64)
        weight = shaped if groups == 1 else np.diagonal(shaped[:, :, 0]).copy()
        with torch.no_grad():
            conv.weight.copy_(torch.as_tensor(weight.reshape(conv.weight.shape)))
            if bias is not None:
                conv.bias.copy_(torch.as_tensor(bias))
        modules.append(conv)
    else:
        if link.kind == "pool":
            modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif len(structure.link_source_shape(link)) == 3:
            modules.append(nn.Flatten())
        modules.append(_linear(shaped.reshape(shaped.shape[0], -1), bias))
    return build.chain(modules, sources[link.source])


def _is_diagonal(shaped):
    """Whether a (out, in, taps) kernel is 1x1, square and zero off its diagonal."""
    out, channels, taps = shaped.shape
    return (taps == 1 and out == channels and out > 1
            and not np.any(shaped[:, :, 0][~np.eye(out, dtype=bool)]))


def build_plain_module(estimator, dtype=None):
    """``estimator.to_torch(plain=True)`` (see there)."""
    dtype = torch.float32 if dtype is None else dtype
    if estimator._is_weight_shared():
        return shared_module(estimator, dtype)
    return flat_module(estimator, dtype)


def count_flops(module, input_shape):
    """Multiply-adds of one sample through the plain network's Conv2d and
    Linear layers (the activations, pools and additions are not counted)."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels * int(np.prod(layer.kernel_size)) // layer.groups
            total += per_output * output[0].numel()
        elif isinstance(layer, nn.Linear):
            total += layer.in_features * layer.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        parameter = next(module.parameters())
        with torch.no_grad():
            module(torch.zeros((1, int(np.prod(input_shape))), dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
    return total

