"""SIMRegressor and SIMClassifier: validation, orchestration, fitted attributes.

No numerical kernels live here; they are in :mod:`sksim.solvers`.
"""

import time
import warnings
from contextlib import contextmanager
from itertools import pairwise
from numbers import Integral, Real
from typing import ClassVar

import numba
import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    _fit_context,
    clone,
)
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from . import weight_sharing as shared
from ._attributes import FITTED_ATTRIBUTES, attributes_doc
from ._teachers import record_mlp, record_states, record_torch
from .blocks import per_state, unroll
from .design import GramAccumulator
from .inspection import infinity_norm as _row_infinity_norm
from .inspection import path_bound
from .solvers import (
    RowSolution,
    forward_substitution,
    resolve_n_threads,
    solve_equilibrium,
)

_ACTIVATIONS = {"relu": lambda z: np.maximum(z, 0.0)}

_DEFAULT_HIDDEN_LAYERS = (64, 32)
_DEFAULT_TEACHER_MAX_ITER = 500


@contextmanager
def _numba_threads(n_jobs):
    """Run numba kernels on ``n_jobs`` threads, restoring the count afterwards."""
    previous = numba.get_num_threads()
    numba.set_num_threads(resolve_n_threads(n_jobs))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


# Sample chunks of ~32 MiB of float64 design: the Gram matrix and the
# correlations are accumulated chunk by chunk, so fit never holds the full
# float64 design [states, X] (nor a centred copy of it).
_CHUNK_BYTES = 32 * 2**20


def _sample_chunks(n_samples, n_columns):
    """``(start, stop)`` row ranges of about ``_CHUNK_BYTES`` of float64."""
    step = max(1, _CHUNK_BYTES // (8 * max(n_columns, 1)))
    return [(start, min(start + step, n_samples))
            for start in range(0, n_samples, step)]


def _float64_rows(array, start, stop):
    """Rows ``start:stop`` as a C-contiguous float64 array. Converting before
    any arithmetic makes results bitwise independent of the input's dtype
    (float32 values are exact in float64) and memory layout."""
    return np.ascontiguousarray(array[start:stop], dtype=np.float64)


def _design_rows(blocks, start, stop):
    return np.hstack([_float64_rows(block, start, stop) for block in blocks])


def _centred_gram_problem(blocks, targets, fit_intercept):
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
    n_samples = targets.shape[0]
    n_columns = sum(block.shape[1] for block in blocks)
    n_targets = targets.shape[1]
    chunks = _sample_chunks(n_samples, n_columns + n_targets)
    design_mean = np.zeros(n_columns)
    target_mean = np.zeros(n_targets)
    if fit_intercept:
        # overflow surfaces as the clear ValueError below, not as a RuntimeWarning
        with np.errstate(over="ignore", invalid="ignore"):
            for start, stop in chunks:
                design_mean += _design_rows(blocks, start, stop).sum(axis=0)
                target_mean += _float64_rows(targets, start, stop).sum(axis=0)
            design_mean /= n_samples
            target_mean /= n_samples
    gram = np.zeros((n_columns, n_columns))
    correlations = np.zeros((n_targets, n_columns))
    target_sq = np.zeros(n_targets)
    with np.errstate(over="ignore", invalid="ignore"):
        for start, stop in chunks:
            design = _design_rows(blocks, start, stop) - design_mean
            chunk_targets = _float64_rows(targets, start, stop) - target_mean
            gram += design.T @ design
            correlations += chunk_targets.T @ design
            target_sq += np.einsum("ij,ij->j", chunk_targets, chunk_targets)
    gram /= n_samples
    correlations /= n_samples
    target_sq /= n_samples
    if not (np.all(np.isfinite(gram)) and np.all(np.isfinite(correlations))
            and np.all(np.isfinite(target_sq)) and np.all(np.isfinite(design_mean))
            and np.all(np.isfinite(target_mean))):
        raise ValueError(
            "The Gram matrix of [states, X] overflows float64: the inputs or "
            "states are too large in magnitude. Rescale X (e.g. StandardScaler) "
            "or the states."
        )
    return gram, correlations, target_sq, design_mean, target_mean


# Density from which a product with a sparse matrix runs as dense BLAS: sparse
# products (scipy's, torch's on CPU) are single-threaded and several times
# slower than BLAS on matrices denser than this.
DENSE_PRODUCT_DENSITY = 0.05


def _times_transpose(rows, matrix):
    """``rows @ matrix.T`` for a sparse ``matrix``: dense BLAS from
    ``DENSE_PRODUCT_DENSITY`` on, sparse below."""
    size = matrix.shape[0] * matrix.shape[1]
    if size and matrix.nnz >= DENSE_PRODUCT_DENSITY * size:
        return rows @ matrix.toarray().T
    return np.asarray(matrix @ rows.T).T


def _check_numeric(array, name):
    """Reject string/object arrays holding non-numbers with a message naming them.

    Only numpy arrays of dtype str/bytes/object are inspected (other inputs go
    to scikit-learn's validation unchanged); a TypeError raised by the
    conversion (e.g. a dict inside an object array) is left to scikit-learn.
    """
    if isinstance(array, np.ndarray) and array.dtype.kind in "OUS":
        try:
            np.asarray(array, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(
                f"{name} must hold numbers; it has dtype {array.dtype} and a value "
                f"that is not a number ({exc}). Encode categorical data first "
                "(e.g. sklearn.preprocessing.OneHotEncoder)."
            ) from exc


def _feedforward_rows(problem, n_states, blocks, solve):
    """The state rows of a feed-forward model, block by block: the rows of
    block ``b`` may use the states of blocks ``< b`` and the inputs only, so
    each block is solved on the principal sub-Gram of those columns (the
    others are fixed at zero: a constraint, so each row is exact and certified
    on its problem) with the kappa bound on its state columns. ``solve`` is as
    in ``_BaseSIM._solve_state_rows``; the result has full-width rows."""
    gram, correlations, target_sq = problem
    n_columns = gram.shape[0]
    parts, start = [], 0
    for size in blocks:
        columns = np.r_[0:start, n_states:n_columns]
        rows = slice(start, start + size)
        parts.append((columns, solve(np.ascontiguousarray(gram[np.ix_(columns, columns)]),
                                     np.ascontiguousarray(correlations[rows][:, columns]),
                                     target_sq[rows], start)))
        start += size
    if isinstance(parts[0][1], RowSolution):
        return _stack_rows(parts, n_columns)
    return [_stack_rows([(columns, path[a]) for columns, path in parts], n_columns)
            for a in range(len(parts[0][1]))]


def _is_streamed(estimator, X, states, baseline_outputs):
    """True when fit reads its data chunk by chunk (see :mod:`sksim.streaming`):
    a dask input or X as an iterable of batches; memmap inputs when the states
    can be streamed too (given, or from a fitted MLP in FrozenEstimator or a
    TorchBaseline). A teacher that trains on X (the default) reads a memmap
    into memory as any array."""
    from .streaming import is_batch_iterable, is_dask_array

    inputs = (X, states, baseline_outputs)
    if is_batch_iterable(X) or any(is_dask_array(a) for a in inputs):
        return True
    if not any(isinstance(a, np.memmap) for a in inputs):
        return False
    baseline = estimator.baseline
    return (states is not None or hasattr(baseline, "record")
            or isinstance(baseline, FrozenEstimator))


def _forward_blocks(A):
    """``[(start, stop), ...]``: consecutive blocks of states such that each
    row of ``A`` reads only states of earlier blocks (the coarsest such
    split, found from the last nonzero column of each row), or None when
    ``A`` is not strictly lower triangular."""
    A = sp.csr_array(A)
    n_states = A.shape[0]
    last = np.full(n_states, -1)
    filled = np.flatnonzero(np.diff(A.indptr))
    if filled.size:
        last[filled] = np.maximum.reduceat(A.indices, A.indptr[filled])
    if np.any(last >= np.arange(n_states)):
        return None
    starts = [0]
    for i in range(n_states):
        if last[i] >= starts[-1]:
            starts.append(i)
    return list(zip(starts, starts[1:] + [n_states]))


def _stack_rows(parts, n_columns):
    """One RowSolution from ``(columns, RowSolution)`` pieces of consecutive rows."""
    coef = np.zeros((sum(rows.coef.shape[0] for _, rows in parts), n_columns))
    start = 0
    for columns, rows in parts:
        coef[start:start + rows.coef.shape[0], columns] = rows.coef
        start += rows.coef.shape[0]
    return RowSolution(coef, *[np.concatenate([getattr(rows, field) for _, rows in parts])
                               for field in RowSolution._fields[1:]])


class _FitLog:
    """What a fit with ``verbose`` prints while it runs: each stage's time,
    and the rows solved so far with an estimate of the time left. Silent
    when ``verbose`` is 0."""

    def __init__(self, estimator=None):
        self.name = type(estimator).__name__
        self.on = estimator is not None and bool(estimator.verbose)
        self.start = time.perf_counter()

    def say(self, text):
        if self.on:
            print(f"[{self.name}] {text} ({time.perf_counter() - self.start:.1f} s "
                  "into the fit)", flush=True)

    @contextmanager
    def stage(self, what):
        started = time.perf_counter()
        yield
        self.say(f"{what}: {time.perf_counter() - started:.1f} s")

    def rows(self, what):
        """A ``progress(done, total)`` callback for a row solve, or None."""
        if not self.on:
            return None
        started = time.perf_counter()

        def progress(done, total):
            spent = time.perf_counter() - started
            left = spent * (total - done) / max(done, 1)
            self.say(f"{what}: {done}/{total} rows solved in {spent:.1f} s, about "
                     f"{left:.0f} s left")

        return progress


class _SharedReducer:
    """The data of an in-memory (or memmap) weight-shared fit, reduced to each
    block's Gram problem by running the teacher batch by batch.

    Parameters
    ----------
    estimator : the SIM estimator being fitted (its teacher and options)
    X : ndarray of shape (n_samples, n_features)
    targets : ndarray of shape (n_samples, n_outputs)
        The output rows' targets.
    """

    def __init__(self, estimator, X, targets):
        self.estimator, self.X, self.targets = estimator, X, targets
        self.n_outputs = targets.shape[1]

    def block_problems(self, structure, scales, blocks, model):
        est, X = self.estimator, self.X
        batches = ((X[rows], pre) for rows, pre, _ in est.baseline.iter_batches(X))
        return shared.accumulate_block_problems(
            structure, batches, scales, fit_intercept=est.fit_intercept,
            positions_per_image=est.positions_per_image,
            random_state=est.random_state, blocks=blocks, model=model)

    def output_problem(self, structure, scales, model):
        """Gram problem of the output rows on ``model``'s own states (its state
        part), or on the teacher's (scaled) states when ``model`` is None."""
        est, X, targets = self.estimator, self.X, self.targets
        width = sum(shared.link_width(structure, link) for link in structure.head)
        accumulator = GramAccumulator(width, targets.shape[1], est.fit_intercept)
        if model is not None:
            for start, stop, rows, post, _, _ in est._equilibrium_chunks(X):
                accumulator.add(shared.head_design(structure, rows, post),
                                targets[start:stop])
        else:
            for rows, pre, _ in est.baseline.iter_batches(X):
                post = shared.activated(structure, [z * s for z, s in zip(pre, scales)])
                chunk = _float64_rows(X, rows.start, rows.stop)
                accumulator.add(shared.head_design(structure, chunk, post), targets[rows])
        return accumulator.finish()


class _InMemoryRows:
    """The Gram problems of an in-memory flat fit's stages, from X, the
    teacher's (scaled) states and the output rows' targets."""

    how = ""  # shown in verbose stage names

    def __init__(self, estimator, X, states, targets):
        self.estimator, self.X, self.states, self.targets = estimator, X, states, targets
        self.post_activations = None

    def state_problem(self):
        self.post_activations, problem = self.estimator._state_problem(self.X, self.states)
        return problem

    def output_problem(self):
        return self.estimator._output_problem(self.X, self.targets, self.post_activations)


class _BaseSIM(BaseEstimator):
    """Shared fitting logic of the SIM estimators (see the subclasses)."""

    _parameter_constraints: ClassVar[dict] = {
        "baseline": "no_validation",
        "alpha": [Interval(Real, 0, None, closed="left")],
        "output_alpha": [None, Interval(Real, 0, None, closed="left")],
        "row_bound": [None, Interval(Real, 0, None, closed="neither")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "relax": [Interval(Real, 0, 1, closed="right")],
        "solver": [StrOptions({"auto", "cd", "homotopy"})],
        "kappa": [Interval(Real, 0, 1, closed="neither")],
        "activation": [StrOptions(set(_ACTIVATIONS))],
        "fit_intercept": ["boolean"],
        "refit_outputs": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "equilibrium_tol": [Interval(Real, 0, None, closed="neither")],
        "equilibrium_max_iter": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [None, Integral],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "weight_sharing": ["boolean", StrOptions({"auto"})],
        "lateral_kernel": [None, Interval(Integral, 1, None, closed="left")],
        "skip_links": [Interval(Integral, 0, None, closed="left")],
        "positions_per_image": [None, Interval(Integral, 1, None, closed="left")],
        "block_alpha": [StrOptions({"positions", "relative", "absolute"})],
        "state_inputs": [StrOptions({"teacher", "model"})],
        "output_target": [StrOptions({"baseline", "y"})],
        "state_scaling": [StrOptions({"well_posed", "rms", "none"})],
        "structure": [StrOptions({"implicit", "feedforward"})],
        "state_blocks": [None, "array-like"],
    }

    def __init__(
        self,
        baseline=None,
        *,
        alpha=1e-3,
        output_alpha=None,
        l1_ratio=1.0,
        relax=1.0,
        solver="auto",
        kappa=0.95,
        row_bound=None,
        activation="relu",
        fit_intercept=True,
        refit_outputs=True,
        tol=1e-6,
        max_iter=20000,
        equilibrium_tol=1e-12,
        equilibrium_max_iter=1000,
        n_jobs=None,
        random_state=None,
        verbose=0,
        weight_sharing="auto",
        lateral_kernel=None,
        skip_links=0,
        positions_per_image=None,
        block_alpha="positions",
        state_inputs="teacher",
        output_target="baseline",
        structure="implicit",
        state_blocks=None,
        state_scaling="well_posed",
    ):
        self.baseline = baseline
        self.alpha = alpha
        self.output_alpha = output_alpha
        self.l1_ratio = l1_ratio
        self.relax = relax
        self.solver = solver
        self.kappa = kappa
        self.row_bound = row_bound
        self.activation = activation
        self.fit_intercept = fit_intercept
        self.refit_outputs = refit_outputs
        self.tol = tol
        self.max_iter = max_iter
        self.equilibrium_tol = equilibrium_tol
        self.equilibrium_max_iter = equilibrium_max_iter
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.weight_sharing = weight_sharing
        self.lateral_kernel = lateral_kernel
        self.skip_links = skip_links
        self.positions_per_image = positions_per_image
        self.block_alpha = block_alpha
        self.state_inputs = state_inputs
        self.output_target = output_target
        self.state_scaling = state_scaling
        self.structure = structure
        self.state_blocks = state_blocks

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, states=None, baseline_outputs=None):
        """Fit the implicit model (see the estimators' own ``fit``)."""
        if _is_streamed(self, X, states, baseline_outputs):
            return self._fit_streamed(X, y, states, baseline_outputs)
        X, targets, y = self._validated_targets(X, y)
        return self._fit_sim(X, targets, states, baseline_outputs, y)

    # ------------------------------------------------------------------ teacher
    _teacher_class = None  # each estimator's embedded teacher, and the MLPs it accepts

    def _default_teacher(self):
        """The embedded teacher trained when ``baseline`` is None."""
        return self._teacher_class(
            hidden_layer_sizes=_DEFAULT_HIDDEN_LAYERS, activation="relu",
            max_iter=_DEFAULT_TEACHER_MAX_ITER, random_state=self.random_state,
        )

    def _fitted_teacher(self, X, y):
        """The teacher, trained on (X, y) unless it comes fitted (wrapped in a
        FrozenEstimator, or a TorchBaseline)."""
        if self.baseline is None:
            teacher = self._default_teacher()
            teacher.fit(X, y)
            return teacher
        if isinstance(self.baseline, FrozenEstimator):
            try:
                check_is_fitted(self.baseline.estimator)
            except NotFittedError as exc:
                raise ValueError(
                    "baseline is a FrozenEstimator around an unfitted estimator; "
                    "fit it first or pass the unfitted MLP directly."
                ) from exc
            return self.baseline
        if hasattr(self.baseline, "record"):  # a torch adapter (TorchBaseline)
            return self.baseline
        if not isinstance(self.baseline, self._teacher_class):
            raise ValueError(  # noqa: TRY004 - the documented error for a bad parameter
                f"baseline must be None, a {self._teacher_class.__name__} "
                "(possibly wrapped in sklearn.frozen.FrozenEstimator) or a "
                f"TorchBaseline; got {type(self.baseline).__name__}."
            )
        teacher = clone(self.baseline)
        teacher.fit(X, y)
        return teacher

    def _record(self, teacher, X):
        """The fitted ``teacher``'s TeacherRecord on X (see :mod:`sksim._teachers`)."""
        if hasattr(teacher, "record"):
            # tracing the teacher costs a pass over X: only for the scales used
            kappa = self.kappa if self.state_scaling == "well_posed" else None
            return record_torch(teacher, X, kappa)
        return record_mlp(self._checked_mlp(teacher, X.shape[1]), X, self.kappa)

    def _checked_mlp(self, teacher, n_features):
        """The scikit-learn MLP of ``teacher``, checked against the model and X."""
        mlp = teacher.estimator if isinstance(teacher, FrozenEstimator) else teacher
        if not isinstance(mlp, self._teacher_class):
            raise ValueError(  # noqa: TRY004 - the documented error for a bad parameter
                f"baseline must wrap a {self._teacher_class.__name__}; got "
                f"{type(mlp).__name__}."
            )
        if mlp.activation != self.activation:
            raise ValueError(
                f"baseline uses activation={mlp.activation!r} but the SIM model "
                f"uses activation={self.activation!r}; they must match."
            )
        if mlp.coefs_[0].shape[0] != n_features:
            raise ValueError(
                f"baseline expects {mlp.coefs_[0].shape[0]} features, X has "
                f"{n_features}."
            )
        return mlp

    def _unit_rms_scales(self, rms):
        """Per-state scales of ``state_scaling="rms"`` from each teacher block's
        RMS; a block that never activates keeps its scale."""
        return np.repeat([1.0 / r if r > 0 else 1.0 for r in rms], self._teacher_blocks)

    def _scaled_states(self, record):
        """The recorded states scaled as ``state_scaling`` says, as float64
        (sets ``state_scales_`` and the teacher's blocks)."""
        self._teacher_blocks = record.blocks
        if record.chunk_teacher is None or self.state_scaling == "none":
            scales = None  # precomputed states are used as given
        elif self.state_scaling == "well_posed":
            scales = record.well_posed_scales
        else:
            post = _ACTIVATIONS[self.activation](record.states)
            edges = np.cumsum([0] + list(record.blocks))
            rms = [np.sqrt(np.mean(post[:, a:b] ** 2)) for a, b in pairwise(edges)]
            scales = self._unit_rms_scales(rms)
        self.state_scales_ = scales
        states = record.states if scales is None else record.states * scales
        return np.asarray(states, dtype=np.float64)

    # ------------------------------------------------------------------ fitting
    def _check_sample_aligned(self, array, name, n_samples, n_columns=None):
        if sp.issparse(array):
            raise ValueError(f"{name} must be a dense array; got a sparse matrix.")
        if np.ndim(array) != 2:
            raise ValueError(
                f"{name} must be a 2-D array of shape (n_samples, n_columns); got "
                f"shape {np.shape(array)}."
            )
        if 0 in np.shape(array):
            raise ValueError(
                f"{name} is empty (shape {np.shape(array)}); it needs at least one "
                "row and one column."
            )
        _check_numeric(array, name)
        array = check_array(array, dtype=np.float64, input_name=name)
        if array.shape[0] != n_samples:
            raise ValueError(
                f"{name} has {array.shape[0]} rows but X has {n_samples} samples; "
                "they must be aligned."
            )
        if n_columns is not None and array.shape[1] != n_columns:
            raise ValueError(
                f"{name} has {array.shape[1]} columns; expected {n_columns}."
            )
        return array

    # ------------------------------------------------------- weight sharing
    def _weight_shared_teacher(self, X, states):
        """The teacher's TeacherMaps when the weight-shared model is fitted
        (``weight_sharing=True``, or ``"auto"`` and a teacher that is not a
        plain chain of dense ReLU layers), else None (the flat model)."""
        traceable = states is None and hasattr(self.baseline, "trace")
        if self.weight_sharing is True and not traceable:
            raise ValueError(
                "weight_sharing=True needs a TorchBaseline teacher and no "
                "precomputed states (the blocks and their links are read off the "
                "teacher's layers).")
        if not traceable:
            return None
        try:
            maps = self.baseline.trace(X)
        except ValueError as exc:
            if self.weight_sharing is True or getattr(exc, "fatal", False):
                raise
            if self.weight_sharing is not False:
                warnings.warn(
                    f"The teacher cannot be fitted with weight sharing ({exc}); the "
                    "flat (unshared) SIM model is fitted instead. Set "
                    "weight_sharing=False to silence this warning.", UserWarning)
            return None
        structure = maps.structure
        if self.weight_sharing is False:
            if not structure.all_relu():
                raise ValueError(
                    "weight_sharing=False fits a flat ReLU model, but the teacher has "
                    "other activations (LeakyReLU, ReLU6 or Hardtanh): the model would "
                    "differ from the teacher; use weight_sharing='auto'.")
            return None
        chain = structure.all_relu() and all(
            len(links) == 1 and links[0].kind == "dense" and not links[0].pool
            for links in structure.links)
        return maps if (not chain or self.weight_sharing is True) else None

    def _fit_weight_shared(self, reducer, maps):
        """Fit the weight-shared model: one row per channel of each block. The
        data are reached through ``reducer`` (:class:`_SharedReducer`, or
        :class:`sksim.streaming.DaskSharedReducer` for dask inputs)."""
        if self.activation != "relu":  # pragma: no cover - only relu exists
            raise ValueError("weight sharing supports activation='relu' only.")
        if self.state_scaling != "well_posed":
            raise ValueError(
                f"state_scaling={self.state_scaling!r} applies to flat teachers; a "
                "weight-shared fit scales its blocks to make the teacher well posed "
                "(state_scaling='well_posed'), or set weight_sharing=False.")
        structure = shared.fitting_structure(maps.structure, self.lateral_kernel,
                                             n_outputs=reducer.n_outputs,
                                             skip_links=self.skip_links)
        # the teacher's structure: one link per block, the one its kernel belongs to
        scales = shared.block_scales(maps.structure, maps.kernels, self.kappa)
        structure = shared.scaled_structure(structure, scales)
        # row_bound is relative to the teacher: the scales make absolute units arbitrary
        row_bounds = (np.full(len(scales) + 1, np.inf) if self.row_bound is None else
                      self.row_bound * shared.teacher_row_norms(maps, scales))
        common = {"l1_ratio": self.l1_ratio, "kappa": self.kappa, "tol": self.tol,
                  "max_iter": self.max_iter, "relax": self.relax, "solver": self.solver}
        if self.structure == "feedforward" and self.lateral_kernel:
            raise ValueError("structure='feedforward' excludes lateral_kernel (the "
                             "lateral kernels link a block to itself).")
        if self.state_inputs == "model" and self.lateral_kernel:
            raise ValueError("state_inputs='model' needs a feed-forward structure "
                             "(lateral_kernel=None).")

        def reduce(blocks=None, model=None):
            return reducer.block_problems(structure, scales, blocks, model)

        kernels, intercepts, state_rows = [], [], []
        with _numba_threads(self.n_jobs):
            log = self._log()
            with log.stage("blocks' Gram matrices"):
                problems = reduce() if self.state_inputs == "teacher" else None
            for index, links in enumerate(structure.links):
                if problems is None:  # one pass per block on the model's own states
                    so_far = shared.truncated(shared.SharedModel(
                        structure, kernels, intercepts, [], np.zeros(0)), index)
                    with log.stage(f"block {index}'s Gram matrix"):
                        problem = reduce([index], so_far if index else None)[0]
                else:
                    problem = problems[index]
                alpha = self.alpha * shared.block_penalty(
                    problem, structure.block_shapes[index], self.block_alpha)
                with log.stage(f"block {index + 1} of {len(structure.links)}: "
                               f"{structure.block_shapes[index][0]} rows"):
                    block_kernels, intercept, rows = shared.solve_block_rows(
                        structure, links, problem, alpha=alpha,
                        row_bound=row_bounds[index], **common)
                kernels.append(block_kernels)
                intercepts.append(intercept)
                state_rows.append(rows)
            del problems
            # the state part of the model, for the output stage's equilibrium
            self._shared_model = shared.SharedModel(structure, kernels, intercepts, [],
                                                    np.zeros(0))
            self.n_states_ = structure.n_states()
            with log.stage("output rows' Gram matrix"):
                output_problem = reducer.output_problem(
                    structure, scales, self._shared_model if self.refit_outputs else None)
            output_alpha = self.alpha if self.output_alpha is None else self.output_alpha
            output_alpha *= shared.block_penalty(output_problem, (reducer.n_outputs,),
                                                 self.block_alpha)
            with log.stage(f"output rows: {reducer.n_outputs} rows"):
                head_kernels, head_intercept, output_rows = shared.solve_block_rows(
                    structure, structure.head, output_problem, alpha=output_alpha,
                    row_bound=row_bounds[-1], bounded=False, **common)
        self._shared_model = shared.SharedModel(structure, kernels, intercepts,
                                                head_kernels, head_intercept)
        self.structure_ = structure
        self.kernels_ = kernels
        self.block_intercepts_ = intercepts
        self.output_kernels_ = head_kernels
        self.intercept_ = head_intercept
        self.block_scales_ = scales
        self.block_row_bounds_ = None if self.row_bound is None else row_bounds
        sizes = structure.block_sizes()
        self.state_scales_ = np.repeat(scales, sizes)
        self.state_intercept_ = np.concatenate([
            per_state(b, shape) for b, shape in zip(intercepts, structure.block_shapes)])
        self.baseline_ = self.baseline
        state_rows = RowSolution(*[None if field == "coef" else
                                   np.concatenate([getattr(r, field) for r in state_rows])
                                   for field in RowSolution._fields])
        return self._set_certificates(state_rows, output_rows,
                                      shared.unrolled_norms(self._shared_model))

    def _fit_sim(self, X, targets, states, baseline_outputs, y_for_teacher):
        """The in-memory fit: record the teacher, then fit the weight-shared
        model or the flat one's stages. ``targets`` are the output-row
        targets from y."""
        log = self._fit_log = _FitLog(self)
        with log.stage("teacher (states and outputs)"):
            states, targets, teacher_maps = self._record_teacher(
                X, targets, states, baseline_outputs, y_for_teacher)
        if teacher_maps is not None:
            return self._fit_weight_shared(_SharedReducer(self, X, targets), teacher_maps)
        with _numba_threads(self.n_jobs):
            return self._fit_flat(_InMemoryRows(self, X, states, targets), states.shape[1])

    def _fit_flat(self, rows, n_states):
        """The flat model's stages: the state rows, then the output rows (on
        the new state rows' equilibrium when ``refit_outputs``), then the
        certificates. ``rows`` builds each stage's Gram problem, from data in
        memory (:class:`_InMemoryRows`) or read chunk by chunk
        (:class:`sksim.streaming.StreamedRows`)."""
        with self._log().stage(f"state rows' Gram matrix{rows.how}"):
            problem = rows.state_problem()
        state_rows = self._solve_state_rows(problem[:3], n_states, self._state_solve())
        self._set_state_rows(state_rows.coef, *problem[3:5])
        del problem  # the Gram: the output stage builds its own
        with self._log().stage(f"output rows' Gram matrix{rows.how}"):
            problem = rows.output_problem()
        output_rows = self._solve_output_rows(problem)
        return self._set_certificates(state_rows, output_rows, self._matrix_norms())

    def _log(self):
        """The running fit's :class:`_FitLog` (a silent one outside a fit)."""
        log = getattr(self, "_fit_log", None)
        return log if log is not None else _FitLog()

    def _state_solve(self):
        """``solve(gram, correlations, target_sq, n_bounded)`` of the state rows
        (in row batches on a dask cluster under ``parallel_backend("dask")``;
        progress printed with ``verbose``)."""
        from .streaming import solve_rows_parallel

        progress = self._log().rows("state rows")
        return lambda gram, corr, target_sq, n_bounded: solve_rows_parallel(
            gram, corr, target_sq, progress=progress, **self._state_row_options(n_bounded))

    # --------------------------------------------------- out-of-core fitting
    def _fit_streamed(self, X, y, states, baseline_outputs):
        """Fit from data reduced chunk by chunk (memmaps, dask arrays, batches
        of a DataLoader; see :mod:`sksim.streaming`): the same row problems and
        solvers as the in-memory fit, with O(d^2 + chunk) memory. No fitted
        attribute survives a failure."""
        self._fit_log = _FitLog(self)
        try:
            with _numba_threads(self.n_jobs):
                return self._fit_streamed_stages(X, y, states, baseline_outputs)
        except BaseException:
            for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
                delattr(self, name)
            raise

    def _fit_streamed_stages(self, X, y, states, baseline_outputs):
        from . import streaming as st

        self._check_penalties()
        if st.is_batch_iterable(X):
            if y is not None or states is not None or baseline_outputs is not None:
                raise ValueError(
                    "X is an iterable of (inputs, labels) batches: y, states and "
                    "baseline_outputs come from it and the teacher, so pass y=None "
                    "and no states or baseline_outputs.")
            if not hasattr(self.baseline, "record"):
                raise ValueError("X as an iterable of batches needs a TorchBaseline "
                                 "teacher (baseline) to record the states.")
            source = st.BatchSource(X)
            y, n_features = source.labels()
        else:
            n_features = self._check_streamed_arrays(X, y, states, baseline_outputs)
            y = np.asarray(y.compute() if st.is_dask_array(y) else y)
            source = st.make_source(X, y, states, baseline_outputs)
        self.n_features_in_ = n_features
        encode, n_targets = self._streamed_targets(y)
        self._check_sample_count(len(y))
        maps = None
        if states is None and hasattr(self.baseline, "trace"):
            maps = self._weight_shared_teacher(source.first_rows(2), None)
        if maps is not None:
            return self._fit_weight_shared_streamed(source, X, y, baseline_outputs, maps,
                                                    encode, n_targets)
        if baseline_outputs is not None and baseline_outputs.shape[1] != \
                self._n_output_columns(baseline_outputs):
            raise ValueError(
                f"baseline_outputs must have {self._n_output_columns(baseline_outputs)} "
                f"columns; got {baseline_outputs.shape[1]}.")
        recipe, n_states = self._streamed_recipe(source, states, baseline_outputs,
                                                 encode, n_targets)
        source.size_chunks(n_states, n_targets)
        if self.state_scaling == "rms" and recipe.teacher is not None:
            scales = self._unit_rms_scales(st.block_rms(source, recipe, self._teacher_blocks))
            recipe = recipe._replace(scales=scales)
            self.state_scales_ = scales
        return self._fit_flat(st.StreamedRows(self, source, recipe), n_states)

    def _fit_weight_shared_streamed(self, source, X, y, baseline_outputs, maps, encode,
                                    n_targets):
        """A weight-shared fit on a memmap (the in-memory reducer reads it
        batch by batch) or on dask inputs (reduced on the workers)."""
        from . import streaming as st

        if isinstance(source, st.BatchSource):
            raise ValueError(  # noqa: TRY004 - the documented error for a bad input
                "A weight-shared fit reads X as an array, a memmap or a dask array, not "
                "as batches; pass one of those, or set weight_sharing=False.")
        self._forget_model()
        kind = ("outputs" if baseline_outputs is not None else
                "teacher" if self.output_target == "baseline" else "y")
        columns = None
        if kind == "teacher":
            first_outputs = np.asarray(self.baseline.record(source.first_rows(2))[1])
            first_outputs = first_outputs.reshape(len(first_outputs), -1)
            n_targets = self._teacher_output_width(first_outputs)
            columns = self._teacher_columns(first_outputs)
        if isinstance(source, st.DaskSource):
            seed = self.random_state
            if seed is not None and not isinstance(seed, Integral):
                seed = int(check_random_state(seed).randint(2**31 - 1))
            options = st.SharedOptions(
                self.baseline, self.fit_intercept, self.positions_per_image, seed,
                self.equilibrium_tol, self.equilibrium_max_iter,
                st.ChunkRecipe(None, None, kind, encode, n_targets, columns))
            # a classifier's block pass counts the teacher's agreement with y
            check = getattr(self, "_check_teacher_agreement", None)
            return self._fit_weight_shared(
                st.DaskSharedReducer(options, X, y, baseline_outputs, check), maps)
        if kind == "outputs":
            targets = np.asarray(baseline_outputs, dtype=np.float64)
        elif kind == "teacher":
            targets = self._batched_teacher_targets(X)
            self._check_teacher_targets(targets, y)
        else:
            targets = encode(y)
        return self._fit_weight_shared(_SharedReducer(self, X, targets), maps)

    def _check_sample_count(self, n_samples):
        """One sample with an intercept centres the design to zero: every row
        would be its intercept alone, a constant model. Raise instead."""
        if n_samples < 2 and self.fit_intercept:
            raise ValueError(
                f"{type(self).__name__} with fit_intercept=True needs at least 2 samples; "
                f"got {n_samples} sample: the centred design would be zero and the model "
                "a constant. Pass more samples, or fit_intercept=False.")

    def _check_penalties(self):
        if self.row_bound is None:
            for name in ("alpha", "output_alpha"):
                if getattr(self, name) == 0:
                    raise ValueError(
                        f"{name}=0 needs row_bound: without a penalty or a bound "
                        "the rows are unpenalised least-squares problems (not "
                        "sparse, not unique on dead or duplicate columns, and "
                        f"with no optimality certificate). Set {name} > 0 or "
                        "set row_bound."
                    )

    @staticmethod
    def _check_streamed_arrays(X, y, states, baseline_outputs):
        """Shapes and dtypes of out-of-core inputs (their values are checked
        chunk by chunk as they are read); returns the number of features."""
        n_samples = X.shape[0] if len(X.shape) == 2 else None
        if n_samples is None:
            raise ValueError(f"X must be a 2-D array; got shape {X.shape}.")
        for name, array in (("X", X), ("states", states), ("baseline_outputs",
                                                            baseline_outputs)):
            if array is None:
                continue
            if len(array.shape) != 2 or array.shape[0] != n_samples:
                raise ValueError(
                    f"{name} must have shape (n_samples, n_columns) with the {n_samples} "
                    f"rows of X; got {tuple(array.shape)}.")
            if np.dtype(array.dtype).kind not in "fiu":
                raise ValueError(f"{name} must hold numbers; it has dtype {array.dtype}.")
        if y is None or np.shape(y)[0] != n_samples:
            raise ValueError(f"y must have the {n_samples} rows of X; got "
                             f"{None if y is None else np.shape(y)}.")
        return X.shape[1]

    def _streamed_recipe(self, source, states, baseline_outputs, encode, n_targets):
        """The ChunkRecipe of a streamed fit (sets ``baseline_``,
        ``state_scales_`` and the teacher's blocks) and the number of states."""
        from . import streaming as st

        use_teacher = baseline_outputs is None and self.output_target == "baseline"
        targets = "outputs" if baseline_outputs is not None else "y"
        self._forget_model()
        if states is not None:
            self.baseline_, self.state_scales_, self._teacher_blocks = None, None, None
            return st.ChunkRecipe(None, None, targets, encode, n_targets), states.shape[1]
        teacher = self.baseline
        if not (hasattr(teacher, "record") or isinstance(teacher, FrozenEstimator)
                and isinstance(teacher.estimator, self._teacher_class)):
            raise ValueError(
                "An out-of-core fit (memmap or dask inputs, or batches) needs precomputed "
                "states, a fitted scikit-learn MLP wrapped in FrozenEstimator, or a "
                f"TorchBaseline as baseline; got {type(teacher).__name__} (an unfitted "
                "teacher would train on X in memory).")
        first = source.first_rows(2)
        # a teacher that comes fitted: checked, never trained here
        self.baseline_ = self._fitted_teacher(first, None)
        # the first rows give the teacher's widths; each chunk is recorded apart
        record = self._record(self.baseline_, first)
        self._teacher_blocks = record.blocks
        scales = record.well_posed_scales if self.state_scaling == "well_posed" else None
        self.state_scales_ = scales
        recipe = st.ChunkRecipe(record.chunk_teacher, scales,
                                "teacher" if use_teacher else targets, encode, n_targets)
        if use_teacher:
            # the teacher's columns in the order of classes_; a classifier checks
            # the order on the state stage's pass (StreamedRows.state_problem)
            recipe = recipe._replace(
                n_targets=self._teacher_output_width(record.outputs),
                columns=self._teacher_columns(
                    np.asarray(record.outputs).reshape(len(first), -1)))
        return recipe, sum(record.blocks)

    def _teacher_output_width(self, outputs):
        """The teacher's output count, checked against y as in the in-memory fit
        (one logit for two classes is allowed)."""
        return self._teacher_targets(outputs, len(outputs)).shape[1]

    def _record_teacher(self, X, targets, states, baseline_outputs, y_for_teacher):
        """Validate the fit inputs and record the teacher. Returns ``(states,
        targets, teacher_maps)``: the (scaled) pre-activations of the flat
        model and the output-row targets, or the teacher's maps when the
        weight-shared model is fitted (then ``states`` is None)."""
        self._check_penalties()
        n_samples = X.shape[0]
        if states is not None:
            states = self._check_sample_aligned(states, "states", n_samples)
        if baseline_outputs is not None:
            targets = self._check_sample_aligned(
                baseline_outputs, "baseline_outputs", n_samples,
                self._n_output_columns(baseline_outputs),
            )
        self._forget_model()
        # the output rows match the teacher's raw outputs when it ran here
        use_teacher = baseline_outputs is None and self.output_target == "baseline"
        teacher_maps = self._weight_shared_teacher(X, states)
        if teacher_maps is not None:
            if use_teacher:
                targets = self._batched_teacher_targets(X)
                self._check_teacher_targets(targets, y_for_teacher)
            return None, targets, teacher_maps
        if states is not None:
            teacher, record = None, record_states(states)
        else:
            teacher = self._fitted_teacher(X, y_for_teacher)
            record = self._record(teacher, X)
        self.baseline_ = teacher
        states = self._scaled_states(record)
        if not np.all(np.isfinite(states)):
            raise ValueError("baseline produced non-finite states.")
        if use_teacher and record.outputs is not None:
            targets = self._teacher_targets(record.outputs, n_samples)
            self._check_teacher_targets(targets, y_for_teacher)
        return states, targets, None

    def _forget_model(self):
        """A refit forgets the previous model: a flat refit of a weight-shared
        model must not keep its kernels, nor a weight-shared refit the
        unrolled matrices of the flat one. What the input validation set for
        this fit (``n_features_in_``, ``classes_``, ...) stays."""
        self._shared_model = None
        for attribute in FITTED_ATTRIBUTES:
            if attribute.clears_on_refit:
                self.__dict__.pop(attribute.name, None)

    def _batched_teacher_targets(self, X):
        """A torch teacher's outputs on X as output-row targets, recorded batch
        by batch (its states are not kept)."""
        outputs = np.vstack([out for _, _, out in self.baseline.iter_batches(X)])
        return self._teacher_targets(outputs, X.shape[0])

    def _teacher_targets(self, outputs, n_samples):
        """The teacher's raw outputs as output-row targets, checked against y
        (a classifier's put in the order of ``classes_``)."""
        outputs = np.asarray(outputs, dtype=np.float64)
        outputs = outputs.reshape(n_samples, -1)
        columns = self._teacher_columns(outputs)
        if not np.all(np.isfinite(outputs)):
            raise ValueError("baseline produced non-finite outputs.")
        return outputs if columns is None else columns(outputs)

    def _teacher_columns(self, outputs):
        """Check the teacher's output count (``outputs``: 2-D, some samples'
        raw outputs) against y; returns the
        :class:`~sksim.streaming.TeacherColumns` that put them in the order
        of the output rows, or None to keep them as they are."""
        expected = self._n_output_columns(outputs)
        if outputs.shape[1] != expected:
            raise ValueError(
                f"The teacher has {outputs.shape[1]} outputs but y needs {expected} "
                "output columns; the output rows cannot match the teacher. Set "
                "output_target='y' to fit y instead.")
        return None

    def _check_teacher_targets(self, targets, y):
        """A classifier checks its teacher's targets against y (its class
        order); nothing to check for a regressor."""

    def _row_bound(self):
        return np.inf if self.row_bound is None else float(self.row_bound)

    def _state_row_options(self, n_bounded):
        """Keyword arguments of the state rows' solve (``n_bounded`` columns
        carry the kappa bound)."""
        return {"n_bounded": n_bounded, "bound": self.kappa,
                "row_bound": self._row_bound(), "l1": self.alpha * self.l1_ratio,
                "l2": self.alpha * (1.0 - self.l1_ratio), "tol": self.tol,
                "max_iter": self.max_iter, "relax": self.relax, "solver": self.solver}

    def _solve_state_rows(self, problem, n_states, solve):
        """All state rows by ``solve(gram, correlations, target_sq, n_bounded)``
        (a RowSolution, or a list of them along a path): at once for the
        implicit structure, block by block for the feed-forward one."""
        if self.structure == "implicit":
            return solve(*problem, n_states)
        return _feedforward_rows(problem, n_states, self._feedforward_blocks(n_states),
                                 solve)

    def _feedforward_blocks(self, n_states):
        """The sizes of the state blocks in forward order: ``state_blocks``, or
        the teacher's layers."""
        blocks = self.state_blocks
        if blocks is None:
            blocks = getattr(self, "_teacher_blocks", None)
        if blocks is None:
            raise ValueError(
                "structure='feedforward' with precomputed states needs state_blocks: "
                "the number of states in each block (layer), in forward order.")
        blocks = np.asarray(blocks)
        if (blocks.ndim != 1 or blocks.size == 0 or blocks.dtype.kind not in "iu"
                or np.any(blocks < 1) or blocks.sum() != n_states):
            raise ValueError(
                f"state_blocks must be positive integers summing to the {n_states} "
                f"states; got {self.state_blocks!r}.")
        return [int(size) for size in blocks]

    def _state_problem(self, X, states):
        """Post-activations of the teacher's states and the Gram problem of
        the state rows: ``(gram, correlations, target_sq, design_mean,
        state_mean)``."""
        post_activations = _ACTIVATIONS[self.activation](states)
        return post_activations, _centred_gram_problem(
            [post_activations, X], states, self.fit_intercept)

    def _set_state_rows(self, state_coef, design_mean, state_mean):
        """``A_``, ``B_`` and the state intercepts from the solved state rows."""
        n_states = state_coef.shape[0]
        self.n_states_ = n_states
        self.A_ = sp.csr_array(state_coef[:, :n_states])
        self.B_ = sp.csr_array(state_coef[:, n_states:])
        self.A_.eliminate_zeros()
        self.B_.eliminate_zeros()
        self.state_intercept_ = state_mean - state_coef @ design_mean

    def _fit_output_rows(self, X, targets, post_activations):
        """Solve the output rows (on the model's equilibrium states when
        ``refit_outputs``, else on the teacher's) and set ``C_``, ``D_`` and
        ``intercept_``; returns their RowSolution."""
        with self._log().stage("output rows' Gram matrix"):
            problem = self._output_problem(X, targets, post_activations)
        return self._solve_output_rows(problem)

    def _output_problem(self, X, targets, post_activations):
        """Gram problem of the output rows: on the model's equilibrium states
        when ``refit_outputs``, else on the teacher's ``post_activations``."""
        if self.refit_outputs:
            output_states, _ = self._equilibrium(X, warn=True)
        else:
            output_states = post_activations
        return _centred_gram_problem([output_states, X], targets, self.fit_intercept)

    def _solve_output_rows(self, problem):
        """Solve the output rows of ``problem`` (gram, correlations, target_sq,
        design_mean, target_mean, ...) and set ``C_``, ``D_`` and
        ``intercept_``; returns their RowSolution."""
        from .streaming import solve_rows_parallel

        gram, corr, target_sq, design_mean, target_mean = problem[:5]
        n_states = self.n_states_
        output_alpha = self.alpha if self.output_alpha is None else self.output_alpha
        output_rows = solve_rows_parallel(
            gram, corr, target_sq, progress=self._log().rows("output rows"),
            row_bound=self._row_bound(),
            l1=output_alpha * self.l1_ratio,
            l2=output_alpha * (1.0 - self.l1_ratio), tol=self.tol,
            max_iter=self.max_iter, relax=self.relax, solver=self.solver,
        )
        output_coef = output_rows.coef
        self.C_ = sp.csr_array(output_coef[:, :n_states])
        self.D_ = sp.csr_array(output_coef[:, n_states:])
        self.C_.eliminate_zeros()
        self.D_.eliminate_zeros()
        self.intercept_ = target_mean - output_coef @ design_mean
        return output_rows

    def _matrix_norms(self):
        return tuple(_row_infinity_norm(getattr(self, name))
                     for name in ("A_", "B_", "C_", "D_"))

    def _set_certificates(self, state_rows, output_rows, norms):
        """Row certificates, warnings and the Lipschitz bound from the
        ``(||A||_inf, ||B||_inf, ||C||_inf, ||D||_inf)`` of the fitted model."""
        self.state_duality_gaps_ = state_rows.duality_gap
        self.state_objectives_ = state_rows.objective
        self.state_multipliers_ = state_rows.multiplier
        self.state_row_bound_multipliers_ = state_rows.row_multiplier
        self.output_row_bound_multipliers_ = output_rows.row_multiplier
        self.output_duality_gaps_ = output_rows.duality_gap
        self.output_objectives_ = output_rows.objective
        self.n_iter_ = int(max(1, state_rows.n_iter.max(initial=0),
                               output_rows.n_iter.max(initial=0)))
        for name, rows in (("state", state_rows), ("output", output_rows)):
            self._warn_rows(name, rows)
        a_norm, b_norm, c_norm, d_norm = norms
        self.lipschitz_bound_ = c_norm * b_norm / (1.0 - a_norm) + d_norm
        kernels = ([k for block in self.kernels_ for k in block] + self.output_kernels_
                   if self._is_weight_shared() else
                   [getattr(self, name).data for name in ("A_", "B_", "C_", "D_")])
        if not all(np.all(np.isfinite(k)) for k in kernels):
            raise ValueError("fit produced a non-finite model; rescale X.")
        if self.verbose:
            print(
                f"[{type(self).__name__}] {state_rows.duality_gap.size} state rows, "
                f"{output_rows.duality_gap.size} output rows, max epochs "
                f"{self.n_iter_}, max relative gap "
                f"{self._max_relative_gap(state_rows):.2e} (states), "
                f"{self._max_relative_gap(output_rows):.2e} (outputs); rows by "
                f"solver: {self._solver_counts(state_rows)} (states), "
                f"{self._solver_counts(output_rows)} (outputs)"
            )
        return self

    @staticmethod
    def _solver_counts(rows):
        counts = np.bincount(rows.method, minlength=3)
        return ", ".join(f"{name} {count}" for name, count in
                         zip(("cd", "homotopy", "homotopy then cd"), counts) if count)

    @staticmethod
    def _max_relative_gap(rows):
        if rows.duality_gap.size == 0:
            return 0.0
        return float(np.max(rows.duality_gap / np.maximum(rows.objective, 1e-300)))

    def _warn_rows(self, name, rows):
        failed = rows.status != 0
        if np.any(failed):
            alpha = self.alpha if name == "state" or self.output_alpha is None \
                else self.output_alpha
            hint = "increase max_iter (or tol) for a certified optimum"
            if alpha == 0 and self.row_bound is not None:
                # With no penalty, a row whose row_bound is inactive is an
                # unpenalised least-squares problem: no dual point certifies it.
                hint = (f"with {name} alpha=0 a row whose row_bound is inactive "
                        "cannot be certified; use a positive alpha or a smaller "
                        "row_bound")
            warnings.warn(
                f"{int(failed.sum())} of {failed.size} {name} rows did not reach "
                f"the relative duality gap tol={self.tol:g} within "
                f"max_iter={self.max_iter} epochs (largest relative gap reached: "
                f"{self._max_relative_gap(rows):.3e}). The model is well posed "
                f"and usable; {hint}.",
                ConvergenceWarning,
            )

    # --------------------------------------------------------------- inference
    def _equilibrium_chunks(self, X, warn=True, direct=False):
        """Yield ``(start, stop, rows, states, residual, direct)`` over sample
        chunks of X (any float dtype and layout): for a weight-shared model
        the float64 rows (else None) and the list of per-block states, else
        the states; the residuals; and with ``direct`` the inputs' term
        ``D u`` of the outputs (else None). Once all are yielded, one
        ConvergenceWarning if a sample missed ``equilibrium_tol``."""
        n_unconverged, largest = 0, 0.0
        chunks = (self._shared_equilibrium_chunks(X) if self._is_weight_shared()
                  else self._flat_equilibrium_chunks(X, direct))
        for start, stop, rows, states, residual, direct_term in chunks:
            blocks = states if isinstance(states, list) else [states]
            if not all(np.all(np.isfinite(block)) for block in blocks):
                raise ValueError(
                    "The equilibrium states overflow float64: X is too large in "
                    "magnitude for this model. Rescale X as it was at fit time."
                )
            scale = np.maximum(1.0, np.max([np.abs(block).max(axis=1, initial=0.0)
                                            for block in blocks], axis=0))
            n_unconverged += int(np.sum(residual > self.equilibrium_tol * scale))
            largest = max(largest, float(residual.max(initial=0.0)))
            yield start, stop, rows, states, residual, direct_term
        if warn and n_unconverged:
            warnings.warn(
                f"The equilibrium did not reach equilibrium_tol="
                f"{self.equilibrium_tol:g} for {n_unconverged} of "
                f"{X.shape[0]} samples within equilibrium_max_iter="
                f"{self.equilibrium_max_iter} sweeps (largest residual "
                f"{largest:.3e}); increase equilibrium_max_iter.",
                ConvergenceWarning,
            )

    def _shared_equilibrium_chunks(self, X):
        for start, stop in _sample_chunks(X.shape[0], X.shape[1] + self.n_states_):
            rows = _float64_rows(X, start, stop)
            with np.errstate(over="ignore", invalid="ignore"):
                states, residual, _ = shared.block_equilibrium(
                    self._shared_model, rows, tol=self.equilibrium_tol,
                    max_iter=self.equilibrium_max_iter)
            yield start, stop, rows, states, residual, None

    def _flat_equilibrium_chunks(self, X, direct):
        """The flat model's equilibrium in two phases: the products ``B u``
        (with ``direct`` also ``D u``, in the same product, so X is read once)
        chunk by chunk, then the equilibrium of all samples in one kernel
        call. BLAS products and numba's parallel kernels do not alternate:
        OpenBLAS's threads spin for a while after each product and slowed
        each following kernel by ~40 ms on two cores. Holds
        (n_samples, n_states + n_outputs) floats, as large as the states."""
        n_states = self.n_states_
        weights = sp.vstack([self.B_, self.D_], format="csr") if direct else self.B_
        chunks = _sample_chunks(X.shape[0], X.shape[1] + weights.shape[0])
        terms = np.empty((X.shape[0], weights.shape[0]))
        for start, stop in chunks:
            terms[start:stop] = _times_transpose(_float64_rows(X, start, stop), weights)
        drive = terms[:, :n_states]
        drive += self.state_intercept_
        if _forward_blocks(self.A_) is not None:  # no feedback: one exact pass
            states, residual = forward_substitution(self.A_, drive), np.zeros(X.shape[0])
        else:
            solution = solve_equilibrium(self.A_, drive, tol=self.equilibrium_tol,
                                         max_iter=self.equilibrium_max_iter)
            states, residual = solution.states, solution.residual
        for start, stop in chunks:
            yield (start, stop, None, states[start:stop], residual[start:stop],
                   terms[start:stop, n_states:] if direct else None)

    def _equilibrium(self, X, warn=True):
        """Equilibrium states and residuals of the rows of X, over sample chunks."""
        states = np.empty((X.shape[0], self.n_states_))
        residual = np.empty(X.shape[0])
        for start, stop, _, chunk_states, chunk_residual, _ in self._equilibrium_chunks(
                X, warn):
            states[start:stop] = (np.hstack(chunk_states) if isinstance(chunk_states, list)
                                  else chunk_states)
            residual[start:stop] = chunk_residual
        return states, residual

    def equilibrium(self, X, *, return_residual=False):
        """Hidden states ``x*`` solving ``x = relu(A x + B u + b)`` for each row of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Model inputs ``U``.
        return_residual : bool, default=False
            Also return the residual certificate
            ``||x - relu(A x + B u + b)||_inf`` per sample; the distance to the
            exact equilibrium is at most ``residual / (1 - ||A||_inf)``.

        Returns
        -------
        states : ndarray of shape (n_samples, n_states)
        residual : ndarray of shape (n_samples,)
            Only when ``return_residual`` is True.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        with _numba_threads(self.n_jobs):
            states, residual = self._equilibrium(X)
        return (states, residual) if return_residual else states

    def _raw_outputs(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if self._is_weight_shared():
            return self._weight_shared_outputs(X)
        outputs = np.empty((X.shape[0], self.C_.shape[0]))
        with _numba_threads(self.n_jobs):
            for start, stop, _, states, _, direct in self._equilibrium_chunks(
                    X, direct=True):
                outputs[start:stop] = _times_transpose(states, self.C_)
                outputs[start:stop] += direct
        outputs += self.intercept_
        self._check_finite_outputs(outputs)
        return outputs

    def _weight_shared_outputs(self, X):
        """Outputs chunk by chunk: the states of all samples (71,680 per image
        for the CIFAR-100 teacher) are never held at once."""
        outputs = np.empty((X.shape[0], self.intercept_.shape[0]))
        for start, stop, rows, post, _, _ in self._equilibrium_chunks(X):
            with np.errstate(over="ignore", invalid="ignore"):
                outputs[start:stop] = shared.head_outputs(self._shared_model, rows, post)
        self._check_finite_outputs(outputs)
        return outputs

    @staticmethod
    def _check_finite_outputs(outputs):
        if not np.all(np.isfinite(outputs)):
            raise ValueError(
                "The outputs overflow float64: X is too large in magnitude for "
                "this model. Rescale X as it was at fit time."
            )

    def _is_weight_shared(self):
        return getattr(self, "_shared_model", None) is not None

    def to_torch(self, *, dtype=None, sparse=None, tol=None, max_iter=None):
        """The fitted model as a torch ``nn.Module`` (needs torch).

        The module computes the equilibrium and the raw outputs (what
        ``decision_function`` / ``predict`` return before any reshaping) on
        batched tensors of any device it is moved to, the way ``predict``
        does: one pass of block products when ``A`` has no feedback (the
        ``"feedforward"`` structure), else sksim's Gauss-Seidel kernel for
        CPU tensors and Jacobi steps on other devices. Gradients with
        respect to the inputs flow through an iterative equilibrium by
        implicit differentiation (an adjoint fixed point), not by storing
        iterates; through a one-pass equilibrium by autograd.

        Parameters
        ----------
        dtype : torch.dtype, default=None
            Dtype of the weights; ``None`` means ``torch.float64``. The
            Jacobi and adjoint loops stop at ``tol`` or, when that is below
            the dtype's rounding floor (float32), once the residual has
            stopped decreasing for 20 iterations; the CPU Gauss-Seidel
            kernel works in float64.
        sparse : bool, default=None
            Store A, B, C, D as sparse COO tensors; ``None`` does so for each
            matrix with fewer than 5% of its entries nonzero (torch's sparse
            products are much slower than dense ones above that). A
            weight-shared model is exported as its blocks instead, never
            unrolled (a max-pooling one has no ``A_``): each link's pooling
            stages and ``conv2d`` / linear map holding its kernel, then each
            block's activation, differentiated by autograd; a block with a
            lateral link (``lateral_kernel``) iterates
            ``x_b <- phi(drive_b + K x_b)`` to ``tol`` and is differentiated
            implicitly. ``sparse`` does not apply to it.
        tol : float, default=None
            Residual tolerance of the module's fixed-point loops (relative
            to ``max(1, max|x|)``); ``None`` means ``equilibrium_tol``.
        max_iter : int, default=None
            Most sweeps or steps per loop; ``None`` means
            ``10 * equilibrium_max_iter``.

        Returns
        -------
        module : torch.nn.Module
            ``module(u)`` has shape (batch, n_outputs);
            ``module.equilibrium(u)`` has shape (batch, n_states). The
            module converts (``.to``, ``.float()``, ``.double()``), saves
            its buffers (``state_dict``) and pickles (``torch.save``) like
            any other.
        """
        check_is_fitted(self)
        from .torch_export import build_shared_torch_module, build_torch_module

        if self._is_weight_shared():
            return build_shared_torch_module(self, dtype=dtype, tol=tol, max_iter=max_iter)
        return build_torch_module(self, dtype=dtype, sparse=sparse, tol=tol,
                                  max_iter=max_iter, forward_blocks=_forward_blocks(self.A_))

    @property
    def n_nonzero_(self):
        """Number of nonzero fitted parameters, intercepts excluded: entries of
        A, B, C and D, or for a weight-shared model the nonzero kernel entries
        (each shared weight counted once, not its unrolled copies), which is
        what compares with the teacher's parameter count."""
        check_is_fitted(self)
        if self._is_weight_shared():
            return shared.count_parameters(self._shared_model)
        return int(sum(getattr(self, n).nnz for n in ("A_", "B_", "C_", "D_")))

    @property
    def lipschitz_path_bound_(self):
        """Tighter certified sensitivity: ``|| |C| (I - |A|)^-1 |B| + |D| ||_inf``.

        Almost everywhere the Jacobian of the outputs is
        ``C (I - S A)^-1 S B + D`` with ``S`` the diagonal of ReLU slopes in
        [0, 1], and entrywise ``|(I - S A)^-1 S| <= (I - |A|)^-1`` (Neumann
        series, ``||A||_inf < 1``), so this bounds the l_inf Lipschitz
        constant of the model; it is never larger than ``lipschitz_bound_``
        and often several times smaller. Computed on access with one dense
        solve of size n_states.
        """
        check_is_fitted(self)
        if self._is_weight_shared():
            return shared.path_bound(self._shared_model)
        return path_bound(self.A_, self.B_, self.C_, self.D_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


def _unrolled_matrix(name, doc):
    """``A_``..``D_``: set by the flat fit; for a weight-shared model the
    unrolled operator, built from the kernels on first access and kept."""

    def getter(self):
        if name in self.__dict__:
            return self.__dict__[name]
        if not self._is_weight_shared():
            raise AttributeError(name)
        model = self._shared_model
        for key, matrix in zip(("A_", "B_", "C_", "D_"),
                               unroll(model.structure, model.kernels, model.head_kernels)):
            self.__dict__[key] = matrix
        return self.__dict__[name]

    def setter(self, value):
        self.__dict__[name] = value

    return property(getter, setter, doc=doc)


for _matrix in FITTED_ATTRIBUTES:
    if _matrix.kind == "matrix":
        setattr(_BaseSIM, _matrix.name, _unrolled_matrix(
            _matrix.name, f"{_matrix.doc} A {_matrix.type}."))


_OBJECTIVE_DOC = r"""
    The model computes hidden states as the fixed point
    ``x = relu(A x + B u + b_x)`` and predicts ``y = C x + D u + b_y``. Fitting
    records the teacher's pre-activations ``Z`` (``m`` samples x ``n`` states),
    post-activations ``X = relu(Z)`` and the inputs ``U``, and solves one convex
    problem per row on the shared design ``W = [X, U]`` (columns centred when
    ``fit_intercept``; intercepts unpenalised; no other rescaling):

    state row ``i`` (``z_i`` = column ``i`` of ``Z``)::

        min_{a_i, b_i}  1/(2m) ||z_i - X a_i - U b_i||^2
                        + alpha * l1_ratio * ||(a_i, b_i)||_1
                        + 0.5 * alpha * (1 - l1_ratio) * ||(a_i, b_i)||_2^2
        s.t.            ||a_i||_1 <= kappa,  ||(a_i, b_i)||_1 <= row_bound

    output row ``k`` (``t_k`` = target column ``k``; ``X*`` replaces ``X`` when
    ``refit_outputs``)::

        min_{c_k, d_k}  1/(2m) ||t_k - X c_k - U d_k||^2
                        + output_alpha * l1_ratio * ||(c_k, d_k)||_1
                        + 0.5 * output_alpha * (1 - l1_ratio) * ||(c_k, d_k)||_2^2
        s.t.            ||(c_k, d_k)||_1 <= row_bound

    (the ``row_bound`` constraints only when it is set), which is scikit-learn's ElasticNet scaling (``l1_ratio=1`` is the Lasso).
    Each row is solved until its duality gap is at most ``tol`` times its
    objective, and every returned model satisfies ``||A||_inf <= kappa``
    exactly (in floating point, for any summation order), so the equilibrium
    exists, is unique and is reached from any start.
"""

_PARAMETERS_DOC = """
    baseline : None, sklearn MLP, FrozenEstimator or TorchBaseline, default=None
        Where the states come from when ``fit`` gets no ``states``. ``None``
        trains an embedded ReLU MLP teacher with hidden layers (64, 32); an
        MLP is cloned and trained on (X, y); one wrapped in
        ``sklearn.frozen.FrozenEstimator`` is used as is. The teacher's
        states are rescaled block by block as ``state_scaling`` says.
    alpha : float, default=1e-3
        Penalty weight of the state rows. Must be positive unless
        ``row_bound`` is set (``alpha=0`` is then the pure constrained form:
        sparsity comes from the bounds alone).
    output_alpha : float, default=None
        Penalty weight of the output rows; ``None`` uses ``alpha``. Zero
        needs ``row_bound`` as for ``alpha``.
    l1_ratio : float, default=1.0
        Elastic-net mix as in ElasticNet: 1 is the Lasso, 0 pure ridge.
    solver : {"auto", "cd", "homotopy"}, default="auto"
        Row solver, both exact and certified by the same duality gap:
        coordinate descent with the multiplier search of the ``kappa`` bound
        (``"cd"``), or the homotopy that follows each row's bound-constrained
        path exactly from ``alpha_max`` down to ``alpha`` (``"homotopy"``,
        see :mod:`sksim.solvers.homotopy`; it follows one bound, so state
        rows under ``row_bound`` and rows it cannot certify are solved by
        coordinate descent; output rows under ``row_bound`` follow that
        bound over the whole row).
        ``"auto"`` picks per group of rows by
        :func:`sksim.solvers.auto_solver`: the homotopy for rows with one
        bound (the state rows' ``kappa``, the output rows' ``row_bound``),
        coordinate descent for rows with both, and for unbounded output rows
        coordinate descent when the design is well conditioned, else the
        homotopy.
    relax : float in (0, 1], default=1.0
        The relaxed Lasso: below 1, every row (state and output) is solved
        again on its support with both penalties multiplied by ``relax``,
        under the same bounds. ``alpha`` then chooses which entries are
        nonzero and ``relax * alpha`` how much they are shrunk; small values
        undo the Lasso's shrinkage, which compounds from block to block in
        deep teachers. The row certificates are those of the restricted
        problems. 1 is the plain solve.
    kappa : float, default=0.95
        Well-posedness bound on ``||A||_inf``, in the open interval (0, 1).
    row_bound : float, default=None
        Robust fitting: bound on the L1 norm of every row of ``[A B]`` and of
        ``[C D]`` (intercepts excluded), enforced exactly like ``kappa``. It
        bounds the certified sensitivity by construction:
        ``lipschitz_bound_ <= row_bound**2 / (1 - kappa) + row_bound``.
        ``None`` means no such bound. For a weight-shared model the bound is
        relative to the teacher (its block scales make absolute units
        arbitrary): the rows of block ``b``, and the output rows, are bounded
        by ``row_bound`` times the largest row L1 norm of the teacher's own
        rescaled kernel there (``block_row_bounds_``), so ``row_bound=1``
        admits the teacher and ``lipschitz_path_bound_`` falls with
        ``row_bound`` to the power of the depth.
    activation : {"relu"}, default="relu"
        The componentwise activation ``phi``.
    fit_intercept : bool, default=True
        Fit the unpenalised intercepts ``b_x`` and ``b_y``.
    refit_outputs : bool, default=True
        Fit the output rows on the model's own equilibrium states ``X*``
        instead of the teacher's, so predictions are consistent with what the
        model computes.
    tol : float, default=1e-6
        Relative duality-gap tolerance of every row problem.
    max_iter : int, default=20000
        Maximum coordinate-descent epochs per row.
    equilibrium_tol : float, default=1e-12
        Residual tolerance of the equilibrium, relative to ``max(1, ||x||_inf)``.
    equilibrium_max_iter : int, default=1000
        Maximum Gauss-Seidel sweeps of the equilibrium per sample.
    n_jobs : int, default=None
        Threads for the row solver and the equilibrium. ``None`` or ``-1`` uses
        all of numba's threads (as scikit-learn's OpenMP estimators do).
    random_state : int, RandomState instance or None, default=None
        Seeds the embedded teacher. The row solver is deterministic.
    verbose : int, default=0
        Print the fit's progress: each stage's time (teacher, Gram matrices),
        the rows solved so far with an estimate of the time left, and a
        one-line summary at the end. The rows are then solved in eight
        batches (same results).
    weight_sharing : {"auto"} or bool, default="auto"
        Fit the weight-shared model (one kernel per link of each state block,
        see :mod:`sksim.weight_sharing`) for a ``TorchBaseline`` teacher:
        ``"auto"`` when the teacher has convolutional blocks, ``True`` always
        (an error if the teacher is not a chain of affine layers between its
        ReLUs), ``False`` never (the flat model).
    lateral_kernel : int, default=None
        Weight-shared model: add a same-resolution ``k x k`` convolution of
        each spatial block on itself (the equilibrium then iterates).
    skip_links : int, default=0
        Weight-shared model: add up to this many skip links into each
        spatial block, from the nearest earlier spatial blocks of equal or
        finer resolution that its teacher layer does not read (3 x 3
        convolutions, padding 1, strided down to the block's resolution).
        They keep the model feed-forward; their columns share the ``kappa``
        bound with the block's other state links.
    positions_per_image : int, default=None
        Weight-shared model: output positions kept per image and block (at
        random, seeded by ``random_state``) in the row designs; ``None`` all.
    block_alpha : {"positions", "relative", "absolute"}, default="positions"
        Weight-shared model: the penalty of block ``b`` is ``alpha`` times the
        RMS of its targets times the RMS of its design columns
        (``"relative"``: independent of the block's state scale), that
        divided by the square root of the block's output positions per image
        (``"positions"``: high-resolution blocks keep more entries), or
        ``alpha`` itself (``"absolute"``); the output rows likewise (one
        position).
    state_inputs : {"teacher", "model"}, default="teacher"
        Weight-shared, feed-forward model: the designs of block ``b`` read
        the teacher's states of the earlier blocks (one pass over the data
        for all blocks), or the fitted model's own states of the earlier
        blocks (``"model"``: blocks fitted in order, one pass each), so that
        each block learns from the inputs it will see at predict time; the
        targets are the teacher's states either way.
    structure : {"implicit", "feedforward"}, default="implicit"
        ``"implicit"``: every state row may use every state (a general ``A``,
        well posed through ``kappa``). ``"feedforward"``: the rows of a block
        of states (a layer of the teacher) may use only the states of earlier
        blocks and the inputs, so ``A`` is strictly block lower triangular,
        the equilibrium is one pass, and the model is well posed for any
        ``A`` (``kappa`` still bounds its rows and the Lipschitz
        certificate). It is a constraint on the row problems (the excluded
        columns are fixed at zero), so every row stays exact and certified.
        The blocks are the teacher's layers, or ``state_blocks``. For a
        weight-shared model (already block-structured) it excludes
        ``lateral_kernel``.
    state_blocks : array-like of int, default=None
        Sizes of the blocks of states in forward order (summing to the number
        of states), for ``structure="feedforward"``: needed with precomputed
        ``states``; overrides the teacher's layers otherwise.
    output_target : {"baseline", "y"}, default="baseline"
        What the output rows fit when the teacher runs in ``fit`` (no
        ``states``): the teacher's raw outputs (``"baseline"``: logits for a
        classifier, before softmax or sigmoid, computed from ``coefs_`` and
        ``intercepts_`` for a scikit-learn MLP; its predictions for a
        regressor), so the model distils the teacher; or ``y`` (``"y"``:
        indicator targets for a classifier). ``baseline_outputs`` passed to
        ``fit`` are used whatever this says; with precomputed ``states`` and
        no ``baseline_outputs`` the output rows fit ``y``.
    state_scaling : {"well_posed", "rms", "none"}, default="well_posed"
        How the states of a flat teacher (a scikit-learn MLP or a
        TorchBaseline; not precomputed ``states``) are rescaled block by
        block (layer by layer; ReLU is positively homogeneous, so the
        teacher's outputs do not change). ``"well_posed"``: block ``b``
        reading block ``b - 1`` through a kernel of largest row L1 norm
        ``r`` is scaled by ``min(1, kappa / r)`` relative to it, so the
        teacher itself meets the bound and is a feasible point of the state
        rows (a torch module that is not a chain of Linear/Conv2d layers
        keeps its states as recorded). ``"rms"``: each block's states
        (after the activation) have unit root mean square over the training
        samples; no guarantee on the teacher's ``A``, any block structure.
        ``"none"``: as recorded. Weight-shared fits support
        ``"well_posed"`` only. The scales are in ``state_scales_``.
"""

def _estimator_doc(summary, attributes, examples):
    """An estimator's docstring: its summary, the objective and parameters
    both share, its attributes and its examples."""
    return (f"{summary}{_OBJECTIVE_DOC}\n    Parameters\n    ----------{_PARAMETERS_DOC}"
            f"\n    Attributes\n    ----------{attributes}\n    Examples\n    --------"
            f"{examples}")


_FIT_DOC = """Fit the implicit model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Model inputs ``U``. A ``numpy.memmap`` or ``dask.array`` (also for
            ``states`` and ``baseline_outputs``) is read chunk by chunk, never
            loaded; with a TorchBaseline teacher X may also be a re-iterable
            of ``(inputs, labels)`` batches such as a torch DataLoader (then
            ``y=None``). See "Out-of-core and distributed fits" in the README.
        {y}
        states : array-like of shape (n_samples, n_states), default=None
            Precomputed baseline pre-activations ``Z``; ``None`` takes them from
            ``baseline``.
        {baseline_outputs}

        Returns
        -------
        self : {name}
        """


def _preview(labels, n=10):
    """At most ``n`` labels of ``labels``, for an error message."""
    labels = list(np.asarray(labels).tolist())
    if len(labels) <= n:
        return repr(labels)
    return repr(labels[:n])[:-1] + f", ... ({len(labels)} in all)]"


def _fit_doc(y, baseline_outputs, name):
    """``fit``'s docstring with the estimator's own ``y`` and
    ``baseline_outputs`` entries."""
    return _FIT_DOC.format(y=y, baseline_outputs=baseline_outputs, name=name)



class SIMRegressor(RegressorMixin, _BaseSIM):
    __doc__ = _estimator_doc(
        "State-driven implicit model for regression.\n",
        attributes_doc(classifier=False),
        """
    >>> from sklearn.datasets import load_diabetes
    >>> from sksim import SIMRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = SIMRegressor(random_state=0).fit(X, y)
    >>> model.A_.shape[0] == model.n_states_
    True
""")

    _teacher_class = MLPRegressor

    def _n_output_columns(self, baseline_outputs):
        return self._n_targets

    def fit(self, X, y=None, states=None, baseline_outputs=None):
        return super().fit(X, y, states, baseline_outputs)

    fit.__doc__ = _fit_doc(
        """y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.""",
        """baseline_outputs : array-like of shape (n_samples, n_outputs), default=None
            The baseline's outputs; when given, the output rows fit them
            instead of ``y`` (without them, the teacher's own outputs when it
            runs here, see ``output_target``).""",
        "SIMRegressor")

    def _streamed_targets(self, y):
        """``(encode, n_targets)`` of a streamed fit's y (values)."""
        from .streaming import ValueTargets

        y = np.asarray(y, dtype=np.float64)
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D; got shape {y.shape}.")
        self._y_ndim = y.ndim
        self._n_targets = 1 if y.ndim == 1 else y.shape[1]
        return ValueTargets(), self._n_targets

    def _validated_targets(self, X, y):
        """Validated ``X``, the output-row targets and ``y`` for the teacher."""
        _check_numeric(X, "X")
        _check_numeric(y, "y")
        X, y = validate_data(
            self, X, y, multi_output=True, y_numeric=True,
            dtype=[np.float64, np.float32],
        )
        self._check_sample_count(X.shape[0])
        y = np.asarray(y, dtype=np.float64)
        self._y_ndim = y.ndim
        targets = y.reshape(-1, 1) if y.ndim == 1 else y
        self._n_targets = targets.shape[1]
        return X, targets, y

    def predict(self, X):
        """Predict ``C x* + D u + b_y`` at the equilibrium ``x*``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        outputs = self._raw_outputs(X)
        return outputs.ravel() if self._y_ndim == 1 else outputs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class SIMClassifier(ClassifierMixin, _BaseSIM):
    __doc__ = _estimator_doc(
        """State-driven implicit model for classification.

    The output rows fit the teacher's logits (one column for a binary
    problem, or one per class) when the teacher runs in ``fit`` (the default
    ``output_target="baseline"``) or when ``baseline_outputs`` are given;
    otherwise (precomputed ``states``, or ``output_target="y"``) indicator
    targets (one column per class, 1 for the sample's class and 0
    elsewhere). ``decision_function`` returns those outputs (their difference
    for two indicator columns), and ``predict_proba`` their softmax (sigmoid
    for a single logit): for a model that fits the teacher's logits these are
    the teacher's probabilities up to the fit's error (scikit-learn's
    ``MLPClassifier.predict_proba`` is the same map of its logits); with
    indicator targets they are normalised scores, not calibrated
    probabilities.

    The teacher's output column ``j`` is the score of ``classes_[j]``, the
    ``j``-th label of y in sorted order, unless the teacher names the class
    of each of its columns: ``TorchBaseline(module, classes=[...])``, or a
    fitted scikit-learn MLP's own ``classes_``. Then ``classes_`` is those
    labels, sorted (also any absent from y), every label of y must be one
    of them, and the teacher's columns are permuted to that order. A
    TorchBaseline without ``classes`` whose outputs are the targets has its
    order checked on the training data (on the outputs the fit records
    anyway): ``fit`` raises a ValueError when the teacher clearly classifies
    y under some matching of its columns to the classes (chance-corrected
    agreement of at least 0.5) but its argmax agrees with y on fewer than
    half as many samples under the sorted order (and by more than
    ``3 sqrt(n_samples)`` samples). A merely weak teacher is fitted.
""",
        attributes_doc(classifier=True),
        """
    >>> from sklearn.datasets import load_digits
    >>> from sksim import SIMClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> model = SIMClassifier(random_state=0).fit(X / 16, y)
    >>> model.score(X / 16, y) > 0.9
    True
""")

    _teacher_class = MLPClassifier

    def _n_output_columns(self, baseline_outputs):
        n_classes = len(self.classes_)
        width = np.shape(baseline_outputs)[1] if np.ndim(baseline_outputs) == 2 else 0
        if n_classes == 2 and width == 1:
            return 1
        return n_classes

    def fit(self, X, y=None, states=None, baseline_outputs=None):
        return super().fit(X, y, states, baseline_outputs)

    fit.__doc__ = _fit_doc(
        """y : array-like of shape (n_samples,)
            Class labels.""",
        """baseline_outputs : array-like of shape (n_samples, n_classes) or (n_samples, 1), default=None
            The baseline's logits (one column for a binary problem is
            allowed); when given, the output rows fit them instead of the
            indicator targets (without them, the teacher's own logits when it
            runs here, see ``output_target``).""",
        "SIMClassifier")

    def _streamed_targets(self, y):
        """``(encode, n_targets)`` of a streamed fit's y (class labels)."""
        from .streaming import LabelTargets

        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels; got shape {y.shape}.")
        self._set_classes(y)
        return LabelTargets(self.classes_), len(self.classes_)

    def _set_classes(self, y):
        """``classes_`` from the labels y, at least two of them; the sorted
        classes of the teacher's output columns when it names them (every
        label of y must be one of them)."""
        check_classification_targets(y)
        seen = np.unique(y)
        if len(seen) < 2:
            raise ValueError(f"y must contain at least 2 classes; got 1 class "
                             f"({seen[0]!r}).")
        declared = self._declared_classes()
        if declared is None:
            self.classes_ = seen
            return
        classes = np.unique(declared)
        known = set(classes.tolist())
        unknown = [label for label in seen.tolist() if label not in known]
        if unknown:
            raise ValueError(
                f"y has labels {_preview(unknown)} that are not in the teacher's "
                f"{self._declared_name()} {_preview(declared)}: every label of y must "
                "be the class of one of the teacher's output columns.")
        self.classes_ = classes

    def _declared_name(self):
        return "classes" if hasattr(self.baseline, "record") else "classes_"

    def _declared_classes(self):
        """The class of each of the teacher's output columns, in column order,
        when the teacher names them (``TorchBaseline(classes=...)``, or a
        fitted scikit-learn MLP's ``classes_``), else None."""
        baseline = self.baseline
        if isinstance(baseline, FrozenEstimator):
            classes = getattr(baseline.estimator, "classes_", None)
            return None if classes is None else np.asarray(classes)
        if not hasattr(baseline, "record"):
            return None  # an MLP trained here, on y: its classes are classes_
        classes = getattr(baseline, "classes", None)
        if classes is None:
            return None
        classes = np.asarray(classes)
        if classes.ndim != 1 or len(classes) < 2:
            raise ValueError(
                "TorchBaseline classes must be a 1-D list of the class label of "
                "each of the module's output columns, in column order (at least "
                "2; for a single logit: the negative class, then the positive one); "
                f"got {classes.tolist()!r}.")
        unique, counts = np.unique(classes, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(
                f"TorchBaseline classes has duplicate labels "
                f"{_preview(unique[counts > 1])}: each of the module's output "
                "columns must have a class of its own.")
        return classes

    def _teacher_columns(self, outputs):
        """The teacher's output columns in the order of ``classes_``: column
        ``j`` is ``classes_[j]`` unless the teacher names its columns' classes
        (then they are permuted by those; a single logit is the score of the
        second one). Checks the teacher's output count."""
        from .streaming import TeacherColumns

        n_outputs = outputs.shape[1]
        declared = self._declared_classes()
        if declared is None:
            if n_outputs != self._n_output_columns(outputs):
                raise ValueError(
                    f"The teacher has {n_outputs} outputs but y has "
                    f"{len(self.classes_)} classes ({_preview(self.classes_)}); output "
                    "column j would be the score of classes_[j], the j-th class in "
                    "sorted order. If the teacher was trained on other classes or "
                    "labels, pass TorchBaseline(module, classes=[...]) with the class "
                    "label of each output column, in column order; or set "
                    "output_target='y' to fit y instead.")
            return None
        if len(declared) != (2 if n_outputs == 1 else n_outputs):
            raise ValueError(
                f"The teacher's {self._declared_name()} has {len(declared)} entries but "
                f"the teacher has {n_outputs} output{'s' if n_outputs > 1 else ''}: "
                f"{self._declared_name()} gives the class label of each output column, "
                "in column order" + (" (for a single logit: the negative class, "
                                     "then the positive one)." if n_outputs == 1 else "."))
        if n_outputs == 1:
            negate = bool(declared[1] == self.classes_[0])
            return TeacherColumns(np.zeros(1, dtype=np.intp), True) if negate else None
        order = np.unique(declared, return_index=True)[1]  # column of each classes_[k]
        if np.array_equal(order, np.arange(n_outputs)):
            return None
        return TeacherColumns(order)

    def _check_teacher_targets(self, targets, y):
        """:meth:`_check_teacher_agreement` on the teacher's targets on all of X."""
        from .streaming import TeacherAgreement

        if hasattr(self.baseline, "record") and self._declared_classes() is None:
            self._check_teacher_agreement(TeacherAgreement(self.classes_).add(y, targets))

    def _check_teacher_agreement(self, agreement):
        """Refuse a torch teacher whose output columns are clearly not the
        classes of y in sorted order (``classes_``), when it does not name
        them (``TorchBaseline(classes=...)``, which skips this check).

        ``agreement.counts`` holds, per class of y and per output column, how
        many training samples of that class the teacher's argmax puts in that
        column: its trace is the teacher's agreement with y when column ``j``
        is taken as ``classes_[j]`` (the order the fit would use), and the best
        one-to-one matching of columns to classes (``linear_sum_assignment``)
        the agreement under the best order. The fit is refused when all of

        * the teacher is clearly a classifier of y under the best matching:
          its chance-corrected agreement (Cohen's kappa, the agreement above
          what the two label frequencies give by chance, as a fraction of the
          most it could be) is at least 0.5;
        * the order used agrees on fewer than half as many samples as the
          best matching: the model, which predicts about as the teacher's
          argmax does, would lose at least half of the accuracy the teacher
          offers;
        * the difference is more than ``3 sqrt(n_samples)`` samples, which
          chance on a few samples does not reach.

        A teacher that is merely weak (untrained, or poor on these data)
        fails the first condition, whatever its order, and is fitted.
        """
        if self._declared_classes() is not None:
            return
        counts = agreement.counts
        n_samples = int(counts.sum())
        if n_samples == 0:
            return
        assumed = int(np.trace(counts))
        rows, columns = linear_sum_assignment(counts, maximize=True)
        best = int(counts[rows, columns].sum())
        by_class, by_column = counts.sum(axis=1) / n_samples, counts.sum(axis=0) / n_samples
        chance = float(np.sum(by_class[rows] * by_column[columns]))
        kappa = (best / n_samples - chance) / (1.0 - chance) if chance < 1 else 0.0
        if not (kappa >= 0.5 and 2 * assumed < best
                and best - assumed > 3 * np.sqrt(n_samples)):
            return
        matched = np.empty(len(columns), dtype=self.classes_.dtype)
        matched[columns] = self.classes_[rows]
        raise ValueError(
            "The teacher's output columns do not match classes_ in sorted order "
            f"({_preview(self.classes_)}): its argmax agrees with y on "
            f"{assumed / n_samples:.1%} of the {n_samples} training samples when "
            f"output column j is taken as classes_[j], against {best / n_samples:.1%} "
            "under the best matching of its columns to the classes (which reads the "
            f"columns as classes={_preview(matched)}). Pass TorchBaseline(module, "
            "classes=[...]) with the class label of each output column, in column "
            "order.")

    def _validated_targets(self, X, y):
        """Validated ``X``, the indicator targets and ``y`` for the teacher."""
        _check_numeric(X, "X")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        self._set_classes(y)
        self._check_sample_count(X.shape[0])
        binarizer = LabelBinarizer().fit(self.classes_)
        targets = binarizer.transform(y).astype(np.float64)
        if targets.shape[1] == 1:  # binary: one indicator column per class
            targets = np.hstack([1.0 - targets, targets])
        return X, targets, y

    def decision_function(self, X):
        """Outputs ``C x* + D u + b_y`` at the equilibrium.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) for two classes, else (n_samples, n_classes)
        """
        outputs = self._raw_outputs(X)
        if outputs.shape[1] == 1:
            return outputs.ravel()
        if outputs.shape[1] == 2 and len(self.classes_) == 2:
            return outputs[:, 1] - outputs[:, 0]
        return outputs

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X):
        """Softmax of the outputs (sigmoid for a single logit).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        outputs = self._raw_outputs(X)
        if outputs.shape[1] == 1:
            outputs = np.hstack([np.zeros_like(outputs), outputs])
        return softmax(outputs)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        return np.log(self.predict_proba(X))
