"""Certified quantities of an implicit model ``x = relu(A x + B u)``, ``y = C x + D u``
given by its matrices.

A fitted estimator reports them for itself (``lipschitz_bound_``,
``lipschitz_path_bound_``); the functions here compute them for any matrices,
for instance a teacher network written as an implicit model by
:func:`sksim.baselines.mlp_implicit_blocks`, so that the teacher and its
distilled model are measured by the same formulas.
"""

import numpy as np
import scipy.sparse as sp

__all__ = ["infinity_norm", "path_bound"]


def infinity_norm(matrix):
    """Induced l_inf norm ``max_i sum_j |M_ij|`` (largest row L1 norm).

    Parameters
    ----------
    matrix : ndarray or sparse matrix of shape (n_rows, n_columns)

    Returns
    -------
    norm : float
        0.0 when the matrix has no rows or no columns.
    """
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        return 0.0
    return float(np.max(np.asarray(abs(matrix).sum(axis=1))))


def _absolute_dense(matrix):
    if sp.issparse(matrix):
        return abs(matrix).toarray()
    return np.abs(np.asarray(matrix, dtype=np.float64))


def path_bound(A, B, C, D):
    """Certified l_inf Lipschitz bound ``|| |C| (I - |A|)^-1 |B| + |D| ||_inf``.

    Almost everywhere the Jacobian of the outputs is ``C (I - S A)^-1 S B + D``
    with ``S`` the diagonal of ReLU slopes in [0, 1], and entrywise
    ``|(I - S A)^-1 S| <= (I - |A|)^-1 = sum_k |A|^k``, so this bounds the
    l_inf Lipschitz constant of ``u -> y`` whenever that series converges:
    ``||A||_inf < 1`` (a fitted SIM model), or ``A`` strictly block lower
    triangular (a feed-forward network, whatever its weights; then the bound
    is ``|| |W_L| ... |W_1| ||_inf``, the absolute-product bound). It is the
    formula of the estimators' ``lipschitz_path_bound_`` (one dense solve of
    size n_states).

    Parameters
    ----------
    A : ndarray or sparse matrix of shape (n_states, n_states)
    B : ndarray or sparse matrix of shape (n_states, n_features)
    C : ndarray or sparse matrix of shape (n_outputs, n_states)
    D : ndarray or sparse matrix of shape (n_outputs, n_features)

    Returns
    -------
    bound : float
    """
    abs_a = _absolute_dense(A)
    path = np.linalg.solve(np.eye(abs_a.shape[0]) - abs_a, _absolute_dense(B))
    # Nonnegative in exact arithmetic; clip solver rounding.
    path = np.maximum(path, 0.0)
    total = _absolute_dense(C) @ path + _absolute_dense(D)
    return float(total.sum(axis=1).max(initial=0.0))
