"""Weight-shared state blocks: the structure of a convolutional SIM model.

A teacher's hooked activation of shape ``(C, H, W)`` is one *state block*
(a flat activation is a block of shape ``(n,)``). Each block's pre-activation
is a sum of *links*, each an affine map of one source, the network input
(source ``-1``) or a block's post-activation (source ``j >= 0``):

``conv``
    a 2-D convolution (zero padding) of a spatial source, giving a spatial block;
``dense``
    a dense map of the flattened source, giving a flat block;
``pool``
    global average pooling of a spatial source, then a dense map.

A link may first apply parameter-free *pooling stages* to its source
(``Link.pool``, a tuple of :class:`Pool`: average or max pooling over square
windows); the link's geometry then refers to the pooled source. Each block
has an *activation* (:class:`Activation`), ReLU unless the structure says
otherwise: a clipped leaky ReLU ``clip(max(z, slope z), low, high)`` covers
ReLU, LeakyReLU, ReLU6 and Hardtanh, all componentwise, monotone and
1-Lipschitz.

One *row* per output channel (per unit of a flat block) holds that channel's
kernel over all of the block's links; its design is the patches (im2col) of
the sources, so all rows of a block share one Gram matrix of size
``(patch width)^2``.

**Well-posedness of the unrolled operator.** The unrolled matrix ``A`` maps
all flattened states to all flattened pre-activations. Its row for channel
``c`` of a spatial block at output position ``q`` holds each tap of the
kernel row ``K[c]`` at most once (a strided convolution reads a distinct
input position per tap), and taps that fall on the zero padding are absent,
so ``sum_j |A_qj| <= sum over state links of ||K_link[c]||_1`` (equality at
interior positions). A ``pool`` row holds ``K[c, i] / (H W)`` at the ``H W``
positions of source channel ``i``: its L1 norm is exactly ``||K[c]||_1``; a
``dense`` row is ``K[c]`` itself. Bounding the state part of every kernel
row by ``kappa`` therefore bounds ``||A||_inf <= kappa`` exactly, as for the
flat model; ``row_bound`` and the Lipschitz certificates carry over the same
way (each unrolled row of ``B``, ``C``, ``D`` is bounded by its kernel row).
"""

import sys
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .solvers.patches import conv_patch_rows

INPUT = -1
LINK_KINDS = ("conv", "dense", "pool")
POOL_KINDS = ("avg", "max")


class Pool(NamedTuple):
    """A parameter-free pooling stage over ``size`` x ``size`` windows of a
    spatial source (zero padding for ``"avg"``, counted in the mean as
    torch's ``count_include_pad=True`` does; ``-inf`` padding for ``"max"``)."""

    kind: str
    size: int
    stride: int
    padding: int = 0


class Link(NamedTuple):
    """One affine map into a block, from ``source`` (``-1``: the input),
    after the pooling stages ``pool`` (applied in order to the source)."""

    source: int
    kind: str
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    pool: tuple = ()


class Activation(NamedTuple):
    """``phi(z) = clip(max(z, slope * z), low, high)`` with ``0 <= slope <= 1``
    and ``low <= 0 <= high``: componentwise, monotone and 1-Lipschitz.

    ReLU is ``(0, 0, inf)``, LeakyReLU(a) ``(a, -inf, inf)``, ReLU6
    ``(0, 0, 6)``, Hardtanh(lo, hi) ``(1, lo, hi)``. A block whose states
    are scaled by ``s > 0`` has the activation ``s phi(z / s)``, which is the
    same clipped leaky ReLU with bounds ``s low`` and ``s high``
    (:meth:`scaled`): the positively homogeneous ones (ReLU, LeakyReLU) are
    unchanged, the clipped ones keep their shape with scaled thresholds.
    """

    slope: float = 0.0
    low: float = 0.0
    high: float = float("inf")

    def scaled(self, scale):
        return Activation(self.slope, self.low * scale, self.high * scale)

    def is_relu(self):
        return self == RELU

    def __call__(self, z):
        out = np.maximum(z, self.slope * z) if self.slope else np.maximum(z, 0.0)
        if self.low > -np.inf and (self.slope or self.low != 0.0):
            out = np.maximum(out, self.low)
        if self.high < np.inf:
            out = np.minimum(out, self.high)
        return out

    def on_tensor(self, z):
        """The same on a torch tensor (:func:`activate_tensor`)."""
        return activate_tensor(z, *self)


RELU = Activation()


def activate_tensor(z, slope, low, high):
    """:class:`Activation` ``(slope, low, high)`` applied to a torch tensor
    ``z`` by the tensor's own methods (this module never imports torch), the
    operations of :meth:`Activation.__call__`. A module-level function, so
    that a torch.fx graph can call it (the recorded teacher does)."""
    out = z.maximum(z * slope) if slope else z.relu()
    if low > -np.inf and (slope or low != 0.0):
        out = out.clamp(min=low)
    if high < np.inf:
        out = out.clamp(max=high)
    return out


class Structure(NamedTuple):
    """Blocks of a weight-shared model, in forward order.

    Attributes
    ----------
    input_shape : tuple of int
        ``(C, H, W)`` or ``(n_features,)``.
    block_shapes : tuple of tuple of int
        Shape of each state block.
    links : tuple of tuple of Link
        The links into each block.
    head : tuple of Link
        The links into the outputs (a flat block of ``n_outputs`` units).
    n_outputs : int
    activations : tuple of Activation
        Each block's activation; empty means ReLU everywhere.
    """

    input_shape: tuple
    block_shapes: tuple
    links: tuple
    head: tuple
    n_outputs: int
    activations: tuple = ()

    def source_shape(self, source):
        return self.input_shape if source == INPUT else self.block_shapes[source]

    def link_source_shape(self, link):
        """Shape of what ``link``'s map reads: its source after its pools."""
        return pooled_shape(self.source_shape(link.source), link.pool)

    def activation(self, block):
        return self.activations[block] if self.activations else RELU

    def all_relu(self):
        return all(a.is_relu() for a in self.activations)

    def has_max_pool(self):
        return any(stage.kind == "max" for links in self.links + (self.head,)
                   for link in links for stage in link.pool)

    def block_sizes(self):
        return [int(np.prod(shape)) for shape in self.block_shapes]

    def n_states(self):
        return sum(self.block_sizes())


def pool_output_size(size, stage):
    return (size + 2 * stage.padding - stage.size) // stage.stride + 1


def pooled_shape(shape, pools):
    """Shape of a ``(C, H, W)`` source after the pooling stages ``pools``."""
    for stage in pools:
        shape = (shape[0], pool_output_size(shape[1], stage),
                 pool_output_size(shape[2], stage))
    return tuple(shape)


def _pool_once(images, stage):
    """One pooling stage of images (n, C, H, W), in numpy."""
    pad, size = stage.padding, stage.size
    fill = 0.0 if stage.kind == "avg" else -np.inf
    if pad:
        images = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)),
                        constant_values=fill)
    windows = np.lib.stride_tricks.sliding_window_view(images, (size, size), axis=(2, 3))
    windows = windows[:, :, ::stage.stride, ::stage.stride]
    return windows.mean(axis=(4, 5)) if stage.kind == "avg" else windows.max(axis=(4, 5))


def _torch_pool_once(torch, images, stage):
    functional = torch.nn.functional
    if stage.kind == "avg":
        return functional.avg_pool2d(images, stage.size, stage.stride, stage.padding,
                                     count_include_pad=True)
    return functional.max_pool2d(images, stage.size, stage.stride, stage.padding)


def pool_source(structure, link, source_values):
    """``link``'s source values (n, source size) after its pools, flattened."""
    if not link.pool:
        return source_values
    shape = structure.source_shape(link.source)
    torch = _imported_torch()
    if torch is not None:
        images = torch.from_numpy(_writable_float64(_as_images(source_values, shape)))
        with torch.no_grad():
            for stage in link.pool:
                images = _torch_pool_once(torch, images, stage)
        return images.reshape(images.shape[0], -1).numpy()
    images = _as_images(source_values, shape)
    for stage in link.pool:
        images = _pool_once(images, stage)
    return np.ascontiguousarray(images.reshape(images.shape[0], -1))


def n_positions(shape):
    """Output positions of a block of ``shape``: H W when spatial, else 1."""
    return shape[1] * shape[2] if len(shape) == 3 else 1


def per_state(values, shape):
    """Per-channel ``values`` of a block repeated over its positions, in the
    flattened (channel, row, column) state order."""
    return np.repeat(values, n_positions(shape))


def block_offsets(structure):
    sizes = structure.block_sizes()
    return np.concatenate([[0], np.cumsum(sizes)]).astype(int)


def conv_output_size(size, link):
    return (size + 2 * link.padding - link.kernel_size) // link.stride + 1


def link_width(structure, link):
    """Number of design columns (kernel entries per row) of ``link``."""
    shape = structure.link_source_shape(link)
    if link.kind == "conv":
        return shape[0] * link.kernel_size**2
    if link.kind == "pool":
        return shape[0]
    return int(np.prod(shape))


def _output_shape(structure, link, n_out):
    """Shape of the block ``link`` produces with ``n_out`` channels/units."""
    shape = structure.link_source_shape(link)
    if link.kind == "conv":
        return (n_out, conv_output_size(shape[1], link), conv_output_size(shape[2], link))
    return (n_out,)


def check_structure(structure):
    """Raise ValueError unless every link fits its source and target block."""
    targets = list(enumerate(structure.block_shapes)) + [("head", (structure.n_outputs,))]
    for index, shape in targets:
        links = structure.head if index == "head" else structure.links[index]
        if not links:
            raise ValueError(f"block {index} has no links")
        for link in links:
            if link.kind not in LINK_KINDS:
                raise ValueError(f"link kind must be one of {LINK_KINDS}; got {link.kind!r}")
            limit = len(structure.block_shapes) if index == "head" else index + 1
            if not INPUT <= link.source < limit:
                raise ValueError(f"block {index} links to source {link.source}; sources "
                                 "must be the input (-1), an earlier block or itself")
            source = structure.source_shape(link.source)
            if link.pool and len(source) != 3:
                raise ValueError(f"a pooled link of block {index} needs a spatial "
                                 f"source; source {link.source} has shape {source}")
            for stage in link.pool:
                if stage.kind not in POOL_KINDS:
                    raise ValueError(f"pool kind must be one of {POOL_KINDS}; got "
                                     f"{stage.kind!r}")
            if link.pool and min(structure.link_source_shape(link)) < 1:
                raise ValueError(f"a link of block {index} pools its source "
                                 f"{source} to nothing")
            source = structure.link_source_shape(link)
            if link.kind in ("conv", "pool") and len(source) != 3:
                raise ValueError(f"a {link.kind} link of block {index} needs a spatial "
                                 f"source; source {link.source} has shape {source}")
            produced = _output_shape(structure, link, shape[0])
            if tuple(produced) != tuple(shape):
                raise ValueError(f"a link of block {index} produces shape {produced}, "
                                 f"not the block's shape {shape}")
    if structure.activations and len(structure.activations) != len(structure.block_shapes):
        raise ValueError(f"{len(structure.activations)} activations for "
                         f"{len(structure.block_shapes)} blocks")
    for activation in structure.activations:
        if not (0.0 <= activation.slope <= 1.0 and activation.low <= 0.0
                <= activation.high):
            raise ValueError(f"activation {activation} is not monotone and 1-Lipschitz "
                             "with phi(0) = 0 (needs 0 <= slope <= 1, low <= 0 <= high)")


def _as_images(values, shape):
    return values.reshape((values.shape[0],) + tuple(shape))


def link_patches(structure, link, source_values, positions=None, out=None):
    """Design rows of ``link``: one per (sample, output position).

    Parameters
    ----------
    source_values : ndarray of shape (n_samples, source size)
        Post-activations (or inputs) of the link's source, flattened (before
        the link's pools).
    positions : ndarray of int of shape (n_samples, k), default=None
        Output positions (flat indices) kept for each sample; ``None`` keeps all.
    out : ndarray of shape (n_samples * n_positions, link width), default=None
        Where to write the patches (e.g. the link's columns of a block's
        design): one copy from the source, instead of a patch array and a
        second copy into the design.

    Returns
    -------
    patches : ndarray of shape (n_samples * n_positions, link width)
        Rows ordered sample-major; columns in the kernel's (channel, row, column)
        order. ``out`` when given.
    """
    return _patches(structure.link_source_shape(link), link,
                    pool_source(structure, link, source_values), positions, out)


def _patches(shape, link, source_values, positions=None, out=None):
    """:func:`link_patches` of an already pooled source of ``shape``."""
    n_samples = source_values.shape[0]
    if link.kind == "dense":
        return _written(source_values.reshape(n_samples, -1), out)
    images = _as_images(source_values, shape)
    if link.kind == "pool":
        return _written(images.mean(axis=(2, 3)), out)
    size = link.kernel_size
    if positions is None:
        positions = np.empty((n_samples, 0), dtype=np.int64)
        kept = conv_output_size(images.shape[2], link) * conv_output_size(images.shape[3], link)
    else:
        positions = np.ascontiguousarray(positions, dtype=np.int64)
        kept = positions.shape[1]
    if out is None:
        out = np.empty((n_samples * kept, images.shape[1] * size * size), images.dtype)
    conv_patch_rows(np.ascontiguousarray(images, dtype=out.dtype), size, link.stride,
                    link.padding, positions, out)
    return out


def _written(patches, out):
    if out is None:
        return patches
    out[...] = patches
    return out


def _imported_torch():
    """torch if the caller has already imported it (a TorchBaseline teacher or
    to_torch), else None: sksim never imports it for the float64 convolutions
    and pools, which it runs a few times faster than numpy's im2col + GEMM."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and hasattr(torch, "nn") else None


def _writable_float64(array):
    array = np.ascontiguousarray(array, dtype=np.float64)
    # a read-only memmap's batch: torch needs a copy
    return array if array.flags.writeable else array.copy()


def _torch_conv(torch, shape, link, kernel, source_values):
    images = torch.from_numpy(_writable_float64(_as_images(source_values, shape)))
    weight = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float64).reshape(
        kernel.shape[0], shape[0], link.kernel_size, link.kernel_size))
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, weight, stride=link.stride,
                                         padding=link.padding)
    return out.reshape(out.shape[0], -1).numpy()


def link_output(structure, link, kernel, source_values):
    """``link`` applied with ``kernel`` (n_out, width): shape (n_samples, n_out * positions),
    flattened in (channel, row, column) order, no intercept."""
    shape = structure.link_source_shape(link)
    source_values = pool_source(structure, link, source_values)
    torch = _imported_torch() if link.kind == "conv" else None
    if torch is not None:
        return _torch_conv(torch, shape, link, kernel, source_values)
    n_samples = source_values.shape[0]
    out = _patches(shape, link, source_values) @ kernel.T  # (n * positions, n_out)
    if link.kind != "conv":
        return out
    out_shape = _output_shape(structure, link, kernel.shape[0])
    return out.reshape(n_samples, out_shape[1] * out_shape[2], out_shape[0]) \
        .transpose(0, 2, 1).reshape(n_samples, -1)


def _avg_pool_matrix(shape, stage):
    """The sparse matrix of one average-pooling stage on a ``(C, H, W)`` source."""
    channels, height, width = shape
    out_h, out_w = pool_output_size(height, stage), pool_output_size(width, stage)
    c, oi, oj, di, dj = np.meshgrid(np.arange(channels), np.arange(out_h),
                                    np.arange(out_w), np.arange(stage.size),
                                    np.arange(stage.size), indexing="ij")
    row_in = oi * stage.stride - stage.padding + di
    col_in = oj * stage.stride - stage.padding + dj
    inside = (row_in >= 0) & (row_in < height) & (col_in >= 0) & (col_in < width)
    rows = (c * out_h + oi) * out_w + oj
    cols = (c * height + row_in) * width + col_in
    values = np.full(rows.shape, 1.0 / stage.size**2)
    return sp.csr_array(sp.coo_array(
        (values[inside], (rows[inside], cols[inside])),
        shape=(channels * out_h * out_w, channels * height * width)))


def _pools_matrix(structure, link):
    """The matrix of ``link``'s pooling stages (None when it has none); max
    pooling is not linear and has none."""
    if not link.pool:
        return None
    if any(stage.kind == "max" for stage in link.pool):
        raise ValueError(
            "a max-pooling stage is not a linear map, so this weight-shared model has "
            "no unrolled matrices (A_, B_, C_, D_); predict, equilibrium, to_torch, "
            "the certificates and persistence work on the blocks directly.")
    shape = structure.source_shape(link.source)
    matrix = None
    for stage in link.pool:
        step = _avg_pool_matrix(shape, stage)
        matrix = step if matrix is None else step @ matrix
        shape = pooled_shape(shape, (stage,))
    return matrix


def unroll_link(structure, link, kernel, n_out):
    """The sparse matrix of ``link``: (n_out * positions, source size)."""
    pools = _pools_matrix(structure, link)
    matrix = _unroll_map(structure.link_source_shape(link),
                         _output_shape(structure, link, n_out), link, kernel)
    return matrix if pools is None else sp.csr_array(matrix @ pools)


def _unroll_map(shape, out_shape, link, kernel):
    """The sparse matrix of ``link``'s map (no pools) from a source of ``shape``."""
    source_size = int(np.prod(shape))
    n_out = kernel.shape[0]
    if link.kind == "dense":
        return sp.csr_array(kernel)
    if link.kind == "pool":
        channels, height, width = shape
        area = height * width
        return sp.csr_array(np.repeat(kernel / area, area, axis=1))
    channels, height, width = shape
    out_h, out_w = out_shape[1:]
    size = link.kernel_size
    c_out, c_in, di, dj, oi, oj = np.meshgrid(
        np.arange(n_out), np.arange(channels), np.arange(size), np.arange(size),
        np.arange(out_h), np.arange(out_w), indexing="ij")
    row_in = oi * link.stride - link.padding + di
    col_in = oj * link.stride - link.padding + dj
    inside = (row_in >= 0) & (row_in < height) & (col_in >= 0) & (col_in < width)
    values = kernel.reshape(n_out, channels, size, size)[c_out, c_in, di, dj]
    keep = inside & (values != 0)
    rows = (c_out * out_h + oi) * out_w + oj
    cols = (c_in * height + row_in) * width + col_in
    matrix = sp.coo_array((values[keep], (rows[keep], cols[keep])),
                          shape=(n_out * out_h * out_w, source_size))
    return sp.csr_array(matrix)


def unroll(structure, kernels, head_kernels):
    """The flat implicit model ``(A, B, C, D)`` of a weight-shared one, as
    CSR arrays (``kernels[b][l]`` is the kernel of link ``l`` of block ``b``)."""
    offsets = block_offsets(structure)
    n_states = int(offsets[-1])
    n_features = int(np.prod(structure.input_shape))

    def assemble(links, link_kernels, n_out):
        state_parts, input_parts = [], []
        for link, kernel in zip(links, link_kernels):
            matrix = unroll_link(structure, link, kernel, n_out).tocoo()
            if link.source == INPUT:
                input_parts.append(matrix)
            else:
                state_parts.append(sp.coo_array(
                    (matrix.data, (matrix.row, matrix.col + offsets[link.source])),
                    shape=(matrix.shape[0], n_states)))
        n_rows = (state_parts + input_parts)[0].shape[0]
        state = sum(state_parts, sp.csr_array((n_rows, n_states)))
        inputs = sum(input_parts, sp.csr_array((n_rows, n_features)))
        return sp.csr_array(state), sp.csr_array(inputs)

    a_rows, b_rows = [], []
    for shape, links, link_kernels in zip(structure.block_shapes, structure.links,
                                          kernels):
        a_part, b_part = assemble(links, link_kernels, shape[0])
        a_rows.append(a_part)
        b_rows.append(b_part)
    A = sp.csr_array(sp.vstack(a_rows))
    B = sp.csr_array(sp.vstack(b_rows))
    C, D = assemble(structure.head, head_kernels, structure.n_outputs)
    for matrix in (A, B, C, D):
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
    return A, B, C, D
