"""Fitting and evaluating weight-shared (convolutional) SIM models.

The stages, each a plain function over arrays (the estimator orchestrates):

* :func:`fitting_structure` adds the optional lateral links to the
  teacher's chain and orders each block's links (state sources first: those
  columns carry the ``kappa`` bound);
* :func:`block_scales` gives the per-block state scales that make the
  teacher's own kernels satisfy the bound (ReLU is positively homogeneous);
* :func:`accumulate_block_problems` reduces batches of teacher states to one
  :class:`~sksim.design.GramProblem` per block (patches of the sources,
  optionally a random subset of positions per image);
* :func:`solve_block_rows` solves every block's rows with
  :func:`~sksim.solvers.solve_rows` and splits them into kernels;
* :func:`block_equilibrium` computes the model's states block by block
  (convolutions as im2col + GEMM), iterating within a block that has a
  lateral link, with the residual certificate of the flat model.
"""

from itertools import pairwise
from typing import NamedTuple

import numpy as np

from .blocks import (
    INPUT,
    Link,
    Structure,
    link_output,
    link_patches,
    link_width,
    n_positions,
    per_state,
)
from .channels import channel_rows, link_groups
from .design import _PART_ROWS, GramAccumulator, add_parts
from .solvers import solve_rows

# Rows of design per block and sub-batch on a device: ~128 MiB of float64.
_DESIGN_BYTES = 128 * 2**20


class SharedModel(NamedTuple):
    """A fitted weight-shared model: ``kernels[b][l]`` (n_out_b, width_l) is the
    kernel of link ``l`` of block ``b``, ``intercepts[b]`` its per-channel
    intercept; ``head_kernels``/``head_intercept`` the same for the outputs."""

    structure: Structure
    kernels: list
    intercepts: list
    head_kernels: list
    head_intercept: np.ndarray


def _is_spatial(shape):
    return len(shape) == 3


def _skip_stride(source_shape, shape):
    """The stride of a 3 x 3, padding-1 convolution from ``source_shape`` onto
    ``shape``'s resolution, or None if there is none (coarser source)."""
    height, width = source_shape[1:]
    for stride in range(1, height + 1):
        if ((height - 1) // stride + 1, (width - 1) // stride + 1) == tuple(shape[1:]):
            return stride
    return None


def _skip_links(teacher, index, n_links):
    """Up to ``n_links`` 3 x 3 skip links into spatial block ``index`` from
    the nearest earlier spatial blocks of equal or finer resolution that it
    does not already read."""
    shape = teacher.block_shapes[index]
    read = {link.source for link in teacher.links[index]}
    links = []
    for source in range(index - 1, -1, -1):
        source_shape = teacher.block_shapes[source]
        if len(links) == n_links:
            break
        if source in read or not _is_spatial(source_shape):
            continue
        stride = _skip_stride(source_shape, shape)
        if stride is not None:
            links.append(Link(source, "conv", 3, stride, 1))
    return links


def fitting_structure(teacher, lateral_kernel=None, n_outputs=None, skip_links=0):
    """The structure to fit: the teacher's links, plus a same-resolution
    ``lateral_kernel`` x ``lateral_kernel`` convolution of each spatial block
    on itself when given, plus up to ``skip_links`` links into each spatial
    block from earlier blocks (:func:`_skip_links`); state links first in
    every block; ``n_outputs`` output rows (the width of the targets;
    default the teacher's)."""
    links = []
    for index, (shape, block_links) in enumerate(zip(teacher.block_shapes,
                                                     teacher.links)):
        block_links = list(block_links)
        if skip_links and _is_spatial(shape):
            block_links += _skip_links(teacher, index, skip_links)
        if lateral_kernel and _is_spatial(shape):
            block_links.append(Link(index, "conv", lateral_kernel, 1,
                                    (lateral_kernel - 1) // 2))
        block_links.sort(key=lambda link: link.source == INPUT)
        links.append(tuple(block_links))
    return teacher._replace(links=tuple(links),
                            n_outputs=teacher.n_outputs if n_outputs is None else n_outputs)


def block_scales(structure, teacher_kernels, kappa):
    """Per-block state scales that make the teacher's own kernels satisfy the
    bound: block ``b`` reading state sources ``j`` (scales ``s_j``) through
    teacher kernels ``K_l`` gets ``s_b = s_ref * min(1, kappa / r)``, with
    ``s_ref = min_j s_j`` and ``r`` the largest row L1 norm of the state
    part in units of ``s_ref`` (``sum_l |K_l| s_ref / s_j``); a block
    reading only the input has ``s = 1``. For a chain this is ``s_b =
    s_{b-1} min(1, kappa / ||K_b||_row)``. The rescaled activations are
    ``s phi(z / s)`` (:func:`scaled_structure`), so the teacher's outputs do
    not change."""
    scales = np.ones(len(structure.block_shapes))
    for index, (links, kernels) in enumerate(zip(structure.links, teacher_kernels)):
        state = [(link, kernel) for link, kernel in zip(links, kernels)
                 if link.source != INPUT]
        if not state:
            continue
        reference = min(scales[link.source] for link, _ in state)
        row_norm = _row_sums([(kernel, reference / scales[link.source])
                              for link, kernel in state]).max(initial=0.0)
        ratio = 1.0 if row_norm <= kappa else kappa / row_norm
        scales[index] = reference * ratio
    return scales


def _row_sums(weighted_kernels):
    """Row L1 sums of ``sum_l factor_l |K_l|`` over ``(K_l, factor_l)``."""
    return sum(np.abs(kernel).sum(axis=1) * factor for kernel, factor in weighted_kernels)


def scaled_structure(structure, scales):
    """``structure`` with each block's activation in its scaled units,
    ``s phi(z / s)`` (unchanged for ReLU and LeakyReLU)."""
    if not structure.activations:
        return structure
    return structure._replace(activations=tuple(
        activation.scaled(scale) for activation, scale in zip(structure.activations,
                                                                scales)))


def _unit_change(scales, scale, link):
    """The factor taking a teacher kernel on ``link`` into a block of scale
    ``scale`` to the rescaled units: ``s_b / s_a`` (the input and the
    outputs have scale 1)."""
    return scale / (1.0 if link.source == INPUT else scales[link.source])


def teacher_row_norms(teacher, scales):
    """Largest row L1 norm of each block's teacher kernels in the rescaled
    units (:func:`_unit_change`): one per block, then one for the output
    rows."""
    structure = teacher.structure
    targets = [*zip(structure.links, teacher.kernels, scales),
               (structure.head, teacher.head_kernels, 1.0)]
    return np.array([
        _row_sums([(kernel, _unit_change(scales, scale, link))
                   for link, kernel in zip(links, kernels)]).max(initial=0.0)
        for links, kernels, scale in targets])


# Relative size of the smallest teacher entry an adaptive weight uses: a
# column the teacher does not read (a fitted shortcut's off-diagonal, a skip or
# lateral link) pays (1 / _ADAPTIVE_FLOOR) ** gamma times the penalty.
_ADAPTIVE_FLOOR = 1e-3


def adaptive_l1_factors(teacher, structure, scales, index, gamma):
    """Adaptive L1 factors (Zou 2006) of the rows of block ``index`` (``None``:
    the output rows) of ``structure`` (the fitted links, a superset of the
    teacher's): row ``i`` pays ``(|K_ij| / rms(K_i) + floor) ** -gamma`` on
    column ``j``, with ``K`` the teacher's kernels in the rescaled units
    (:func:`teacher_row_norms`) and zero on links the teacher lacks; rows
    the teacher leaves empty, and output rows that are not the teacher's,
    pay 1. Returns an array of shape (n_rows, n_columns)."""
    if index is None:
        links, teacher_links = structure.head, teacher.structure.head
        kernels, scale = teacher.head_kernels, 1.0
        n_rows = structure.n_outputs
    else:
        links, teacher_links = structure.links[index], teacher.structure.links[index]
        kernels, scale = teacher.kernels[index], scales[index]
        n_rows = structure.block_shapes[index][0]
    own = dict(zip(teacher_links, kernels))
    widths = [link_width(structure, link) for link in links]
    if any(kernel.shape[0] != n_rows for kernel in kernels):
        return np.ones((n_rows, sum(widths)))
    magnitude = np.hstack([np.abs(own[link]) * _unit_change(scales, scale, link)
                           if link in own else np.zeros((n_rows, width))
                           for link, width in zip(links, widths)])
    rms = np.sqrt(np.mean(magnitude ** 2, axis=1, keepdims=True))
    factors = np.ones_like(magnitude)
    read = rms[:, 0] > 0
    factors[read] = (magnitude[read] / rms[read] + _ADAPTIVE_FLOOR) ** -float(gamma)
    return factors


def _sources(X, post_activations, link):
    return X if link.source == INPUT else post_activations[link.source]


def _block_rows(structure, index, X, post_activations, positions):
    """Design rows of block ``index`` (state links first, as in its links), float64."""
    links = structure.links[index]
    edges = np.cumsum([0] + [link_width(structure, link) for link in links])
    n_rows = X.shape[0] * (n_positions(structure.block_shapes[index])
                           if positions is None else positions.shape[1])
    design = np.empty((n_rows, edges[-1]))
    for link, start, stop in zip(links, edges[:-1], edges[1:]):
        link_patches(structure, link, _sources(X, post_activations, link), positions,
                     out=design[:, start:stop])
    return design


def _block_targets(shape, values, positions):
    """Per-position targets (n * k, channels) of a block's flattened values."""
    n = values.shape[0]
    if not _is_spatial(shape):
        return values
    per_position = values.reshape(n, shape[0], -1).transpose(0, 2, 1)
    if positions is not None:
        per_position = per_position[np.arange(n)[:, None], positions]
    return per_position.reshape(-1, shape[0])


def _sub_batches(n_samples, rows_per_sample, width):
    step = max(1, _DESIGN_BYTES // (8 * max(1, rows_per_sample * width)))
    return [slice(start, min(start + step, n_samples))
            for start in range(0, n_samples, step)]


def _choose_positions(rng, n_samples, shape, positions_per_image):
    if positions_per_image is None or not _is_spatial(shape):
        return None
    total = n_positions(shape)
    if positions_per_image >= total:
        return None
    keys = rng.random((n_samples, total))
    return np.sort(np.argpartition(keys, positions_per_image, axis=1)
                   [:, :positions_per_image], axis=1)


class HostDesigns:
    """Blocks' design rows and targets as float64 numpy arrays, reduced a
    part of about ``design._PART_ROWS`` rows (whole samples) at a time
    (:func:`sksim.design.add_parts`): each part's rows are written, centred
    and multiplied while in cache, where building a whole sub-batch's design
    first cost as much as half its Gram products (the writes and the
    centring, memory-bound). See :class:`sksim.device_reduce.DeviceDesigns`
    for the same on a torch device."""

    def tensor(self, array):
        return array

    def scaled(self, pre_activations, scale):
        return pre_activations * scale

    def activated(self, activation, pre_activations):
        return activation(pre_activations)

    def accumulator(self, n_columns, n_targets, fit_intercept):
        return GramAccumulator(n_columns, n_targets, fit_intercept)

    def to_host(self, accumulator):
        return accumulator

    def accumulate(self, accumulator, structure, index, X, post_activations, targets,
                   positions):
        """Add block ``index``'s rows of the samples ``X`` (their sources'
        ``post_activations`` and the block's scaled ``targets``, flattened)."""
        shape = structure.block_shapes[index]
        per_sample = n_positions(shape) if positions is None else positions.shape[1]
        step = max(1, _PART_ROWS // per_sample)
        starts = range(0, X.shape[0], step)

        def part(k):
            samples = slice(starts[k], starts[k] + step)
            kept = None if positions is None else positions[samples]
            design = _block_rows(structure, index, X[samples],
                                 {b: p[samples] for b, p in post_activations.items()}, kept)
            return design, _block_targets(shape, targets[samples], kept)

        add_parts(accumulator, len(starts), part)


def accumulate_block_problems(structure, batches, scales, *, fit_intercept,
                              positions_per_image=None, random_state=None,
                              blocks=None, model=None, finish=True, device=None,
                              model_states=None):
    """One :class:`~sksim.design.GramProblem` per block from teacher batches.

    Parameters
    ----------
    batches : iterable of (X_batch, pre_activations[, target_pre_activations])
        ``X_batch`` (n, n_features) and the list of each block's recorded
        pre-activations (n, block size), unscaled, from which the designs are
        built; the targets are ``target_pre_activations`` when given (the
        clean run of a perturbed fit, see :mod:`sksim.perturbation`), else
        ``pre_activations``.
    scales : ndarray of shape (n_blocks,)
    positions_per_image : int or None
        Output positions of each spatial block kept per image (drawn at
        random per image); ``None`` keeps all.
    blocks : list of int, default=None
        The blocks to reduce (all by default).
    model : SharedModel, default=None
        When given (fitted for the blocks before those reduced), the designs
        read this model's own states of the earlier blocks instead of the
        teacher's, while the targets stay the teacher's.
    finish : bool, default=True
        Return the GramProblems; False returns the GramAccumulators (to be
        merged with other chunks' first, see :mod:`sksim.streaming`).
    model_states : ModelStates, default=None
        The same as ``model``, from the model's states stored for the rows of
        X (the batches cover them in order, unperturbed): the earlier blocks'
        forward pass is not rerun.
    device : torch.device, default=None
        Build the designs and accumulate the sums with torch on this device
        (:mod:`sksim.device_reduce`); ``None`` uses numpy on the host. The
        positions drawn are the same either way.
    """
    rng = np.random.default_rng(random_state)
    blocks = range(len(structure.block_shapes)) if blocks is None else blocks
    widths = {b: sum(link_width(structure, link) for link in structure.links[b])
              for b in blocks}
    if device is None:
        designs = HostDesigns()
    else:
        import torch

        from .device_reduce import DeviceDesigns
        designs = DeviceDesigns(torch, device)
    accumulators = {b: designs.accumulator(widths[b], structure.block_shapes[b][0],
                                           fit_intercept) for b in blocks}
    # only the sources of the blocks reduced are activated (a fit on the
    # model's own states reduces one block per pass over the data)
    read = sorted({link.source for b in blocks for link in structure.links[b]
                   if link.source != INPUT})
    row = 0  # of the batches, which cover X in order (model_states)
    for X_batch, pre_activations, *target_pre in batches:
        n = X_batch.shape[0]
        post = {}
        if model is not None:
            post.update(enumerate(designs.tensor(p) for p in block_equilibrium(
                model, X_batch, tol=0.0, max_iter=1)[0]))
        elif model_states is not None:
            post.update((b, designs.tensor(states))
                        for b, states in model_states.rows(row, row + n).items())
        row += n
        missing = [b for b in read if b not in post]
        scaled = {b: designs.scaled(pre_activations[b], scales[b])
                  for b in {*missing, *([] if target_pre else blocks)}}
        post.update((b, designs.activated(structure.activation(b), scaled[b]))
                    for b in missing)
        X_values = designs.tensor(X_batch)
        for index in blocks:
            shape = structure.block_shapes[index]
            target = designs.scaled(target_pre[0][index], scales[index]) if target_pre \
                else scaled[index]
            kept = n_positions(shape) if positions_per_image is None else \
                min(n_positions(shape), positions_per_image)
            for part in _sub_batches(n, kept, widths[index]):
                positions = _choose_positions(rng, part.stop - part.start, shape,
                                              positions_per_image)
                designs.accumulate(accumulators[index], structure, index, X_values[part],
                                   {b: p[part] for b, p in post.items()}, target[part],
                                   positions)
    accumulators = [designs.to_host(accumulators[b]) for b in blocks]
    return [a.finish() for a in accumulators] if finish else accumulators


def activated(structure, pre_activations):
    """Each block's activation applied to its (scaled) pre-activations."""
    return [structure.activation(b)(z) for b, z in enumerate(pre_activations)]


def truncated(model, n_blocks):
    """The model of its first ``n_blocks`` blocks (no outputs)."""
    structure = model.structure._replace(
        block_shapes=model.structure.block_shapes[:n_blocks],
        links=model.structure.links[:n_blocks], head=(), n_outputs=0,
        activations=model.structure.activations[:n_blocks])
    return SharedModel(structure, model.kernels[:n_blocks], model.intercepts[:n_blocks],
                       [], np.zeros(0))


def penalty_scale(problem):
    """RMS of a block's targets times RMS of its design columns: a block
    whose states and sources are rescaled by ``t`` and ``a`` has its
    solution rescaled by ``t / a`` when its penalty scales by this factor,
    so ``alpha`` means the same for every block whatever its state scale."""
    target = np.sqrt(np.mean(problem.target_sq)) if problem.target_sq.size else 0.0
    design = np.sqrt(np.mean(np.diag(problem.gram))) if problem.gram.size else 0.0
    return float(target * design) if target * design > 0 else 1.0


def block_penalty(problem, shape, mode):
    """The factor on ``alpha`` of a block of ``shape`` (the outputs: a flat
    shape): 1 (``"absolute"``), :func:`penalty_scale` (``"relative"``), or
    that divided by the square root of the block's output positions per
    image (``"positions"``): a kernel entry of a high-resolution block is
    used at many positions and its errors pass through every later block,
    so those blocks keep relatively more entries."""
    if mode == "absolute":
        return 1.0
    scale = penalty_scale(problem)
    return scale / np.sqrt(n_positions(shape)) if mode == "positions" else scale


def solve_block_rows(structure, links_of_rows, problem, *, alpha, l1_ratio, kappa,
                     row_bound, tol, max_iter, relax=1.0, solver="cd", bounded=True,
                     l1_factors=None, penalty="l1"):
    """Solve one block's rows; returns (kernels per link, intercept, RowSolution).
    ``l1_factors`` (n_rows, n_columns): adaptive L1 weights, as in
    :func:`sksim.solvers.solve_rows`. ``penalty="channel"``: the rows
    together, one group per channel of a state source
    (:func:`sksim.channels.link_groups`)."""
    widths = [link_width(structure, link) for link in links_of_rows]
    n_bounded = sum(w for w, link in zip(widths, links_of_rows)
                    if link.source != INPUT) if bounded else 0

    def solve(gram, correlations, target_sq, n_bounded, alpha=alpha, relax=relax,
              l1_factors=l1_factors):
        return solve_rows(gram, correlations, target_sq, n_bounded=n_bounded,
                          bound=kappa if n_bounded else np.inf, row_bound=row_bound,
                          l1=alpha * l1_ratio, l2=alpha * (1.0 - l1_ratio), tol=tol,
                          max_iter=max_iter, relax=relax, solver=solver,
                          l1_factors=l1_factors)

    problem_rows = (problem.gram, problem.correlations, problem.target_sq)
    if penalty == "channel":
        rows = channel_rows(problem_rows, link_groups(structure, links_of_rows),
                            alpha=alpha, l1_ratio=l1_ratio, n_bounded=n_bounded,
                            bound=kappa if n_bounded else np.inf, tol=tol,
                            max_iter=max_iter, relax=relax, solve=solve,
                            l1_factors=l1_factors)
    else:
        rows = solve(*problem_rows, n_bounded)
    edges = np.concatenate([[0], np.cumsum(widths)])
    kernels = [np.ascontiguousarray(rows.coef[:, a:b]) for a, b in pairwise(edges)]
    intercept = problem.target_mean - rows.coef @ problem.design_mean
    return kernels, intercept, rows


def block_equilibrium(model, X, *, tol, max_iter):
    """States, residuals and iterations of ``x = relu(A x + B u + b)``.

    Blocks are solved in order (every link reads the input, an earlier block
    or the block itself). A block without a lateral link is exact in one
    pass; one with a lateral link iterates ``x_b <- relu(drive + K x_b)``, a
    contraction (the state part of each kernel row has L1 norm ``<= kappa``),
    until its fixed-point residual is at most ``tol * max(1, ||x||_inf)``.

    Returns
    -------
    states : list of ndarray of shape (n_samples, block size)
        Each block's states (``np.hstack`` gives the flattened states; the
        outputs need only the blocks the head reads).
    residual : ndarray of shape (n_samples,)
        ``||x - relu(A x + B u + b)||_inf`` per sample.
    n_iter : int
        Largest number of passes over a block.
    """
    post = []
    residual = np.zeros(X.shape[0])
    n_iter = 1
    for index in range(len(model.structure.block_shapes)):
        states, block_residual, block_iter = block_states(model, index, X, post,
                                                          tol=tol, max_iter=max_iter)
        residual = np.maximum(residual, block_residual)
        n_iter = max(n_iter, block_iter)
        post.append(states)
    return post, residual, n_iter


def block_states(model, index, X, post, *, tol, max_iter):
    """Block ``index``'s states, residuals and passes (as :func:`block_equilibrium`)
    from the inputs ``X`` and the states ``post[b]`` of the earlier blocks it
    reads (a list or a dict by block)."""
    structure = model.structure
    n = X.shape[0]
    shape, links = structure.block_shapes[index], structure.links[index]
    drive = np.broadcast_to(per_state(model.intercepts[index], shape),
                            (n, int(np.prod(shape)))).copy()
    lateral = []
    for link, kernel in zip(links, model.kernels[index]):
        if link.source == index:
            lateral.append((link, kernel))
        else:
            drive += link_output(structure, link, kernel, _sources(X, post, link))
    activation = structure.activation(index)
    states = activation(drive)
    residual = np.zeros(n)
    n_iter = 1
    if lateral:
        for sweep in range(1, max_iter + 1):
            update = drive.copy()
            for link, kernel in lateral:
                update += link_output(structure, link, kernel, states)
            update = activation(update)
            change = np.abs(update - states).max(axis=1)
            scale = np.maximum(1.0, np.abs(update).max(axis=1))
            states = update
            n_iter = max(n_iter, sweep)
            if np.all(change <= tol * scale):
                break
        # the certificate of the returned states: one more evaluation
        check = drive.copy()
        for link, kernel in lateral:
            check += link_output(structure, link, kernel, states)
        residual = np.abs(activation(check) - states).max(axis=1)
    return states, residual, n_iter


class ModelStates:
    """A feed-forward model's own states of the blocks that blocks still to
    be fitted read, on every row of ``X``, for ``state_inputs="model"``: each
    block's are computed once, after it is fitted, from its sources' stored
    states, and dropped once no later block reads them (instead of the
    model's forward pass through every earlier block for each block).

    Parameters
    ----------
    structure : Structure
    X : ndarray of shape (n_samples, n_features)
        The rows the reduction's batches cover, in the same order.
    """

    def __init__(self, structure, X):
        self.X, self.states = X, {}
        self.last_reader = last_readers(structure)

    @staticmethod
    def peak_bytes(structure, n_samples):
        """The most bytes the stored states take at once."""
        last, sizes = last_readers(structure), structure.block_sizes()
        return max((8 * n_samples * sum(sizes[b] for b in range(index + 1)
                                        if last[b] > index)
                    for index in range(len(sizes))), default=0)

    def add(self, model, index):
        """Store block ``index``'s states under ``model`` (fitted up to it) if
        a later block reads them; drop the states no block after it reads."""
        if self.last_reader[index] > index:
            rows = _sub_batches(self.X.shape[0], 1, self.X.shape[1]
                                + int(np.prod(model.structure.block_shapes[index])))
            self.states[index] = np.vstack([block_states(
                model, index, np.asarray(self.X[part], dtype=np.float64),
                {b: s[part] for b, s in self.states.items()}, tol=0.0, max_iter=1)[0]
                for part in rows])
        for block in [b for b in self.states if self.last_reader[b] <= index]:
            del self.states[block]

    def rows(self, start, stop):
        """The stored states of rows ``start:stop`` of ``X``, by block."""
        return {b: s[start:stop] for b, s in self.states.items()}


def last_readers(structure):
    """For each block, the last block that reads it (``len(blocks)``: the
    outputs; -1: none)."""
    last = np.full(len(structure.block_shapes), -1)
    for index, links in enumerate(structure.links):
        for link in links:
            if link.source != INPUT:
                last[link.source] = max(last[link.source], index)
    for link in structure.head:
        if link.source != INPUT:
            last[link.source] = len(structure.block_shapes)
    return last


def head_design(structure, X, post):
    return np.hstack([link_patches(structure, link, _sources(X, post, link))
                      for link in structure.head])


def head_design_on(structure, scales, model, X, pre_activations, *, tol, max_iter):
    """The output rows' design on the rows ``X``: on ``model``'s own states
    (solved to ``tol`` within ``max_iter`` sweeps), or on the teacher's
    ``pre_activations`` scaled by ``scales`` and activated when ``model`` is
    None."""
    X = np.asarray(X, dtype=np.float64)
    if model is None:
        post = activated(structure, [z * s for z, s in zip(pre_activations, scales)])
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            post = block_equilibrium(model, X, tol=tol, max_iter=max_iter)[0]
    return head_design(structure, X, post)


def head_outputs(model, X, post):
    """Outputs (n, n_outputs) of ``model`` from its states ``post`` (a list of
    per-block arrays, as :func:`block_equilibrium` returns them)."""
    return (head_design(model.structure, X, post) @ np.hstack(model.head_kernels).T
            + model.head_intercept)


def count_parameters(model):
    """Nonzero kernel entries (shared parameters, not unrolled copies)."""
    kernels = [k for block in model.kernels for k in block] + list(model.head_kernels)
    return int(sum(np.count_nonzero(k) for k in kernels))


def _abs_model(model):
    """The model of absolute kernels, no intercepts and ReLU everywhere: on a
    nonnegative input it bounds how far a perturbation of the input can move
    each state (every activation is 1-Lipschitz, max pooling is
    non-expansive: ``|max a - max b| <= max |a - b|``)."""
    return SharedModel(model.structure._replace(activations=()),
                       [[np.abs(k) for k in block] for block in model.kernels],
                       [np.zeros_like(b) for b in model.intercepts],
                       [np.abs(k) for k in model.head_kernels],
                       np.zeros_like(model.head_intercept))


def _abs_row_sums(structure, links, kernels):
    """Row L1 sums of the unrolled state and input parts of ``links``: each
    |kernel| applied to an all-ones source sums exactly the in-bound taps."""
    state = inputs = 0.0
    for link, kernel in zip(links, kernels):
        ones = np.ones((1, int(np.prod(structure.source_shape(link.source)))))
        sums = link_output(structure, link, np.abs(kernel), ones)[0]
        if link.source == INPUT:
            inputs = inputs + sums
        else:
            state = state + sums
    return np.max(state, initial=0.0), np.max(inputs, initial=0.0)


def unrolled_norms(model):
    """``(||A||_inf, ||B||_inf, ||C||_inf, ||D||_inf)`` of the unrolled model,
    computed from the kernels without unrolling."""
    structure = model.structure
    a_norm = b_norm = 0.0
    for links, kernels in zip(structure.links, model.kernels):
        state, inputs = _abs_row_sums(structure, links, kernels)
        a_norm, b_norm = max(a_norm, state), max(b_norm, inputs)
    c_norm, d_norm = _abs_row_sums(structure, structure.head, model.head_kernels)
    return float(a_norm), float(b_norm), float(c_norm), float(d_norm)


def path_bound(model):
    """``|| |C| (I - |A|)^-1 |B| + |D| ||_inf`` without unrolling: the row
    sums are the outputs of the model with absolute kernels and no
    intercepts at the all-ones input (every quantity is nonnegative, so the
    ReLUs are the identity and the equilibrium is ``(I - |A|)^-1 |B| 1``)."""
    absolute = _abs_model(model)
    ones = np.ones((1, int(np.prod(model.structure.input_shape))))
    states, _, _ = block_equilibrium(absolute, ones, tol=1e-14, max_iter=100_000)
    return float(head_outputs(absolute, ones, states).max(initial=0.0))
