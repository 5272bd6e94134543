"""The fitted model's record and what reads it: the equilibrium states and
the raw outputs, over sample chunks of X.

A model is a :class:`FlatModel` (the matrices of the flat fit) or a
:class:`sksim.weight_sharing.SharedModel` (kernels of a weight-shared fit);
the estimators build it from their fitted attributes (``_model``).
"""

import warnings
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from . import _arrays
from . import weight_sharing as shared
from ._arrays import float64_rows, forward_blocks, times_transpose
from .solvers.equilibrium import equilibrium_of_drive

# the componentwise activations ``phi`` of the states
ACTIVATIONS = {"relu": lambda z: np.maximum(z, 0.0)}


class FlatModel(NamedTuple):
    """``x = relu(A x + B u + state_intercept)``, ``y = C x + D u + intercept``
    (sparse matrices); the state part alone (``C``, ``D``, ``intercept``
    None) while the fit's output stage runs on it."""

    A: object
    B: object
    state_intercept: np.ndarray
    C: object = None
    D: object = None
    intercept: np.ndarray = None


class Equilibrium(NamedTuple):
    """How the equilibrium is solved: the residual tolerance (relative to
    ``max(1, ||x||_inf)``) and the most sweeps per sample."""

    tol: float
    max_iter: int


def is_shared(model):
    return isinstance(model, shared.SharedModel)


def n_states(model):
    return model.structure.n_states() if is_shared(model) else model.A.shape[0]


def equilibrium_chunks(model, X, solve, warn=True, direct=False):
    """Yield ``(start, stop, rows, states, residual, direct)`` over sample
    chunks of X (any float dtype and layout): for a weight-shared model
    the float64 rows (else None) and the list of per-block states, else
    the states; the residuals; and with ``direct`` the inputs' term
    ``D u`` of the outputs (else None). ``solve`` is an
    :class:`Equilibrium`. Once all are yielded, one ConvergenceWarning if
    a sample missed ``solve.tol``."""
    n_unconverged, largest = 0, 0.0
    chunks = (_shared_chunks(model, X, solve) if is_shared(model)
              else _flat_chunks(model, X, solve, direct))
    for start, stop, rows, states, residual, direct_term in chunks:
        blocks = states if isinstance(states, list) else [states]
        # one reduction per block: a sum is finite exactly when every entry is
        # (short of entries near the float64 limit, an overflow all the same)
        with np.errstate(over="ignore", invalid="ignore"):
            finite = all(np.isfinite(np.sum(block)) for block in blocks)
        if not finite:
            raise ValueError(
                "The equilibrium states overflow float64: X is too large in "
                "magnitude for this model. Rescale X as it was at fit time."
            )
        if residual.any():  # one exact pass leaves none
            scale = np.maximum(1.0, np.max([np.abs(block).max(axis=1, initial=0.0)
                                            for block in blocks], axis=0))
            n_unconverged += int(np.sum(residual > solve.tol * scale))
        largest = max(largest, float(residual.max(initial=0.0)))
        yield start, stop, rows, states, residual, direct_term
    if warn and n_unconverged:
        warnings.warn(
            f"The equilibrium did not reach equilibrium_tol="
            f"{solve.tol:g} for {n_unconverged} of "
            f"{X.shape[0]} samples within equilibrium_max_iter="
            f"{solve.max_iter} sweeps (largest residual "
            f"{largest:.3e}); increase equilibrium_max_iter.",
            ConvergenceWarning,
        )


def _shared_chunks(model, X, solve):
    for start, stop in _arrays.sample_chunks(X.shape[0], X.shape[1] + n_states(model)):
        rows = float64_rows(X, start, stop)
        with np.errstate(over="ignore", invalid="ignore"):
            states, residual, _ = shared.block_equilibrium(
                model, rows, tol=solve.tol, max_iter=solve.max_iter)
        yield start, stop, rows, states, residual, None


def _flat_chunks(model, X, solve, direct):
    """The flat model's equilibrium in two phases: the products ``B u``
    (with ``direct`` also ``D u``, in the same product, so X is read once)
    chunk by chunk, then the equilibrium of all samples in one kernel
    call. BLAS products and the threaded numba kernels do not alternate:
    OpenBLAS's threads spin for a while after each product and slowed
    each following kernel by ~40 ms on two cores. Holds
    (n_samples, n_states + n_outputs) floats, as large as the states."""
    count = n_states(model)
    weights = sp.vstack([model.B, model.D], format="csr") if direct else model.B
    chunks = _arrays.sample_chunks(X.shape[0], X.shape[1] + weights.shape[0])
    terms = np.empty((X.shape[0], weights.shape[0]))
    for start, stop in chunks:
        times_transpose(float64_rows(X, start, stop), weights, out=terms[start:stop])
    solution = equilibrium_of_drive(model.A, terms[:, :count], model.state_intercept,
                                    forward_blocks(model.A), tol=solve.tol,
                                    max_iter=solve.max_iter)
    states, residual = solution.states, solution.residual
    for start, stop in chunks:
        yield (start, stop, None, states[start:stop], residual[start:stop],
               terms[start:stop, count:] if direct else None)


def equilibrium(model, X, solve, warn=True):
    """Equilibrium states and residuals of the rows of X, over sample chunks."""
    states = np.empty((X.shape[0], n_states(model)))
    residual = np.empty(X.shape[0])
    for start, stop, _, chunk_states, chunk_residual, _ in equilibrium_chunks(
            model, X, solve, warn):
        states[start:stop] = (np.hstack(chunk_states) if isinstance(chunk_states, list)
                              else chunk_states)
        residual[start:stop] = chunk_residual
    return states, residual


def raw_outputs(model, X, solve):
    """The outputs ``C x* + D u + b_y`` of the rows of X, chunk by chunk (a
    weight-shared model never holds the states of all samples at once:
    71,680 per image for the CIFAR-100 teacher)."""
    if is_shared(model):
        outputs = np.empty((X.shape[0], model.head_intercept.shape[0]))
        for start, stop, rows, post, _, _ in equilibrium_chunks(model, X, solve):
            with np.errstate(over="ignore", invalid="ignore"):
                outputs[start:stop] = shared.head_outputs(model, rows, post)
    else:
        outputs = np.empty((X.shape[0], model.C.shape[0]))
        for start, stop, _, states, _, direct in equilibrium_chunks(
                model, X, solve, direct=True):
            times_transpose(states, model.C, out=outputs[start:stop])
            outputs[start:stop] += direct
        outputs += model.intercept
    check_finite_outputs(outputs)
    return outputs


def outputs_at(model, X, states):
    """The outputs ``C x + D u + b_y`` of a flat model at the rows of X
    whose equilibrium ``states`` are already solved."""
    outputs = times_transpose(states, model.C)
    outputs += times_transpose(float64_rows(X, 0, X.shape[0]), model.D)
    outputs += model.intercept
    check_finite_outputs(outputs)
    return outputs


def count_nonzero(model):
    """Nonzero entries of a flat model's A, B, C and D (intercepts excluded)."""
    return int(sum(matrix.nnz for matrix in (model.A, model.B, model.C, model.D)))


def check_finite_outputs(outputs):
    if not np.all(np.isfinite(outputs)):
        raise ValueError(
            "The outputs overflow float64: X is too large in magnitude for "
            "this model. Rescale X as it was at fit time."
        )
