"""Streamed reduction of row designs to Gram matrices ("reduce" stage).

Batches of design rows and targets arrive one at a time (from a teacher run
batch by batch, or patches of its state blocks); only the Gram matrix, the
correlations and the means are kept, so memory does not grow with the number
of samples. Centring is exact in one pass: each batch is centred on its own
mean and merged with the running scatter by the pairwise update of Chan,
Golub and LeVeque (1979), ``S = S_a + S_b + n_a n_b / n * delta delta^T``,
which avoids the cancellation of ``sum(w w^T) - n mean mean^T``.
"""

from typing import NamedTuple

import numba
import numpy as np
from scipy.linalg.blas import dger as ger

from . import _arrays
from ._arrays import float64_rows
from .solvers._blas import single_threaded_blas
from .solvers._threads import run_on_threads

# Rows per part of a Gram product. The parts depend on the row count only (so
# the sums, and the fit, do not depend on n_jobs); numba's thread count of
# Python threads computes them, each product on one BLAS thread.
_PART_ROWS = 2048
# Gram values per thread of one wave of parts (add_parts): 128 MiB
_WAVE_VALUES = 2**24


def scatter_products(design, targets):
    """``(design^T design, targets^T design)`` of float64 row blocks, by
    :func:`part_products`."""
    return tuple(part_products([(design, design), (targets, design)]))


def part_products(pairs):
    """``[left^T right for (left, right) in pairs]`` of float64 row blocks
    with the same rows.

    The rows are cut into parts of ``_PART_ROWS``; each part's products run
    on one BLAS thread (see :mod:`sksim.solvers._blas` for why), the parts
    dealt out to numba's thread count (:func:`sksim.solvers._threads.run_on_threads`),
    and the parts' products are summed in order.
    """
    starts = range(0, pairs[0][0].shape[0], _PART_ROWS)
    parts = [None] * len(starts)

    def compute(items):
        for k in items:
            rows = slice(starts[k], starts[k] + _PART_ROWS)
            parts[k] = [left[rows].T @ right[rows] for left, right in pairs]

    with single_threaded_blas():
        run_on_threads(compute, len(starts))
    sums = parts[0]
    for part in parts[1:]:
        for total, product in zip(sums, part):
            total += product
    return sums


def add_parts(accumulator, n_parts, part):
    """Add ``n_parts`` parts of rows to ``accumulator``: ``part(k)`` gives the
    k-th ``(design, targets)``, float64, the design writable (it is centred
    in place).

    Each part is centred on its own mean and reduced to its sums on one BLAS
    thread, while its rows are in cache (a separate centring pass over a
    whole batch cost as much as a third of the products of a narrow design),
    the parts computed on numba's thread count of Python threads, a wave of
    up to eight parts per thread at a time (up to
    ``_WAVE_VALUES`` floats of their Gram matrices per thread), and merged into ``accumulator`` in order, so the sums do not
    depend on the thread count.
    """
    width = accumulator.design_mean.size
    wave_size = max(1, numba.get_num_threads()) * max(1, min(8, _WAVE_VALUES // width**2))
    fit_intercept = accumulator.fit_intercept
    with single_threaded_blas():
        for first in range(0, n_parts, wave_size):
            wave = range(first, min(first + wave_size, n_parts))
            batches = [None] * len(wave)

            def run(items):
                for k in items:
                    batches[k] = _part_sums(*part(wave[k]), fit_intercept)

            run_on_threads(run, len(wave))
            for batch in batches:
                accumulator.merge(batch)


def _part_sums(design, targets, fit_intercept):
    """A :class:`GramAccumulator` of one part of rows (``design`` centred in place)."""
    batch = GramAccumulator(design.shape[1], targets.shape[1], fit_intercept)
    batch.count = design.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        if fit_intercept:
            batch.design_mean = design.mean(axis=0)
            batch.target_mean = targets.mean(axis=0)
            design -= batch.design_mean
            targets = targets - batch.target_mean
        batch.scatter = design.T @ design
        batch.cross = targets.T @ design
        batch.target_sq = np.einsum("ij,ij->j", targets, targets)
    return batch


class GramProblem(NamedTuple):
    """Gram-form row problems: ``gram = W^T W / m``, ``correlations = T^T W / m``,
    ``target_sq = ||t_i||^2 / m`` of the (centred when ``fit_intercept``)
    design ``W`` and targets ``T``, with the means removed."""

    gram: np.ndarray
    correlations: np.ndarray
    target_sq: np.ndarray
    design_mean: np.ndarray
    target_mean: np.ndarray
    n_rows: int


class GramAccumulator:
    """Accumulate :class:`GramProblem` over batches of rows.

    Parameters
    ----------
    n_columns, n_targets : int
    fit_intercept : bool
        Centre the columns and targets (exactly, over all rows added).
    """

    def __init__(self, n_columns, n_targets, fit_intercept):
        self.fit_intercept = fit_intercept
        self.count = 0
        # the sums take the first batch's arrays (merge): an empty accumulator
        # holds no d x d array, so a running total plus one chunk's batch is
        # two Gram matrices of memory, not three
        self.design_mean = np.zeros(n_columns)
        self.target_mean = np.zeros(n_targets)
        self.scatter = self.cross = self.target_sq = None

    def add(self, design, targets, *, overwrite=False):
        """Add rows: ``design`` (n, n_columns) and ``targets`` (n, n_targets);
        with ``overwrite`` the float64 ``design`` is centred in place (no copy)."""
        n = design.shape[0]
        if n == 0:
            return
        design = np.asarray(design, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.float64)
        starts = range(0, n, _PART_ROWS)

        def part(k):
            rows = slice(starts[k], starts[k] + _PART_ROWS)
            return (design[rows] if overwrite else design[rows].copy()), targets[rows]

        add_parts(self, len(starts), part)

    def merge(self, other):
        """Add the rows accumulated by ``other`` (same columns and targets):
        sums, or with centring the pairwise update of the scatter matrices.
        ``other`` must not be used afterwards (its arrays may be taken)."""
        if other.count == 0:
            return
        if self.count == 0:
            self.scatter, self.cross, self.target_sq = (other.scatter, other.cross,
                                                        other.target_sq)
            self.design_mean, self.target_mean = other.design_mean, other.target_mean
            self.count = other.count
            return
        self._own()
        with np.errstate(over="ignore", invalid="ignore"):
            if not self.fit_intercept:
                self.scatter += other.scatter
                self.cross += other.cross
                self.target_sq += other.target_sq
                self.count += other.count
                return
            total = self.count + other.count
            weight = self.count * other.count / total
            delta_design = other.design_mean - self.design_mean
            delta_target = other.target_mean - self.target_mean
            self.scatter += other.scatter
            self.cross += other.cross
            # rank-one corrections in place (BLAS ger on the transposed,
            # Fortran-ordered views): no d x d temporary
            self.scatter = ger(weight, delta_design, delta_design, a=self.scatter.T,
                               overwrite_a=True).T
            self.cross = ger(weight, delta_design, delta_target, a=self.cross.T,
                             overwrite_a=True).T
            self.target_sq += other.target_sq + weight * delta_target**2
            self.design_mean += delta_design * (other.count / total)
            self.target_mean += delta_target * (other.count / total)
            self.count = total

    def _own(self):
        """Writable arrays before updating them in place: arrays received from
        another process (a dask worker) may be read-only views."""
        for name in ("scatter", "cross", "target_sq", "design_mean", "target_mean"):
            array = getattr(self, name)
            if array is not None and not array.flags.writeable:
                setattr(self, name, array.copy())

    def finish(self):
        """The accumulated :class:`GramProblem` (divided by the row count). The
        sums are divided in place and handed over (no second d x d array):
        the accumulator is spent afterwards."""
        if self.count == 0:
            raise ValueError("no rows were accumulated")
        if self.scatter is None:
            raise ValueError("finish() was already called on this accumulator")
        self._own()
        self.scatter /= self.count
        self.cross /= self.count
        self.target_sq /= self.count
        problem = GramProblem(self.scatter, self.cross, self.target_sq, self.design_mean,
                              self.target_mean, self.count)
        self.scatter = self.cross = self.target_sq = None
        if not all(np.all(np.isfinite(a)) for a in problem[:5]):
            raise ValueError(
                "The Gram matrix of the design overflows float64: the inputs or "
                "states are too large in magnitude. Rescale X or the states.")
        return problem


def centred_gram_problem(blocks, targets, fit_intercept):
    """Gram matrix, correlations and target energies of the row problems.

    The design is ``W = [blocks[0], blocks[1], ...]`` (column blocks with
    the same rows), never formed in full: everything is accumulated over
    sample chunks, in two passes (means, then centred products) so centring
    is exact. Returns ``(gram, correlations, target_sq, design_mean,
    target_mean)`` with ``gram = W^T W / m``, ``correlations = T^T W / m`` and
    ``target_sq = ||t_i||^2 / m`` for the (centred when ``fit_intercept``)
    design ``W`` and targets ``T``.
    """
    if isinstance(blocks, np.ndarray):  # one block: the whole design
        blocks = [blocks]
    n_columns = sum(block.shape[1] for block in blocks)
    n_targets = targets.shape[1]
    chunks = _arrays.sample_chunks(targets.shape[0], n_columns + n_targets)
    design_mean, target_mean = _means(blocks, targets, fit_intercept, chunks)
    gram = np.zeros((n_columns, n_columns))
    correlations = np.zeros((n_targets, n_columns))
    target_sq = np.zeros(n_targets)
    # overflow surfaces as the clear ValueError of _checked, not as a RuntimeWarning
    with np.errstate(over="ignore", invalid="ignore"):
        for design, chunk_targets in _centred_chunks(blocks, targets, design_mean,
                                                     target_mean, chunks):
            chunk_gram, chunk_correlations = scatter_products(design, chunk_targets)
            gram += chunk_gram
            correlations += chunk_correlations
            target_sq += np.einsum("ij,ij->j", chunk_targets, chunk_targets)
    n_samples = targets.shape[0]
    gram /= n_samples
    correlations /= n_samples
    target_sq /= n_samples
    return _checked((gram, correlations, target_sq, design_mean, target_mean))


class InputsGram:
    """The Gram problems of designs ``[states, inputs]`` on the same rows and
    targets where only the states change from one problem to the next: the
    output rows along a path or a cross-validation fold (the states change
    with alpha; X and the targets do not). The inputs' block of the Gram,
    their correlations and means are computed once; each :meth:`problem`
    computes the states' products with the whole design. Equal to
    :func:`centred_gram_problem` of ``[states, inputs]`` up to roundoff (the
    products are summed in other groupings).

    Parameters
    ----------
    inputs : ndarray of shape (n_samples, n_inputs)
    targets : ndarray of shape (n_samples, n_targets)
    fit_intercept : bool
    """

    def __init__(self, inputs, targets, fit_intercept):
        self.inputs, self.targets, self.fit_intercept = inputs, targets, fit_intercept
        self.fixed = centred_gram_problem([inputs], targets, fit_intercept)

    def problem(self, states):
        """``centred_gram_problem([states, inputs], targets, fit_intercept)``."""
        input_gram, input_correlations, target_sq, input_mean, target_mean = self.fixed
        blocks = [states, self.inputs]
        n_states = states.shape[1]
        n_columns = n_states + input_mean.size
        chunks = _arrays.sample_chunks(states.shape[0], n_columns + target_mean.size)
        state_mean, _ = _means([states], self.targets[:, :0], self.fit_intercept, chunks)
        design_mean = np.concatenate([state_mean, input_mean])
        with_design = np.zeros((n_states, n_columns))
        correlations = np.zeros((target_mean.size, n_columns))
        with np.errstate(over="ignore", invalid="ignore"):
            for design, chunk_targets in _centred_chunks(blocks, self.targets,
                                                         design_mean, target_mean, chunks):
                state_part = design[:, :n_states]
                chunk_design, chunk_correlations = part_products(
                    [(state_part, design), (chunk_targets, state_part)])
                with_design += chunk_design
                correlations[:, :n_states] += chunk_correlations
        n_samples = self.targets.shape[0]
        gram = np.empty((n_columns, n_columns))
        gram[:n_states] = with_design / n_samples
        gram[n_states:, :n_states] = gram[:n_states, n_states:].T
        gram[n_states:, n_states:] = input_gram
        correlations[:, :n_states] /= n_samples
        correlations[:, n_states:] = input_correlations
        return _checked((gram, correlations, target_sq.copy(), design_mean,
                         target_mean.copy()))


def _means(blocks, targets, fit_intercept, chunks):
    """The column means of the design ``[blocks...]`` and of the targets
    (zeros without ``fit_intercept``), accumulated over the sample chunks
    ``chunks`` (``(start, stop)`` pairs)."""
    n_columns = sum(block.shape[1] for block in blocks)
    design_mean = np.zeros(n_columns)
    target_mean = np.zeros(targets.shape[1])
    if not fit_intercept:
        return design_mean, target_mean
    n_samples = targets.shape[0]
    spans = _spans(blocks)
    # overflow surfaces as the clear ValueError of _checked, not as a RuntimeWarning
    with np.errstate(over="ignore", invalid="ignore"):
        for start, stop in chunks:
            for block, columns in zip(blocks, spans):
                design_mean[columns] += float64_rows(block, start, stop).sum(axis=0)
            target_mean += float64_rows(targets, start, stop).sum(axis=0)
        design_mean /= n_samples
        target_mean /= n_samples
    return design_mean, target_mean


def _centred_chunks(blocks, targets, design_mean, target_mean, chunks):
    """Yield ``(design, targets)`` of each sample chunk of ``chunks``, float64 and centred
    by the means given. The design chunks share one buffer (a fresh array per
    chunk cost as much as the Gram product itself on a few thousand rows):
    each is valid until the next is yielded."""
    buffer = np.empty((chunks[0][1] - chunks[0][0] if chunks else 0, design_mean.size))
    spans = _spans(blocks)
    for start, stop in chunks:
        design = buffer[:stop - start]
        for block, columns in zip(blocks, spans):
            np.subtract(block[start:stop], design_mean[columns], out=design[:, columns])
        yield design, float64_rows(targets, start, stop) - target_mean


def _spans(blocks):
    edges = np.cumsum([0] + [block.shape[1] for block in blocks])
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _checked(problem):
    if not all(np.all(np.isfinite(array)) for array in problem):
        raise ValueError(
            "The Gram matrix of [states, X] overflows float64: the inputs or "
            "states are too large in magnitude. Rescale X (e.g. StandardScaler) "
            "or the states."
        )
    return problem
