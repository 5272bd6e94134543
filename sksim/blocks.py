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

INPUT = -1
LINK_KINDS = ("conv", "dense", "pool")


class Link(NamedTuple):
    """One affine map into a block, from ``source`` (``-1``: the input)."""

    source: int
    kind: str
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0


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
    """

    input_shape: tuple
    block_shapes: tuple
    links: tuple
    head: tuple
    n_outputs: int

    def source_shape(self, source):
        return self.input_shape if source == INPUT else self.block_shapes[source]

    def block_sizes(self):
        return [int(np.prod(shape)) for shape in self.block_shapes]

    def n_states(self):
        return sum(self.block_sizes())


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
    shape = structure.source_shape(link.source)
    if link.kind == "conv":
        return shape[0] * link.kernel_size**2
    if link.kind == "pool":
        return shape[0]
    return int(np.prod(shape))


def _output_shape(structure, link, n_out):
    """Shape of the block ``link`` produces with ``n_out`` channels/units."""
    shape = structure.source_shape(link.source)
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
            if link.kind in ("conv", "pool") and len(source) != 3:
                raise ValueError(f"a {link.kind} link of block {index} needs a spatial "
                                 f"source; source {link.source} has shape {source}")
            produced = _output_shape(structure, link, shape[0])
            if tuple(produced) != tuple(shape):
                raise ValueError(f"a link of block {index} produces shape {produced}, "
                                 f"not the block's shape {shape}")


def _as_images(values, shape):
    return values.reshape((values.shape[0],) + tuple(shape))


def link_patches(structure, link, source_values, positions=None):
    """Design rows of ``link``: one per (sample, output position).

    Parameters
    ----------
    source_values : ndarray of shape (n_samples, source size)
        Post-activations (or inputs) of the link's source, flattened.
    positions : ndarray of int of shape (n_samples, k), default=None
        Output positions (flat indices) kept for each sample; ``None`` keeps all.

    Returns
    -------
    patches : ndarray of shape (n_samples * n_positions, link width)
        Rows ordered sample-major; columns in the kernel's (channel, row, column) order.
    """
    shape = structure.source_shape(link.source)
    n_samples = source_values.shape[0]
    if link.kind == "dense":
        return source_values.reshape(n_samples, -1)
    images = _as_images(source_values, shape)
    if link.kind == "pool":
        return images.mean(axis=(2, 3))
    pad, size, stride = link.padding, link.kernel_size, link.stride
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]  # (n, C, H_out, W_out, k, k)
    n_positions = windows.shape[2] * windows.shape[3]
    windows = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n_samples, n_positions, -1)
    if positions is not None:
        windows = windows[np.arange(n_samples)[:, None], positions]
    return windows.reshape(-1, windows.shape[-1])


def _torch_conv(structure, link, kernel, source_values):
    """The convolution by torch's float64 ``conv2d`` (a few times faster than
    im2col + GEMM in numpy), used when the caller has already imported torch
    (a TorchBaseline teacher or to_torch): sksim never imports it for this."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "nn"):
        return None
    shape = structure.source_shape(link.source)
    images = np.ascontiguousarray(_as_images(source_values, shape), dtype=np.float64)
    if not images.flags.writeable:  # a read-only memmap's batch: torch needs a copy
        images = images.copy()
    images = torch.from_numpy(images)
    weight = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float64).reshape(
        kernel.shape[0], shape[0], link.kernel_size, link.kernel_size))
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, weight, stride=link.stride,
                                         padding=link.padding)
    return out.reshape(out.shape[0], -1).numpy()


def link_output(structure, link, kernel, source_values):
    """``link`` applied with ``kernel`` (n_out, width): shape (n_samples, n_out * positions),
    flattened in (channel, row, column) order, no intercept."""
    if link.kind == "conv":
        out = _torch_conv(structure, link, kernel, source_values)
        if out is not None:
            return out
    patches = link_patches(structure, link, source_values)
    n_samples = source_values.shape[0]
    out = patches @ kernel.T  # (n_samples * n_positions, n_out)
    if link.kind != "conv":
        return out
    shape = _output_shape(structure, link, kernel.shape[0])
    return out.reshape(n_samples, shape[1] * shape[2], shape[0]).transpose(0, 2, 1) \
        .reshape(n_samples, -1)


def unroll_link(structure, link, kernel, n_out):
    """The sparse matrix of ``link``: (n_out * positions, source size)."""
    shape = structure.source_shape(link.source)
    source_size = int(np.prod(shape))
    if link.kind == "dense":
        return sp.csr_array(kernel)
    if link.kind == "pool":
        channels, height, width = shape
        area = height * width
        return sp.csr_array(np.repeat(kernel / area, area, axis=1))
    channels, height, width = shape
    out_h, out_w = _output_shape(structure, link, n_out)[1:]
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
