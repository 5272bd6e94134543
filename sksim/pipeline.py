"""The fit's stages after the teacher is recorded: reduce the data to Gram
problems, solve the rows, assemble the model record.

The flat fit (:func:`fit_flat`) solves the state rows on the teacher's
states, then the output rows (on the new state rows' equilibrium when
``refit_outputs``); the weight-shared fit (:func:`fit_weight_shared`) solves
one row per channel of each block, then the output rows. Both read their
data through a reducer (in memory here, chunk by chunk in
:mod:`sksim.streaming`) and return a :class:`Fit`, from which the estimator
sets its fitted attributes. ``est`` is the estimator being fitted: its
parameters (and, for a classifier, its check of the teacher's classes).
"""

import time
import warnings
from contextlib import contextmanager
from numbers import Integral
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from . import channels
from . import perturbation as perturbed
from . import recording
from . import streaming as st
from . import weight_sharing as shared
from ._arrays import numba_threads
from .design import GramAccumulator, centred_gram_problem
from .inspection import infinity_norm
from .model import ACTIVATIONS, Equilibrium, FlatModel, equilibrium, equilibrium_chunks
from .solvers import RowSolution, stack_rows

class Fit(NamedTuple):
    """A fitted model and its certificates: the row solutions of the state
    and output rows (``coef`` None where the model holds the kernels), the
    ``(||A||_inf, ||B||_inf, ||C||_inf, ||D||_inf)`` of the model, and for
    a weight-shared fit the block scales and row bounds."""

    model: object
    state_rows: RowSolution
    output_rows: RowSolution
    norms: tuple
    block_scales: np.ndarray = None
    block_row_bounds: np.ndarray = None


class FitLog:
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


def log_of(est):
    """The running fit's :class:`FitLog` (a silent one outside a fit)."""
    log = getattr(est, "_fit_log", None)
    return log if log is not None else FitLog()


def solve_options(est):
    """How the fitted model's equilibrium is solved."""
    return Equilibrium(est.equilibrium_tol, est.equilibrium_max_iter)


# ------------------------------------------------------------- reducers
# The most memory the model's own stored states may take (state_inputs="model",
# in-memory fits): a ResNet-20 on CIFAR-100 needs 0.26 MB per image.
_MODEL_STATES_BYTES = 2 * 2**30


class SharedReducer:
    """The data of an in-memory (or memmap) weight-shared fit, reduced to each
    block's Gram problem by running the teacher batch by batch.

    Parameters
    ----------
    est : the SIM estimator being fitted (its teacher and options)
    X : ndarray of shape (n_samples, n_features)
    targets : ndarray of shape (n_samples, n_outputs)
        The output rows' targets.
    """

    def __init__(self, est, X, targets):
        self.estimator, self.X, self.targets = est, X, targets
        self.n_outputs = targets.shape[1]

    def block_problems(self, structure, scales, blocks, model):
        """``model``: a SharedModel (its forward pass on each batch) or the
        :meth:`model_states` (stored) whose states the designs read."""
        est, X = self.estimator, self.X
        batches = ((X_design, design_pre, pre) for _, pre, _, designs in
                   perturbed.teacher_batches(est._perturbation, est.baseline, X)
                   for X_design, design_pre in designs)
        device = getattr(est.baseline, "gram_device", None)  # a TorchBaseline's
        stored = isinstance(model, shared.ModelStates)
        return shared.accumulate_block_problems(
            structure, batches, scales, fit_intercept=est.fit_intercept,
            positions_per_image=est.positions_per_image,
            random_state=est.random_state, blocks=blocks,
            model=None if stored else model, model_states=model if stored else None,
            device=device() if device else None)

    def model_states(self, structure):
        """Storage for the model's own states (``state_inputs="model"``) when
        they fit in ``_MODEL_STATES_BYTES``, else None (each block's
        reduction then reruns the model on every batch). A perturbed fit's
        designs are drawn per pass: never stored."""
        if self.estimator._perturbation is not None or shared.ModelStates.peak_bytes(
                structure, self.X.shape[0]) > _MODEL_STATES_BYTES:
            return None
        return shared.ModelStates(structure, self.X)

    def output_problem(self, structure, scales, model):
        """Gram problem of the output rows on ``model``'s own states (its state
        part), or on the teacher's (scaled) states when ``model`` is None."""
        est, X, targets = self.estimator, self.X, self.targets
        width = sum(shared.link_width(structure, link) for link in structure.head)
        accumulator = GramAccumulator(width, targets.shape[1], est.fit_intercept)
        if model is not None and est._perturbation is None:
            for start, stop, rows, post, _, _ in equilibrium_chunks(
                    model, X, solve_options(est)):
                accumulator.add(shared.head_design(structure, rows, post),
                                targets[start:stop])
            return accumulator.finish()
        for rows, _, _, designs in perturbed.teacher_batches(est._perturbation,
                                                             est.baseline, X):
            for X_design, pre in designs:
                accumulator.add(shared.head_design_on(
                    structure, scales, model, X_design, pre, tol=est.equilibrium_tol,
                    max_iter=est.equilibrium_max_iter), targets[rows])
        return accumulator.finish()


class InMemoryRows:
    """The Gram problems of an in-memory flat fit's stages, from X, the
    teacher's (scaled) states and the output rows' targets."""

    how = ""  # shown in verbose stage names

    def __init__(self, est, X, states, targets, post_activations=None,
                 model_states=None, inputs_gram=None, designs=None):
        self.estimator, self.X, self.states, self.targets = est, X, states, targets
        self.post_activations = post_activations
        # the fitted state rows' equilibrium on X when already solved (the
        # cross-validation solves it once for a fold's training and held-out rows)
        self.model_states = model_states
        # X's products when several output stages share them (a path, a fold)
        self.inputs_gram = inputs_gram
        # the (inputs, states) the designs are built from, when a perturbation
        # gives them other rows than (X, states) (sksim.perturbation.design_pairs)
        self.designs = None if designs is None or len(designs) == 1 and \
            designs[0][0] is X else designs

    def state_problem(self):
        if self.designs is None:
            self.post_activations, problem = state_problem(self.estimator, self.X,
                                                           self.states)
            return problem
        activation = ACTIVATIONS[self.estimator.activation]
        self.post_activations = np.vstack([activation(z) for _, z in self.designs])
        return centred_gram_problem(
            [self.post_activations, np.vstack([X for X, _ in self.designs])],
            np.vstack([self.states] * len(self.designs)), self.estimator.fit_intercept)

    def block_problem(self, start, stop, model_states):
        """The Gram problem of the states ``start:stop`` on the design of each
        of the fit's inputs and the model's own earlier states
        (``model_states``, one array per design; None for the first block),
        against the teacher's states; and those designs."""
        inputs = [self.X] if self.designs is None else [X for X, _ in self.designs]
        designs = inputs if model_states is None else [
            np.hstack([states, X]) for states, X in zip(model_states, inputs)]
        problem = centred_gram_problem(
            [np.vstack(designs)], np.vstack([self.states[:, start:stop]] * len(designs)),
            self.estimator.fit_intercept)
        return problem, designs

    def output_problem(self, model):
        """On ``model``'s equilibrium (the fitted state rows), or on the
        teacher's post-activations when ``model`` is None; a perturbed fit's
        on each design's inputs, against the clean targets."""
        est = self.estimator
        if self.designs is not None:
            inputs = [X for X, _ in self.designs]
            output_states = self.post_activations if model is None else np.vstack(
                [equilibrium(model, X, solve_options(est), warn=True)[0] for X in inputs])
            return centred_gram_problem(
                [output_states, np.vstack(inputs)],
                np.vstack([self.targets] * len(inputs)), est.fit_intercept)
        if model is None:
            output_states = self.post_activations
        elif self.model_states is not None:
            output_states = self.model_states
        else:
            output_states, _ = equilibrium(model, self.X, solve_options(est), warn=True)
        if self.inputs_gram is not None:
            return self.inputs_gram.problem(output_states)
        return centred_gram_problem([output_states, self.X], self.targets,
                                    est.fit_intercept)


def state_problem(est, X, states):
    """Post-activations of the teacher's states and the Gram problem of
    the state rows: ``(gram, correlations, target_sq, design_mean,
    state_mean)``."""
    post_activations = ACTIVATIONS[est.activation](states)
    return post_activations, centred_gram_problem(
        [post_activations, X], states, est.fit_intercept)


# -------------------------------------------------------------- flat fit
def fit_flat(est, rows, n_states):
    """The flat model's stages: the state rows, then the output rows (on
    the new state rows' equilibrium when ``refit_outputs``). ``rows`` builds
    each stage's Gram problem, from data in memory (:class:`InMemoryRows`)
    or read chunk by chunk (:class:`sksim.streaming.StreamedRows`)."""
    _check_channel(est)
    if est.adaptive_l1:
        raise ValueError(
            "adaptive_l1 weights the penalty by the teacher's kernels, which a "
            "weight-shared fit reads from a torch teacher's graph; this fit is flat "
            "(an MLP teacher, given states, or weight_sharing=False): set adaptive_l1=0.")
    if est.state_inputs == "model":
        state_rows, state_part = model_input_rows(est, rows, n_states)
        return fit_outputs(est, rows, state_rows, None, None, state_part)
    with log_of(est).stage(f"state rows' Gram matrix{rows.how}"):
        problem = rows.state_problem()
    state_rows = solve_state_rows(est, problem[:3], n_states, state_solve(est))
    means = problem[3:5]
    del problem  # the Gram: the output stage builds its own
    return fit_outputs(est, rows, state_rows, *means)


def fit_outputs(est, rows, state_rows, design_mean, state_mean, state_part=None):
    """The output stage of a flat fit on solved ``state_rows`` (and the
    means of the state rows' design and targets; ``state_part``, their
    :func:`state_model`, when already built): the whole model."""
    if state_part is None:
        state_part = state_model(state_rows, design_mean, state_mean)
    n_states = state_part.A.shape[0]
    with log_of(est).stage(f"output rows' Gram matrix{rows.how}"):
        problem = rows.output_problem(state_part if est.refit_outputs else None)
    gram, corr, target_sq, design_mean, target_mean = problem[:5]
    output_alpha = est.alpha if est.output_alpha is None else est.output_alpha

    def solve(gram, corr, target_sq, n_bounded, alpha=output_alpha, relax=est.relax):
        return st.solve_rows_parallel(
            gram, corr, target_sq, progress=log_of(est).rows("output rows"),
            row_bound=row_bound(est), l1=alpha * est.l1_ratio,
            l2=alpha * (1.0 - est.l1_ratio), tol=est.tol,
            max_iter=est.max_iter, relax=relax, solver=est.solver)

    if est.penalty == "channel":
        output_rows = channel_rows(est, (gram, corr, target_sq), n_states, 0, np.inf,
                                   output_alpha, solve)
    else:
        output_rows = solve(gram, corr, target_sq, 0)
    coef = output_rows.coef
    model = state_part._replace(C=_csr(coef[:, :n_states]), D=_csr(coef[:, n_states:]),
                                intercept=target_mean - coef @ design_mean)
    norms = tuple(infinity_norm(m) for m in (model.A, model.B, model.C, model.D))
    return Fit(model, state_rows, output_rows, norms)


def state_model(state_rows, design_mean, state_mean):
    """The state part of a flat model (:class:`FlatModel` without outputs)
    from its solved state rows and the means of their design and targets."""
    coef = state_rows.coef
    n_states = coef.shape[0]
    return FlatModel(_csr(coef[:, :n_states]), _csr(coef[:, n_states:]),
                     state_mean - coef @ design_mean)


def _csr(dense):
    matrix = sp.csr_array(dense)
    matrix.eliminate_zeros()
    return matrix


def row_bound(est):
    return np.inf if est.row_bound is None else float(est.row_bound)


def state_row_options(est, n_bounded, alpha=None, relax=None):
    """Keyword arguments of the state rows' solve (``n_bounded`` columns
    carry the kappa bound; the estimator's ``alpha`` and ``relax`` unless
    given)."""
    alpha = est.alpha if alpha is None else alpha
    return {"n_bounded": n_bounded, "bound": est.kappa,
            "row_bound": row_bound(est), "l1": alpha * est.l1_ratio,
            "l2": alpha * (1.0 - est.l1_ratio), "tol": est.tol,
            "max_iter": est.max_iter, "relax": est.relax if relax is None else relax,
            "solver": est.solver}


def state_solve(est):
    """``solve(gram, correlations, target_sq, n_bounded)`` of the state rows
    (in row batches on a dask cluster under ``parallel_backend("dask")``;
    progress printed with ``verbose``; with ``penalty="channel"`` the rows
    together, :func:`channel_rows`)."""
    progress = log_of(est).rows("state rows")

    def solve(gram, corr, target_sq, n_bounded, alpha=None, relax=None):
        return st.solve_rows_parallel(gram, corr, target_sq, progress=progress,
                                      **state_row_options(est, n_bounded, alpha, relax))

    if est.penalty == "channel":
        return lambda gram, corr, target_sq, n_bounded: channel_rows(
            est, (gram, corr, target_sq), n_bounded, n_bounded, est.kappa, est.alpha, solve)
    return solve


def channel_rows(est, problem, n_grouped, n_bounded, bound, alpha, solve):
    """``penalty="channel"`` on a flat block: the rows of ``problem`` solved
    together, one group per state column (the first ``n_grouped``)
    (:func:`sksim.channels.channel_rows`)."""
    return channels.channel_rows(
        problem, channels.state_groups(n_grouped, problem[0].shape[0]), alpha=alpha,
        l1_ratio=est.l1_ratio, n_bounded=n_bounded, bound=bound, tol=est.tol,
        max_iter=est.max_iter, relax=est.relax, solve=solve)


def solve_state_rows(est, problem, n_states, solve):
    """All state rows by ``solve(gram, correlations, target_sq, n_bounded)``
    (a RowSolution, or a list of them along a path): at once for the
    implicit structure, block by block for the feed-forward one."""
    if est.structure == "implicit":
        return solve(*problem, n_states)
    return feedforward_rows(problem, n_states, feedforward_blocks(est, n_states), solve)


def _check_channel(est, flat=True):
    if est.penalty != "channel":
        return
    if flat and est.structure != "feedforward":
        raise ValueError(
            "penalty='channel' removes whole states (the groups are the states a block "
            "reads), which needs structure='feedforward' for a flat model.")
    if est.row_bound is not None:
        raise ValueError("penalty='channel' does not support row_bound yet; set "
                         "row_bound=None or penalty='l1'.")


def model_input_rows(est, rows, n_states):
    """``state_inputs="model"`` for a flat feed-forward model: the blocks are
    fitted in order, each on a design of the fitted model's own states of
    the earlier blocks (and the inputs), against the teacher's states of the
    block, so that a block learns from what it will read at predict time.
    Returns the state rows (full width) and the state part of the model."""
    if est.structure != "feedforward":
        raise ValueError(
            "state_inputs='model' fits the blocks in order on the model's own states, "
            "which needs structure='feedforward' for a flat model (an implicit A has "
            "no block order).")
    if not hasattr(rows, "block_problem"):
        raise ValueError(
            "state_inputs='model' for a flat model needs the data in memory (it builds "
            "one Gram matrix per block on the model's own states); pass X as an array, "
            "or state_inputs='teacher'.")
    blocks = feedforward_blocks(est, n_states)
    solve = state_solve(est)
    model_states = None  # per design: the fitted blocks' states so far
    parts, intercepts, start = [], [], 0
    for size in blocks:
        with log_of(est).stage(f"states {start}..{start + size - 1}: Gram matrix on "
                               "the model's own states"):
            problem, designs = rows.block_problem(start, start + size, model_states)
        solution = solve(*problem[:3], start)
        intercept = problem[4] - solution.coef @ problem[3]
        intercepts.append(intercept)
        n_inputs = designs[0].shape[1] - start
        columns = np.r_[0:start, n_states:n_states + n_inputs]
        parts.append((columns, solution))
        activation = ACTIVATIONS[est.activation]
        new_states = [activation(design @ solution.coef.T + intercept) for design in designs]
        model_states = new_states if model_states is None else [
            np.hstack([old, new]) for old, new in zip(model_states, new_states)]
        start += size
    state_rows = stack_rows(parts, n_states + n_inputs)
    coef = state_rows.coef
    return state_rows, FlatModel(_csr(coef[:, :n_states]), _csr(coef[:, n_states:]),
                                 np.concatenate(intercepts))


def feedforward_blocks(est, n_states):
    """The sizes of the state blocks in forward order: ``state_blocks``, or
    the teacher's layers."""
    blocks = est.state_blocks
    if blocks is None:
        blocks = getattr(est, "_teacher_blocks", None)
    if blocks is None:
        raise ValueError(
            "structure='feedforward' with precomputed states needs state_blocks: "
            "the number of states in each block (layer), in forward order.")
    blocks = np.asarray(blocks)
    if (blocks.ndim != 1 or blocks.size == 0 or blocks.dtype.kind not in "iu"
            or np.any(blocks < 1) or blocks.sum() != n_states):
        raise ValueError(
            f"state_blocks must be positive integers summing to the {n_states} "
            f"states; got {est.state_blocks!r}.")
    return [int(size) for size in blocks]


def feedforward_rows(problem, n_states, blocks, solve):
    """The state rows of a feed-forward model, block by block: the rows of
    block ``b`` may use the states of blocks ``< b`` and the inputs only, so
    each block is solved on the principal sub-Gram of those columns (the
    others are fixed at zero: a constraint, so each row is exact and certified
    on its problem) with the kappa bound on its state columns. ``solve`` is as
    in :func:`solve_state_rows`; the result has full-width rows."""
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
        return stack_rows(parts, n_columns)
    return [stack_rows([(columns, path[a]) for columns, path in parts], n_columns)
            for a in range(len(parts[0][1]))]


# ---------------------------------------------------- weight-shared fit
def _check_shared(est):
    if est.activation != "relu":  # pragma: no cover - only relu exists
        raise ValueError("weight sharing supports activation='relu' only.")
    if est.state_scaling != "well_posed":
        raise ValueError(
            f"state_scaling={est.state_scaling!r} applies to flat teachers; a "
            "weight-shared fit scales its blocks to make the teacher well posed "
            "(state_scaling='well_posed'), or set weight_sharing=False.")


def _check_shared_structure(est):
    if est.structure == "feedforward" and est.lateral_kernel:
        raise ValueError("structure='feedforward' excludes lateral_kernel (the "
                         "lateral kernels link a block to itself).")
    if est.state_inputs == "model" and est.lateral_kernel:
        raise ValueError("state_inputs='model' needs a feed-forward structure "
                         "(lateral_kernel=None).")


class _SharedSetup(NamedTuple):
    """A weight-shared fit's structure (scaled), block scales, row bounds and
    adaptive L1 factors (one per block, then the output rows'; factors
    ``None`` for the plain L1) and the solver options."""

    structure: object
    scales: np.ndarray
    row_bounds: np.ndarray
    l1_factors: list
    common: dict


def _shared_setup(est, maps, n_outputs):
    structure = shared.fitting_structure(maps.structure, est.lateral_kernel,
                                         n_outputs=n_outputs,
                                         skip_links=est.skip_links)
    # the teacher's structure: one link per block, the one its kernel belongs to
    scales = shared.block_scales(maps.structure, maps.kernels, est.kappa)
    structure = shared.scaled_structure(structure, scales)
    # row_bound is relative to the teacher: the scales make absolute units arbitrary
    row_bounds = (np.full(len(scales) + 1, np.inf) if est.row_bound is None else
                  est.row_bound * shared.teacher_row_norms(maps, scales))
    common = {"l1_ratio": est.l1_ratio, "kappa": est.kappa, "tol": est.tol,
              "max_iter": est.max_iter, "relax": est.relax, "solver": est.solver}
    _check_shared_structure(est)
    indices = [*range(len(scales)), None]
    factors = ([None] * len(indices) if est.adaptive_l1 == 0 else
               [shared.adaptive_l1_factors(maps, structure, scales, index, est.adaptive_l1)
                for index in indices])
    return _SharedSetup(structure, scales, row_bounds, factors, common)


def fit_weight_shared(est, reducer, maps):
    """Fit the weight-shared model: one row per channel of each block. The
    data are reached through ``reducer`` (:class:`SharedReducer`, or
    :class:`sksim.streaming.DaskSharedReducer` for dask inputs)."""
    _check_shared(est)
    _check_channel(est, flat=False)
    setup = _shared_setup(est, maps, reducer.n_outputs)
    with numba_threads(est.n_jobs):
        kernels, intercepts, state_rows = _fit_blocks(est, reducer, setup)
        # the state part of the model, for the output stage's equilibrium
        state_part = shared.SharedModel(setup.structure, kernels, intercepts, [],
                                        np.zeros(0))
        head_kernels, head_intercept, output_rows = _fit_head(est, reducer, setup,
                                                              state_part)
    model = state_part._replace(head_kernels=head_kernels, head_intercept=head_intercept)
    state_rows = RowSolution(*[None if field == "coef" else
                               np.concatenate([getattr(r, field) for r in state_rows])
                               for field in RowSolution._fields])
    return Fit(model, state_rows, output_rows, shared.unrolled_norms(model),
               setup.scales, None if est.row_bound is None else setup.row_bounds)


def _fit_blocks(est, reducer, setup):
    """Each block's kernels, intercept and row solution, in order."""
    structure = setup.structure

    def reduce(blocks=None, model=None):
        return reducer.block_problems(structure, setup.scales, blocks, model)

    kernels, intercepts, state_rows = [], [], []
    log = log_of(est)
    with log.stage("blocks' Gram matrices"):
        problems = reduce() if est.state_inputs == "teacher" else None
    stored = None if problems is not None or not hasattr(reducer, "model_states") \
        else reducer.model_states(structure)
    for index, links in enumerate(structure.links):
        if problems is None:  # one pass per block on the model's own states
            so_far = shared.truncated(shared.SharedModel(
                structure, kernels, intercepts, [], np.zeros(0)), index)
            if stored is not None and index:
                stored.add(so_far, index - 1)
                so_far = stored
            with log.stage(f"block {index}'s Gram matrix"):
                problem = reduce([index], so_far if index else None)[0]
        else:
            problem = problems[index]
        alpha = est.alpha * shared.block_penalty(
            problem, structure.block_shapes[index], est.block_alpha)
        with log.stage(f"block {index + 1} of {len(structure.links)}: "
                       f"{structure.block_shapes[index][0]} rows"):
            block_kernels, intercept, rows = shared.solve_block_rows(
                structure, links, problem, alpha=alpha,
                row_bound=setup.row_bounds[index], l1_factors=setup.l1_factors[index],
                penalty=est.penalty, **setup.common)
        kernels.append(block_kernels)
        intercepts.append(intercept)
        state_rows.append(rows)
    return kernels, intercepts, state_rows


def _fit_head(est, reducer, setup, state_part):
    """The output rows' kernels, intercept and row solution."""
    log, structure = log_of(est), setup.structure
    with log.stage("output rows' Gram matrix"):
        output_problem = reducer.output_problem(
            structure, setup.scales, state_part if est.refit_outputs else None)
    output_alpha = est.alpha if est.output_alpha is None else est.output_alpha
    output_alpha *= shared.block_penalty(output_problem, (reducer.n_outputs,),
                                         est.block_alpha)
    with log.stage(f"output rows: {reducer.n_outputs} rows"):
        return shared.solve_block_rows(
            structure, structure.head, output_problem, alpha=output_alpha,
            row_bound=setup.row_bounds[-1], bounded=False, l1_factors=setup.l1_factors[-1],
            penalty=est.penalty, **setup.common)


# --------------------------------------------------------- certificates
def warn_rows(est, name, rows):
    """A ConvergenceWarning when some of ``rows`` missed ``tol``."""
    failed = rows.status != 0
    if np.any(failed):
        alpha = est.alpha if name == "state" or est.output_alpha is None \
            else est.output_alpha
        hint = "increase max_iter (or tol) for a certified optimum"
        if alpha == 0 and est.row_bound is not None:
            # With no penalty, a row whose row_bound is inactive is an
            # unpenalised least-squares problem: no dual point certifies it.
            hint = (f"with {name} alpha=0 a row whose row_bound is inactive "
                    "cannot be certified; use a positive alpha or a smaller "
                    "row_bound")
        warnings.warn(
            f"{int(failed.sum())} of {failed.size} {name} rows did not reach "
            f"the relative duality gap tol={est.tol:g} within "
            f"max_iter={est.max_iter} epochs (largest relative gap reached: "
            f"{max_relative_gap(rows):.3e}). The model is well posed "
            f"and usable; {hint}.",
            ConvergenceWarning,
        )


def summary(est, state_rows, output_rows):
    """The one line a fit with ``verbose`` prints at the end."""
    return (f"[{type(est).__name__}] {state_rows.duality_gap.size} state rows, "
            f"{output_rows.duality_gap.size} output rows, max epochs "
            f"{est.n_iter_}, max relative gap "
            f"{max_relative_gap(state_rows):.2e} (states), "
            f"{max_relative_gap(output_rows):.2e} (outputs); rows by "
            f"solver: {_solver_counts(state_rows)} (states), "
            f"{_solver_counts(output_rows)} (outputs)")


def _solver_counts(rows):
    counts = np.bincount(rows.method, minlength=3)
    return ", ".join(f"{name} {count}" for name, count in
                     zip(("cd", "homotopy", "homotopy then cd"), counts) if count)


def max_relative_gap(rows):
    if rows.duality_gap.size == 0:
        return 0.0
    return float(np.max(rows.duality_gap / np.maximum(rows.objective, 1e-300)))


# ------------------------------------------------------ out-of-core fits
def fit_streamed(est, X, y, states, baseline_outputs):
    """Fit from data reduced chunk by chunk (memmaps, dask arrays, batches
    of a DataLoader; see :mod:`sksim.streaming`): the same row problems and
    solvers as the in-memory fit, with O(d^2 + chunk) memory. Sets what the
    input validation and the record stage set (``n_features_in_``,
    ``classes_``, ``baseline_``, ``state_scales_``) and returns the Fit."""
    est._check_penalties()
    if st.is_batch_iterable(X):
        if y is not None or states is not None or baseline_outputs is not None:
            raise ValueError(
                "X is an iterable of (inputs, labels) batches: y, states and "
                "baseline_outputs come from it and the teacher, so pass y=None "
                "and no states or baseline_outputs.")
        if not hasattr(est.baseline, "record"):
            raise ValueError("X as an iterable of batches needs a TorchBaseline "
                             "teacher (baseline) to record the states.")
        source = st.BatchSource(X)
        y, n_features = source.labels()
    else:
        n_features = est._check_streamed_arrays(X, y, states, baseline_outputs)
        y = np.asarray(y.compute() if st.is_dask_array(y) else y)
        source = st.make_source(X, y, states, baseline_outputs)
    est.n_features_in_ = n_features
    encode, n_targets = est._streamed_targets(y)
    est._check_sample_count(len(y))
    maps = None
    if states is None and hasattr(est.baseline, "trace"):
        maps = recording.weight_shared_teacher(est, source.first_rows(2), None)
    if maps is not None:
        return _fit_weight_shared_streamed(est, source, X, y, baseline_outputs, maps,
                                           encode, n_targets)
    if baseline_outputs is not None and baseline_outputs.shape[1] != \
            est._n_output_columns(baseline_outputs):
        raise ValueError(
            f"baseline_outputs must have {est._n_output_columns(baseline_outputs)} "
            f"columns; got {baseline_outputs.shape[1]}.")
    recipe, n_states = recording.streamed_recipe(est, source, states, baseline_outputs,
                                                 encode, n_targets)
    source.size_chunks(n_states, n_targets)
    if est.state_scaling == "rms" and recipe.teacher is not None:
        scales = recording.unit_rms_scales(
            est._teacher_blocks, st.block_rms(source, recipe, est._teacher_blocks))
        recipe = recipe._replace(scales=scales)
        est.state_scales_ = scales
    return fit_flat(est, st.StreamedRows(est, source, recipe), n_states)


def _fit_weight_shared_streamed(est, source, X, y, baseline_outputs, maps, encode,
                                n_targets):
    """A weight-shared fit on a memmap (the in-memory reducer reads it
    batch by batch) or on dask inputs (reduced on the workers)."""
    if isinstance(source, st.BatchSource):
        raise ValueError(  # noqa: TRY004 - the documented error for a bad input
            "A weight-shared fit reads X as an array, a memmap or a dask array, not "
            "as batches; pass one of those, or set weight_sharing=False.")
    est._forget_model()
    kind = ("outputs" if baseline_outputs is not None else
            "teacher" if est.output_target == "baseline" else "y")
    columns = None
    if kind == "teacher":
        first_outputs = np.asarray(est.baseline.record(source.first_rows(2))[1])
        first_outputs = first_outputs.reshape(len(first_outputs), -1)
        n_targets = recording.teacher_output_width(est, first_outputs)
        columns = est._teacher_columns(first_outputs)
    if isinstance(source, st.DaskSource):
        recipe = st.ChunkRecipe(None, None, kind, encode, n_targets, columns)
        return fit_weight_shared(est, _dask_reducer(est, X, y, baseline_outputs, recipe),
                                 maps)
    if kind == "outputs":
        targets = np.asarray(baseline_outputs, dtype=np.float64)
    elif kind == "teacher":
        targets = recording.batched_teacher_targets(est, X)
        est._check_teacher_targets(targets, y)
    else:
        targets = encode(y)
    return fit_weight_shared(est, SharedReducer(est, X, targets), maps)


def _dask_reducer(est, X, y, baseline_outputs, recipe):
    """The :class:`sksim.streaming.DaskSharedReducer` of a weight-shared fit."""
    seed = est.random_state
    if seed is not None and not isinstance(seed, Integral):
        seed = int(check_random_state(seed).randint(2**31 - 1))
    options = st.SharedOptions(
        est.baseline, est.fit_intercept, est.positions_per_image, seed,
        est.equilibrium_tol, est.equilibrium_max_iter, recipe, est._perturbation)
    # a classifier's block pass counts the teacher's agreement with y
    check = getattr(est, "_check_teacher_agreement", None)
    return st.DaskSharedReducer(options, X, y, baseline_outputs, check)
