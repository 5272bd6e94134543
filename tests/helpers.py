"""Data shared by several test modules (imported from the tests folder)."""

import math

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def digits_split():
    """scikit-learn's digits scaled to [0, 1], split 70/30, stratified, seed 0:
    (X_train, X_test, y_train, y_test)."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)


def exact_inf_norm(matrix):
    """||matrix||_inf with exactly rounded row sums (math.fsum)."""
    return max((math.fsum(np.abs(row)) for row in matrix.toarray()), default=0.0)


def assert_equals_unrolled(model, X_new):
    """Equilibrium and predictions of a weight-shared model equal those of the
    flat implicit model of its unrolled A, B, C, D (solved by the flat
    Gauss-Seidel kernel), whose residual certificate is the one reported."""
    from sksim.solvers import solve_equilibrium

    A, B, C, D = model.A_, model.B_, model.C_, model.D_
    states, residual = model.equilibrium(X_new, return_residual=True)
    flat = solve_equilibrium(A, X_new @ B.T + model.state_intercept_, tol=1e-15,
                             max_iter=10_000)
    np.testing.assert_allclose(states, flat.states, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.predict(X_new),
                               flat.states @ C.T + X_new @ D.T + model.intercept_,
                               rtol=0, atol=1e-10)
    recomputed = np.abs(states - np.maximum(states @ A.T + X_new @ B.T
                                            + model.state_intercept_, 0.0)).max(axis=1)
    assert np.all(recomputed <= residual + 1e-12)
