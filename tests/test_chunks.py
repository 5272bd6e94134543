"""Fits streamed over many sample chunks equal fits done in one chunk.

Every real fit (Fashion-MNIST at m = 60,000) streams the Gram matrix, the
equilibrium and the outputs over ~32 MiB sample chunks; the test problems
here fit in one. Shrinking the private ``_CHUNK_BYTES`` forces 1, 2 and many
chunks (of uneven sizes: the last one is shorter) through every stage.
"""

import numpy as np
import pytest

import sksim._arrays as arrays
from sksim import SIMClassifier, SIMRegressor
from sksim.design import centred_gram_problem

N_SAMPLES = 97  # prime: no chunk size divides it


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_SAMPLES, 5))
    Z = X @ rng.normal(size=(5, 7)) + 0.3 * rng.normal(size=(N_SAMPLES, 7)) + 0.2
    y = X[:, 0] - 2.0 * X[:, 1] + np.maximum(Z[:, 2], 0) + 0.1 * rng.normal(size=N_SAMPLES)
    return X, y, Z


def _chunk_bytes(n_chunks, width):
    """``_CHUNK_BYTES`` giving ``n_chunks`` chunks of rows ``width`` floats wide."""
    rows = -(-N_SAMPLES // n_chunks)  # ceil
    assert -(-N_SAMPLES // rows) == n_chunks
    return 8 * width * rows


@pytest.fixture
def counted_chunks(monkeypatch):
    """Record how many chunks each call of ``sample_chunks`` made."""
    counts = []
    original = arrays.sample_chunks

    def counting(n_samples, n_columns):
        chunks = original(n_samples, n_columns)
        counts.append(len(chunks))
        return chunks

    monkeypatch.setattr(arrays, "sample_chunks", counting)
    return counts


@pytest.mark.parametrize("n_chunks", [2, 5, 13])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_streamed_gram_equals_one_pass(problem, monkeypatch, counted_chunks, n_chunks,
                                       fit_intercept):
    X, _, Z = problem
    post = np.maximum(Z, 0.0)
    blocks, targets = [post, X], Z
    one = centred_gram_problem(blocks, targets, fit_intercept)
    width = post.shape[1] + X.shape[1] + Z.shape[1]
    monkeypatch.setattr(arrays, "_CHUNK_BYTES", _chunk_bytes(n_chunks, width))
    many = centred_gram_problem(blocks, targets, fit_intercept)
    assert counted_chunks == [1, n_chunks]
    for a, b in zip(one, many):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)
    # and both equal the Gram of the explicit (centred) design
    W = np.hstack(blocks)
    T = targets
    if fit_intercept:
        W, T = W - W.mean(axis=0), T - T.mean(axis=0)
    gram, corr, target_sq, design_mean, target_mean = many
    np.testing.assert_allclose(gram, W.T @ W / N_SAMPLES, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(corr, T.T @ W / N_SAMPLES, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(target_sq, (T * T).mean(axis=0), rtol=1e-12)
    expected_mean = np.hstack(blocks).mean(axis=0) if fit_intercept else 0.0
    np.testing.assert_allclose(design_mean, expected_mean, rtol=1e-12, atol=1e-15)


def _fit(cls, X, y, Z, **params):
    # the plain rows (relax=1): certified to tol times their objective
    return cls(alpha=1e-3, kappa=0.8, tol=1e-10, n_jobs=1, relax=1.0,
               **params).fit(X, y, states=Z)


@pytest.mark.parametrize("n_chunks", [2, 13])
@pytest.mark.parametrize("cls", [SIMRegressor, SIMClassifier])
@pytest.mark.parametrize("row_bound", [None, 1.5])
def test_fit_over_many_chunks_equals_one_chunk(problem, monkeypatch, counted_chunks,
                                               n_chunks, cls, row_bound):
    """Same certificates and predictions whether the state Gram, the
    equilibrium of the output stage and the output Gram are streamed in one
    chunk or many."""
    X, y, Z = problem
    if cls is SIMClassifier:
        y = (y > np.median(y)).astype(int) + (X[:, 2] > 0.5)
    one = _fit(cls, X, y, Z, row_bound=row_bound)
    assert set(counted_chunks) == {1}
    counted_chunks.clear()
    # The widest stage (state Gram: post-activations, X and the state targets)
    # gets n_chunks; narrower stages get no more chunks than that.
    width = 2 * Z.shape[1] + X.shape[1]
    monkeypatch.setattr(arrays, "_CHUNK_BYTES", _chunk_bytes(n_chunks, width))
    many = _fit(cls, X, y, Z, row_bound=row_bound)
    assert counted_chunks[0] == n_chunks and min(counted_chunks) >= 2
    for name in ("state", "output"):
        gaps = getattr(many, f"{name}_duality_gaps_")
        objectives = getattr(many, f"{name}_objectives_")
        assert np.all(gaps <= many.tol * objectives + 1e-14)
        np.testing.assert_allclose(objectives, getattr(one, f"{name}_objectives_"),
                                   rtol=1e-8, atol=1e-14)
    for name in ("A_", "B_", "C_", "D_"):
        np.testing.assert_allclose(getattr(many, name).toarray(),
                                   getattr(one, name).toarray(), atol=1e-6)
    np.testing.assert_allclose(many.state_intercept_, one.state_intercept_, atol=1e-6)
    np.testing.assert_allclose(many.intercept_, one.intercept_, atol=1e-6)
    method = "predict" if cls is SIMRegressor else "decision_function"
    np.testing.assert_allclose(getattr(many, method)(X), getattr(one, method)(X),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n_chunks", [2, 13])
def test_chunked_equilibrium_and_outputs_equal_one_chunk(problem, monkeypatch,
                                                         counted_chunks, n_chunks):
    """Inference on a fitted model: the equilibrium and the outputs computed
    chunk by chunk equal the one-chunk results, and the plain numpy
    recomputation from A_, B_, C_, D_."""
    X, y, Z = problem
    model = _fit(SIMRegressor, X, np.c_[y, -y], Z)
    states, residual = model.equilibrium(X, return_residual=True)
    outputs = model.predict(X)
    counted_chunks.clear()
    # sized on X's columns; the equilibrium (and the outputs computed with
    # it) chunk rows of X and the states, so into at least this many chunks
    monkeypatch.setattr(arrays, "_CHUNK_BYTES", _chunk_bytes(n_chunks, X.shape[1]))
    chunked_states, chunked_residual = model.equilibrium(X, return_residual=True)
    chunked_outputs = model.predict(X)
    assert min(counted_chunks) >= n_chunks
    np.testing.assert_allclose(chunked_states, states, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chunked_residual, residual, atol=1e-12)
    np.testing.assert_allclose(chunked_outputs, outputs, rtol=1e-12, atol=1e-12)
    A, B = model.A_.toarray(), model.B_.toarray()
    C, D = model.C_.toarray(), model.D_.toarray()
    fixed = np.maximum(chunked_states @ A.T + X @ B.T + model.state_intercept_, 0.0)
    np.testing.assert_allclose(fixed, chunked_states, atol=1e-10)
    np.testing.assert_allclose(
        chunked_outputs, chunked_states @ C.T + X @ D.T + model.intercept_,
        rtol=1e-12, atol=1e-12)
