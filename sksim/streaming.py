"""Fits whose data stay where they are: sample chunks reduced to Gram problems.

SIM's row problems need the data only through Gram matrices, sums over
samples. Here the samples arrive chunk by chunk and each chunk is reduced to a
:class:`~sksim.design.GramAccumulator` (exact centring by pairwise merges), so
``fit`` holds O(d^2 + chunk) memory whatever the number of samples:

* numpy arrays and ``numpy.memmap`` files: sliced in chunks of about 32 MiB of
  float64 on this machine (a memmap is read, never loaded);
* ``dask.array`` inputs: one task per block of rows, run where the blocks
  live (on the active ``dask.distributed`` Client when there is one, else on
  dask's local scheduler), the partial problems merged pairwise in a tree;
  dask retries the tasks of a lost worker;
* an iterable of ``(inputs, labels)`` batches (a torch ``DataLoader``) for a
  ``TorchBaseline`` teacher, iterated once per stage.

A chunk's states come from the precomputed ``states``, a fitted scikit-learn
MLP or a ``TorchBaseline`` run on the chunk (on the worker that holds it); a
weight-shared (convolutional) fit reduces each chunk to every block's Gram
problem the same way (:class:`DaskSharedReducer`).
The row solves themselves run through joblib: under
``joblib.parallel_backend("dask")`` in row batches on the cluster's workers
(the Gram matrix scattered once, fetched once per worker), else on this
machine's numba threads.

This module imports dask only inside the functions that need it.
"""

import copy
from functools import partial
from itertools import pairwise
from typing import NamedTuple

import numpy as np

from . import perturbation as perturbed
from .baselines import mlp_forward
from .design import GramAccumulator
from ._arrays import float64_rows, forward_blocks, sample_chunks, times_transpose
from .solvers import RowSolution, solve_rows
from .solvers.equilibrium import equilibrium_of_drive


def is_dask_array(array):
    """True for a ``dask.array.Array`` (checked without importing dask)."""
    return type(array).__module__.startswith("dask.") and hasattr(array, "chunks")


def is_batch_iterable(X):
    """True for an iterable of batches (a DataLoader, a list of tuples), not an array."""
    return (not hasattr(X, "shape") and not isinstance(X, (list, tuple, np.ndarray))
            and hasattr(X, "__iter__"))


# ----------------------------------------------------------------- recipes
class LabelTargets(NamedTuple):
    """Indicator targets of class labels (two columns for two classes)."""

    classes: np.ndarray

    def __call__(self, y_rows):
        return (np.asarray(y_rows)[:, None] == self.classes[None, :]).astype(np.float64)


class TeacherColumns(NamedTuple):
    """The teacher's output columns put in the order of ``classes_``.

    Attributes
    ----------
    order : ndarray of int
        The teacher's column read for each target column: target column ``k``
        is the teacher's column ``order[k]``, the one of ``classes_[k]``.
    negate : bool
        A single logit is the score of the teacher's second class; negated
        when that class is ``classes_[0]``.
    """

    order: np.ndarray
    negate: bool = False

    def __call__(self, outputs):
        outputs = np.asarray(outputs, dtype=np.float64)
        outputs = outputs.reshape(len(outputs), -1)
        return -outputs if self.negate else outputs[:, self.order]


class TeacherAgreement:
    """How often the teacher's argmax (its targets' largest column, or the
    sign of a single logit) names each sample's class: ``counts[k, j]`` is the
    number of samples of ``classes[k]`` whose target argmax is column ``j``.
    Counted chunk by chunk on the outputs a fit records anyway, and merged as
    the Gram accumulators are."""

    def __init__(self, classes):
        self.classes = np.asarray(classes)
        self.counts = np.zeros((len(self.classes), len(self.classes)), dtype=np.int64)

    def add(self, y_rows, targets):
        targets = np.asarray(targets).reshape(len(targets), -1)
        labels = np.asarray(y_rows).ravel()
        if not len(labels):
            return self
        index = np.clip(np.searchsorted(self.classes, labels), 0, len(self.classes) - 1)
        known = self.classes[index] == labels  # y's classes are all in classes_
        columns = ((targets[:, 0] > 0).astype(np.intp) if targets.shape[1] == 1
                   else np.argmax(targets, axis=1))
        np.add.at(self.counts, (index[known], columns[known]), 1)
        return self

    def merge(self, other):
        self.counts += other.counts
        return self


def counts_agreement(recipe):
    """Whether a chunk's teacher targets are to be counted against y (a
    classifier fitting its teacher's outputs): a new TeacherAgreement, or None."""
    if recipe.targets != "teacher" or not isinstance(recipe.encode, LabelTargets):
        return None
    return TeacherAgreement(recipe.encode.classes)


class ValueTargets(NamedTuple):
    """Regression targets as float64 columns."""

    def __call__(self, y_rows):
        y_rows = np.asarray(y_rows, dtype=np.float64)
        return y_rows.reshape(len(y_rows), -1)


class ChunkRecipe(NamedTuple):
    """How a chunk's states and output-row targets are made (picklable: it
    travels to the workers).

    Attributes
    ----------
    teacher : None, ("mlp", coefs, intercepts) or TorchBaseline
        Where the states come from (None: the ``states`` chunk).
    scales : ndarray of shape (n_states,) or None
        Per-state scales applied to the teacher's states.
    targets : {"outputs", "teacher", "y"}
        The output rows' targets: the ``baseline_outputs`` chunk, the
        teacher's outputs, or ``encode(y)``.
    encode : LabelTargets or ValueTargets
    n_targets : int
        Columns the targets must have.
    columns : TeacherColumns or None, default=None
        The teacher's output columns in the order of ``classes_`` (None: as
        they are).
    perturbation : Perturbation or None, default=None
        The rows' designs come from the teacher on perturbed inputs (see
        :mod:`sksim.perturbation`).
    """

    teacher: object
    scales: object
    targets: str
    encode: object
    n_targets: int
    columns: object = None
    perturbation: object = None


class StateModel(NamedTuple):
    """The fitted state rows, enough to compute the model's equilibrium."""

    A: object
    B: object
    intercept: np.ndarray
    forward_blocks: object  # forward_blocks(A): a list, or None when A has feedback
    tol: float
    max_iter: int

    def states(self, rows):
        drive = times_transpose(rows, self.B, out=np.empty((rows.shape[0], self.B.shape[0])))
        return equilibrium_of_drive(self.A, drive, self.intercept, self.forward_blocks,
                                    tol=self.tol, max_iter=self.max_iter).states


def _finite(array, name):
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity.")
    return array


def chunk_states(recipe, X_rows, states_rows):
    """The (scaled) pre-activations of a chunk and the teacher's outputs (None
    without a teacher)."""
    if recipe.teacher is None:
        return _finite(np.asarray(states_rows, dtype=np.float64), "states"), None
    if isinstance(recipe.teacher, tuple):
        _, coefs, intercepts = recipe.teacher
        states, outputs = mlp_forward(coefs, intercepts, X_rows)
    else:
        states, outputs = recipe.teacher.record(X_rows)
    states = _finite(np.asarray(states, dtype=np.float64), "the baseline's states")
    if recipe.scales is not None:
        states *= recipe.scales
    return states, outputs


def chunk_targets(recipe, y_rows, outputs_rows, teacher_outputs):
    if recipe.targets == "outputs":
        targets = np.asarray(outputs_rows, dtype=np.float64)
        name = "baseline_outputs"
    elif recipe.targets == "teacher":
        # its width was checked against y on the first rows (the estimator's
        # _teacher_output_width) and is the same for every chunk
        targets = np.asarray(teacher_outputs, dtype=np.float64)
        targets = targets.reshape(len(targets), -1)
        if recipe.columns is not None:
            targets = recipe.columns(targets)
        name = "the baseline's outputs"
    else:
        targets = recipe.encode(y_rows)
        name = "y"
    return _finite(targets, name)


def _design(n_states, X_rows):
    """A new float64 buffer ``[states, X_rows]`` with the inputs filled in; the
    caller writes the states into its first ``n_states`` columns (the buffer
    is centred in place later, so no other copy is made)."""
    design = np.empty((X_rows.shape[0], n_states + X_rows.shape[1]))
    design[:, n_states:] = X_rows
    return design


def state_partial(recipe, fit_intercept, X_rows, y_rows, states_rows, outputs_rows):
    """Gram problem of the state rows on one chunk: design ``[relu(z), x]``,
    targets ``z``."""
    return _state_accumulator(recipe, fit_intercept, X_rows, states_rows)[0]


def counted_state_partial(recipe, fit_intercept, X_rows, y_rows, states_rows,
                          outputs_rows):
    """:func:`state_partial` and the chunk's :class:`TeacherAgreement` (the
    teacher's outputs on the chunk come with its states), as a list."""
    accumulator, outputs = _state_accumulator(recipe, fit_intercept, X_rows, states_rows)
    agreement = counts_agreement(recipe)
    agreement.add(y_rows, chunk_targets(recipe, y_rows, None, outputs))
    return [accumulator, agreement]


def _state_accumulator(recipe, fit_intercept, X_rows, states_rows):
    X_rows = _finite(np.asarray(X_rows, dtype=np.float64), "X")
    states, outputs = chunk_states(recipe, X_rows, states_rows)
    n_states = states.shape[1]
    accumulator = GramAccumulator(n_states + X_rows.shape[1], n_states, fit_intercept)
    for X_design, design_states in _design_pairs(recipe, X_rows, states, outputs):
        design = _design(n_states, X_design)
        np.maximum(design_states, 0.0, out=design[:, :n_states])
        accumulator.add(design, states, overwrite=True)
    return accumulator, outputs


def _design_pairs(recipe, X_rows, states, outputs):
    """The chunk's ``(inputs, states)`` designs (the perturbed run's with a
    perturbation), each against the clean targets."""
    return perturbed.design_pairs(recipe.perturbation, recipe.teacher, X_rows, states,
                                  outputs, lambda X_p: chunk_states(recipe, X_p, None)[0])


def output_partial(recipe, model, fit_intercept, X_rows, y_rows, states_rows,
                   outputs_rows):
    """Gram problem of the output rows on one chunk: design ``[x, u]`` with
    ``x`` the model's equilibrium (``model``) or the teacher's activated states
    (``model`` None), targets as the recipe says (on each of the chunk's
    designs, with a perturbation)."""
    X_rows = _finite(np.asarray(X_rows, dtype=np.float64), "X")
    need_teacher = (model is None or recipe.targets == "teacher"
                    or recipe.perturbation is not None)
    states, teacher_outputs = (chunk_states(recipe, X_rows, states_rows) if need_teacher
                               else (None, None))
    targets = chunk_targets(recipe, y_rows, outputs_rows, teacher_outputs)
    pairs = (_design_pairs(recipe, X_rows, states, teacher_outputs) if need_teacher
             else [(X_rows, None)])
    accumulator = None
    for X_design, design_states in pairs:
        post = np.maximum(design_states, 0.0) if model is None else model.states(X_design)
        design = _design(post.shape[1], X_design)
        design[:, :post.shape[1]] = post
        if accumulator is None:
            accumulator = GramAccumulator(design.shape[1], targets.shape[1], fit_intercept)
        accumulator.add(design, targets, overwrite=True)
    return accumulator


def block_square_sums(recipe, edges, X_rows, y_rows, states_rows, outputs_rows):
    """``(count, sum of squares of the activated states per block)`` of a chunk."""
    states, _ = chunk_states(recipe, np.asarray(X_rows, dtype=np.float64), states_rows)
    post = np.maximum(states, 0.0)
    return len(post), np.array([np.sum(post[:, a:b] ** 2)
                                for a, b in pairwise(edges)])


def block_rms(source, recipe, blocks):
    """Root mean square of the teacher's activated states in each block of
    ``blocks`` states, over all of ``source``'s samples."""
    edges = np.cumsum([0] + list(blocks))
    count, squares = source.reduce(partial(block_square_sums, recipe, edges), merge_sums)
    return np.sqrt(squares / (count * np.diff(edges)))


class StreamedRows:
    """The Gram problems of a streamed flat fit's stages, each reduced over
    ``source``'s chunks by ``recipe`` (:func:`sksim.pipeline.fit_flat` runs
    the stages)."""

    how = " (streamed)"  # shown in verbose stage names

    def __init__(self, estimator, source, recipe):
        self.estimator, self.source, self.recipe = estimator, source, recipe

    def state_problem(self):
        """A classifier fitting its teacher's outputs also counts the teacher's
        agreement with y on this pass and checks it before any row is solved."""
        fit_intercept = self.estimator.fit_intercept
        if counts_agreement(self.recipe) is None:
            return self.source.reduce(partial(state_partial, self.recipe, fit_intercept),
                                      merge_accumulators).finish()
        accumulator, agreement = self.source.reduce(
            partial(counted_state_partial, self.recipe, fit_intercept), merge_lists)
        self.estimator._check_teacher_agreement(agreement)
        return accumulator.finish()

    def output_problem(self, model):
        """On ``model``'s equilibrium (the fitted state rows, a
        :class:`sksim.model.FlatModel`), or on the teacher's states when
        ``model`` is None."""
        est = self.estimator
        if model is not None:
            model = StateModel(model.A, model.B, model.state_intercept,
                               forward_blocks(model.A),
                               est.equilibrium_tol, est.equilibrium_max_iter)
        return self.source.reduce(partial(output_partial, self.recipe, model,
                                          est.fit_intercept),
                                  merge_accumulators).finish()


# ----------------------------------------------------------------- sources
class ArraySource:
    """Aligned row arrays (numpy, memmap; None where absent) sliced in chunks
    on this machine."""

    def __init__(self, X, y, states, outputs):
        self.arrays = (X, y, states, outputs)
        self.n_samples = X.shape[0]
        self.width = X.shape[1] + sum(a.shape[1] for a in (states, outputs) if a is not None)

    def size_chunks(self, n_states, n_targets):
        """Size the chunks on a stage's working set per sample (float64 values):
        the inputs and states read, the design ``[x, u]`` built from them, the
        activated states and the targets, so one chunk's arrays together stay
        within the chunk budget."""
        n_features = self.arrays[0].shape[1]
        self.width = 2 * n_features + 3 * n_states + n_targets

    def chunks(self):
        for start, stop in sample_chunks(self.n_samples, self.width):
            yield [None if a is None else (float64_rows(a, start, stop) if a.ndim == 2
                                           else np.asarray(a[start:stop]))
                   for a in self.arrays]

    def first_rows(self, n=1):
        return np.asarray(self.arrays[0][:n], dtype=np.float64)

    def reduce(self, partial, merge):
        total = None
        for chunk in self.chunks():
            part = partial(*chunk)
            total = part if total is None else merge(total, part)
        return total


class BatchSource(ArraySource):
    """An iterable of ``(inputs, labels)`` batches (a torch DataLoader), iterated
    once per reduction; inputs of any shape are flattened per sample."""

    def __init__(self, batches):
        if iter(batches) is batches:
            raise ValueError(
                "X is an iterator, which can be read only once; fit reads the batches "
                "in two passes (states, then outputs). Pass a re-iterable object such "
                "as a torch DataLoader or a list of (inputs, labels) batches.")
        self.batches = batches

    @staticmethod
    def _numpy(value):
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        return np.asarray(value)

    def chunks(self):
        for batch in self.batches:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise ValueError(
                    "Each batch of X must be a pair (inputs, labels), as a torch "
                    f"DataLoader over a labelled dataset yields; got {type(batch).__name__}.")
            inputs, labels = self._numpy(batch[0]), self._numpy(batch[1])
            inputs = inputs.reshape(len(inputs), -1).astype(np.float64)
            yield [inputs, labels, None, None]

    def first_rows(self, n=1):
        return next(self.chunks())[0][:n]

    def size_chunks(self, n_states, n_targets):
        """The batches are the chunks."""

    def labels(self):
        """All labels (one pass; small: one value per sample) and the feature count."""
        labels, n_features = [], None
        for inputs, batch_labels, _, _ in self.chunks():
            if n_features is not None and inputs.shape[1] != n_features:
                raise ValueError(
                    f"The batches of X have different numbers of features "
                    f"({n_features} and {inputs.shape[1]}).")
            n_features = inputs.shape[1]
            labels.append(batch_labels)
        if not labels:
            raise ValueError("X yielded no batches.")
        return np.concatenate(labels), n_features


class DaskSource:
    """Row-aligned arrays (X first; None where absent), at least one a dask
    array, the others wrapped: one task per block of rows, partial results
    merged pairwise in a tree, computed on the active scheduler (a
    distributed Client when there is one)."""

    def __init__(self, *arrays):
        import dask.array as da

        X = arrays[0]
        reference = next(a for a in arrays if is_dask_array(a))
        rows = reference.chunks[0]
        self.arrays = []
        for array in arrays:
            if array is None:
                self.arrays.append(None)
                continue
            if not is_dask_array(array):
                array = da.from_array(np.asarray(array), chunks=(rows,) + array.shape[1:])
            self.arrays.append(array.rechunk((rows,) + tuple(-1 for _ in array.shape[1:])))
        self.n_samples = X.shape[0]

    def first_rows(self, n=1):
        return np.asarray(self.arrays[0][:n].compute(), dtype=np.float64)

    def size_chunks(self, n_states, n_targets):
        """The blocks of the dask arrays are the chunks."""

    def reduce(self, partial, merge):
        import dask

        blocks = [None if a is None else list(a.to_delayed().ravel()) for a in self.arrays]
        n_blocks = len(blocks[0])
        # one graph key for the function and what it carries (the recipe, the
        # fitted state rows), sent once per worker rather than once per task
        function = dask.delayed(partial, traverse=False)
        parts = [dask.delayed(_call)(function, *[None if b is None else b[i] for b in blocks])
                 for i in range(n_blocks)]
        while len(parts) > 1:
            parts = [dask.delayed(merge)(parts[i], parts[i + 1]) if i + 1 < len(parts)
                     else parts[i] for i in range(0, len(parts), 2)]
        try:
            (result,) = dask.compute(parts[0])
        except (ValueError, TypeError):
            raise  # the data's own errors (e.g. NaN in X), raised on a worker
        except Exception as exc:
            raise RuntimeError(
                "The dask computation of the Gram matrices failed "
                f"({type(exc).__name__}: {exc}); no model was fitted. If the cluster "
                "or its client went away, start one and fit again.") from exc
        return result


def _call(function, *args):
    # a copy per task: tasks run in threads of one process share the graph's
    # objects, and a torch teacher's recording hooks must not see another
    # thread's forward pass
    return copy.deepcopy(function)(*args)


def make_source(X, y, states, outputs):
    if any(is_dask_array(a) for a in (X, y, states, outputs)):
        return DaskSource(X, y, states, outputs)
    return ArraySource(X, y, states, outputs)


def merge_accumulators(first, second):
    first.merge(second)
    return first


def merge_sums(first, second):
    return first[0] + second[0], first[1] + second[1]


def merge_lists(first, second):
    for mine, theirs in zip(first, second):
        mine.merge(theirs)
    return first


# ------------------------------------------------- weight-shared (conv) fits
class SharedOptions(NamedTuple):
    """What the weight-shared chunk reductions need from the estimator."""

    teacher: object
    fit_intercept: bool
    positions_per_image: object
    seed: object
    equilibrium_tol: float
    equilibrium_max_iter: int
    targets: ChunkRecipe
    perturbation: object = None


def shared_block_partial(options, structure, scales, blocks, model, X_rows, y_rows,
                         index_rows, outputs_rows):
    """The state blocks' accumulators of one chunk (the teacher run on it)."""
    from .weight_sharing import accumulate_block_problems

    X_rows = _finite(np.asarray(X_rows, dtype=np.float64), "X")
    # a classifier fitting its teacher's outputs counts their agreement with
    # y on the outputs this pass records anyway (the last item of the list)
    agreement = None if y_rows is None else counts_agreement(options.targets)

    def batches():
        for rows, pre, out, designs in perturbed.teacher_batches(
                options.perturbation, options.teacher, X_rows):
            if agreement is not None:
                agreement.add(y_rows[rows], chunk_targets(options.targets, None, None, out))
            for X_design, design_pre in designs:
                yield X_design, design_pre, pre

    # positions kept per image drawn from (seed, first row): reproducible for
    # a seed whatever the blocks are computed on
    seed = None if options.seed is None else [options.seed, int(index_rows[0, 0])]
    parts = accumulate_block_problems(
        structure, batches(), scales, fit_intercept=options.fit_intercept,
        positions_per_image=options.positions_per_image, random_state=seed,
        blocks=blocks, model=model, finish=False)
    return parts if agreement is None else [*parts, agreement]


def shared_head_partial(options, structure, scales, model, X_rows, y_rows, index_rows,
                        outputs_rows):
    """The output rows' accumulator of one chunk: the design on the model's own
    states (``model``) or the teacher's scaled states; the targets as
    ``options.targets`` says."""
    from .weight_sharing import head_design_on, link_width

    X_rows = _finite(np.asarray(X_rows, dtype=np.float64), "X")
    width = sum(link_width(structure, link) for link in structure.head)
    accumulator = GramAccumulator(width, options.targets.n_targets, options.fit_intercept)
    for rows, pre, out, designs in perturbed.teacher_batches(options.perturbation,
                                                             options.teacher, X_rows):
        targets = chunk_targets(options.targets, None if y_rows is None else y_rows[rows],
                                None if outputs_rows is None else outputs_rows[rows], out)
        for X_design, design_pre in designs:
            accumulator.add(head_design_on(
                structure, scales, model, X_design, design_pre,
                tol=options.equilibrium_tol, max_iter=options.equilibrium_max_iter),
                targets)
    return [accumulator]


class DaskSharedReducer:
    """The data of a weight-shared fit on dask inputs, reduced on the workers:
    each chunk runs the teacher (and the fitted blocks) and returns its
    blocks' accumulators; they are merged pairwise. The same interface as the
    estimator's in-memory reducer."""

    def __init__(self, options, X, y, outputs, check_agreement=None):
        n_samples = X.shape[0]
        self.options = options
        self.source = DaskSource(X, y, np.arange(n_samples).reshape(-1, 1), outputs)
        self.n_outputs = options.targets.n_targets
        # called with the TeacherAgreement a classifier's block pass counts
        self.check_agreement = check_agreement

    def block_problems(self, structure, scales, blocks, model):
        blocks = list(range(len(structure.block_shapes))) if blocks is None else blocks
        parts = self.source.reduce(partial(shared_block_partial, self.options, structure,
                                           scales, blocks, model), merge_lists)
        if parts and isinstance(parts[-1], TeacherAgreement):
            agreement = parts.pop()
            if self.check_agreement is not None:
                self.check_agreement(agreement)
        return [part.finish() for part in parts]

    def output_problem(self, structure, scales, model):
        (part,) = self.source.reduce(partial(shared_head_partial, self.options, structure,
                                             scales, model), merge_lists)
        return part.finish()


# ------------------------------------------------------------ row solves
def _dask_backend_active():
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    return type(backend).__name__ == "DaskDistributedBackend"


def _solve_row_batch(gram, correlations, target_sq, **options):
    """One batch of rows on one worker thread: numba on this thread alone
    (``set_num_threads`` is per thread), as the worker runs one batch per
    thread and more would oversubscribe its cores."""
    import numba

    numba.set_num_threads(1)
    return solve_rows(gram, correlations, target_sq, **options)


def _dealt_batches(n_rows, n_batches):
    """Row indices dealt out in turn into ``n_batches`` batches (row costs vary
    by block: consecutive rows would give one batch a block's expensive rows)."""
    return [np.arange(first, n_rows, n_batches) for first in range(n_batches)]


def _batch_options(options, rows):
    """``options`` for a batch of rows (a warm start is sliced with them)."""
    if options.get("coef_init") is None:
        return options
    return {**options, "coef_init": options["coef_init"][rows]}


def _joined(batches, parts):
    order = np.argsort(np.concatenate(batches))
    return RowSolution(*[np.concatenate([getattr(part, field) for part in parts])[order]
                         for field in RowSolution._fields])


def solve_rows_parallel(gram, correlations, target_sq, *, progress=None, **options):
    """:func:`~sksim.solvers.solve_rows`, in row batches on the workers of the
    active joblib backend when that is dask (four batches per worker thread,
    rows dealt out in turn; the Gram matrix, a large argument, is scattered
    once by joblib); else on this machine's numba threads: in one call, or
    with ``progress`` (called as ``progress(rows_done, n_rows)``) in eight
    batches reported as they finish. Every row's solve is independent, so the
    result is the same either way."""
    n_rows = correlations.shape[0]
    if n_rows >= 2 and _dask_backend_active():
        from joblib import Parallel, delayed, effective_n_jobs

        batches = _dealt_batches(n_rows, min(n_rows, 4 * effective_n_jobs(-1)))
        parts = Parallel(n_jobs=-1)(
            delayed(_solve_row_batch)(gram, correlations[rows], target_sq[rows],
                                      **_batch_options(options, rows))
            for rows in batches)
        return _joined(batches, parts)
    if progress is None or n_rows < 16:
        solution = solve_rows(gram, correlations, target_sq, **options)
        if progress is not None:
            progress(n_rows, n_rows)
        return solution
    batches, parts, done = _dealt_batches(n_rows, 8), [], 0
    for rows in batches:
        parts.append(solve_rows(gram, correlations[rows], target_sq[rows],
                                **_batch_options(options, rows)))
        done += len(rows)
        progress(done, n_rows)
    return _joined(batches, parts)
