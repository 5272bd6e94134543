"""``penalty="channel"``: the rows of a block solved together under one
group penalty per state channel they read, so that whole channels (hidden
units of a flat block) go.

A block's design columns are grouped by the state channel they read:

* a flat block (:func:`state_groups`): each state column is its own group,
  an entry in every row of the block;
* a weight-shared block (:func:`link_groups`): a group is one channel of one
  source block, every column reading it in every row of the block: the
  ``k x k`` taps of a ``conv`` link, the one column of a ``pool`` link, the
  ``H W`` columns of a ``dense`` link from a spatial source (all links of the
  block from that source together).

The inputs' columns keep the plain L1 penalty (with ``adaptive_l1``, every
entry also pays its adaptive L1 weight). Group ``g`` of ``n_g``
entries (``n_rows`` rows times its columns) weighs ``alpha * sqrt(n_g)``
(Yuan & Lin 2006): on ``n_g`` equal entries, the L1 norm is ``sqrt(n_g)``
times the Frobenius norm, so the group penalty of a dense group equals the
L1 penalty it replaces. The problem and its certified solver are in
:mod:`sksim.solvers.groups`. The groups are per block: a channel that two
blocks read is a group in each, and it goes when no block reads it (the
plain export, :mod:`sksim.plain_export`, then removes it with its row).
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .blocks import INPUT, link_width
from .solvers import RowSolution, stack_rows
from .solvers.groups import solve_group_rows


def state_groups(n_grouped, n_columns):
    """Groups of a flat block: each of the first ``n_grouped`` columns (the
    states) its own group, the rest (the inputs) in none. Returns
    ``(group_of, group_columns)``: each column's group id (-1: none) and the
    number of columns of each group."""
    group_of = np.r_[np.arange(n_grouped), np.full(n_columns - n_grouped, -1)]
    return group_of, np.ones(n_grouped, dtype=np.int64)


def link_groups(structure, links):
    """Groups of a weight-shared block whose rows read ``links``: one per
    channel of each state source (the module's docstring). Returns
    ``(group_of, group_columns)`` as :func:`state_groups`."""
    ids, pieces = {}, []
    for link in links:
        width = link_width(structure, link)
        if link.source == INPUT:
            pieces.append(np.full(width, -1))
            continue
        n_channels = structure.link_source_shape(link)[0]
        keys = np.array([ids.setdefault((link.source, c), len(ids))
                         for c in range(n_channels)])
        # the columns of a link are in the kernel's (channel, ...) order
        pieces.append(np.repeat(keys, width // n_channels))
    group_of = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return group_of, np.bincount(group_of[group_of >= 0], minlength=len(ids))


def channel_rows(problem, groups, *, alpha, l1_ratio, n_bounded, bound, tol, max_iter,
                 relax, solve, l1_factors=None):
    """The rows of ``problem`` (a Gram matrix, the rows' correlations and
    target energies) solved together under the group penalty of ``groups``
    (``(group_of, group_columns)``, :func:`link_groups`), the ungrouped
    columns under the L1 weight ``alpha * l1_ratio``, a ridge of ``alpha *
    (1 - l1_ratio)`` on all, the first ``n_bounded`` columns of each row
    within ``bound``. With ``relax < 1`` the rows are then refitted one by
    one on the columns of the groups kept and the ungrouped columns some row
    uses, by the plain row problems at ``relax * alpha``: ``solve(gram, correlations,
    target_sq, n_bounded, alpha=..., relax=1.0)``, the caller's row solver
    (``solve(gram, correlations, target_sq, n_bounded)`` at its own penalty
    solves a block without state columns). The group penalty picks the
    channels, ``relax * alpha`` how much their rows are shrunk (the channel
    pruning recipe of a group Lasso, then least squares, as ``relax``
    approaches 0). With ``l1_factors`` (n_rows, n_columns; ``adaptive_l1``)
    every entry, grouped or not, also pays the L1 weight ``alpha * l1_ratio
    * l1_factors[i, j]`` (a sparse-group penalty: the groups pick channels,
    the adaptive weights the entries within them), and the refit passes the
    kept columns' factors on, ``solve(..., l1_factors=...)``. Returns a
    full-width RowSolution."""
    gram, corr, target_sq = problem
    group_of, group_columns = groups
    if group_columns.size == 0:  # no state column: the plain rows
        return solve(gram, corr, target_sq, n_bounded)
    n_rows, n_columns = corr.shape
    grouped = group_of >= 0
    if l1_factors is None:
        l1 = np.broadcast_to(np.where(grouped, 0.0, alpha * l1_ratio), corr.shape)
    else:
        l1 = alpha * l1_ratio * np.asarray(l1_factors, dtype=np.float64)
    ridged = gram + alpha * (1.0 - l1_ratio) * np.eye(n_columns)
    group_l1 = alpha * np.sqrt(n_rows * group_columns)
    solution = solve_group_rows(ridged, corr, target_sq, group_of=group_of,
                                group_l1=group_l1, l1=l1, n_bounded=n_bounded,
                                bound=bound, tol=tol, max_iter=max_iter)
    if relax == 1.0:
        return _row_solution(solution, ridged, corr, target_sq, l1, groups, group_l1)
    used = np.any(solution.coef != 0, axis=0)
    kept_groups = np.unique(group_of[grouped & used])
    if solution.status != 0:
        warnings.warn(
            f"The channel selection of {n_rows} rows reached the relative duality gap "
            f"{solution.duality_gap / max(solution.objective, 1e-300):.3e}, not "
            f"tol={tol:g}, within max_iter={max_iter} sweeps: the kept channels "
            f"({kept_groups.size} of {group_columns.size}) may differ from the optimum's; "
            "the rows refitted on them are certified as usual. Increase max_iter or tol.",
            ConvergenceWarning)
    # the kept channels whole, and the ungrouped columns the L1 penalty kept
    kept = np.flatnonzero((~grouped & used) | np.isin(group_of, kept_groups))
    options = {} if l1_factors is None else {
        "l1_factors": np.ascontiguousarray(l1_factors[:, kept])}
    part = solve(np.ascontiguousarray(gram[np.ix_(kept, kept)]),
                 np.ascontiguousarray(corr[:, kept]), target_sq,
                 int(np.sum(kept < n_bounded)), alpha=relax * alpha, relax=1.0, **options)
    return stack_rows([(kept, part)], n_columns)


def _row_solution(solution, gram, corr, target_sq, l1, groups, group_l1):
    """The rows of a group solve as a RowSolution: each row carries its share
    of the joint objective (its own terms, and of each group's norm the
    fraction ``||w_ig||^2 / ||W_g||^2``) and the same share of the joint gap,
    so every row's relative gap is the block's."""
    coef = solution.coef
    group_of, group_columns = groups
    grouped = group_of >= 0
    squares = coef[:, grouped] ** 2
    ids = group_of[grouped]
    group_sq = np.zeros((coef.shape[0], group_columns.size))
    np.add.at(group_sq.T, ids, squares.T)  # each row's squared norm in each group
    group_norms = np.sqrt(group_sq.sum(axis=0))
    share = np.divide(group_sq, group_norms ** 2, out=np.zeros_like(group_sq),
                      where=group_norms > 0)
    objective = (0.5 * np.einsum("ij,jk,ik->i", coef, gram, coef)
                 - np.einsum("ij,ij->i", coef, corr) + 0.5 * target_sq
                 + np.sum(np.abs(coef) * l1, axis=1) + share @ (group_l1 * group_norms))
    total = max(float(objective.sum()), 1e-300)
    n_rows = coef.shape[0]
    return RowSolution(coef, solution.duality_gap * objective / total, objective,
                       solution.multipliers, np.full(n_rows, solution.n_iter),
                       np.full(n_rows, solution.status), np.zeros(n_rows),
                       np.zeros(n_rows, dtype=np.int64), np.zeros(n_rows, dtype=np.int64))
