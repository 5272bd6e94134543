"""Out-of-core and distributed fits (sksim.streaming): memmap and dask inputs,
streamed teachers, a 2-process dask LocalCluster, failures and memory.

A streamed fit reduces the same row problems as the in-memory fit, but sums
its Gram matrices in another order (chunk by chunk, merged pairwise), so the
two are not bitwise equal. What is promised and tested: each fit's rows are
certified optimal for its own Gram problem; evaluated on the in-memory
problem, the streamed coefficients are optimal to within the two fits'
certified duality gaps (plus rounding); the constraint ``||A||_inf <= kappa``
is exact in both.
"""

import os
import threading
import time
import tracemalloc

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator
from sklearn.neural_network import MLPClassifier

from sksim import SIMClassifier, SIMRegressor
from sksim import _arrays
from sksim.baselines import mlp_forward

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

TOL = 1e-10
# the plain rows: their duality gaps reach TOL relative to their objectives (a
# relaxed row's much smaller objective sits at the solver's roundoff floor)
RELAX = 1.0


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 10))
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int) + (X[:, 2] > 0.5)
    mlp = MLPClassifier(hidden_layer_sizes=(12, 8), max_iter=3000, random_state=0).fit(X, y)
    states, logits = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    return X, y, states, logits, mlp


def _memmap(tmp_path, name, array):
    path = tmp_path / f"{name}.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    out[:] = array
    out.flush()
    return np.load(path, mmap_mode="r")


def _state_objectives(model, X, states):
    """Primal objectives of the state rows of ``model`` on the in-memory
    problem, recomputed with numpy from explicit residuals."""
    design = np.hstack([np.maximum(states, 0.0), X])
    design = design - design.mean(axis=0)
    targets = states - states.mean(axis=0)
    coef = np.hstack([model.A_.toarray(), model.B_.toarray()])
    residual = targets - design @ coef.T
    return (np.einsum("ij,ij->j", residual, residual) / (2 * len(X))
            + model.alpha * np.abs(coef).sum(axis=1))


def assert_equivalent(streamed, local, X, states):
    """Both fits certified; the streamed rows optimal on the local problem to
    within the certified gaps; the bound exact; the same predictions."""
    kappa = local.kappa
    assert np.abs(streamed.A_).sum(axis=1).max() <= kappa
    for model in (streamed, local):
        assert np.all(model.state_duality_gaps_ <= TOL * np.maximum(
            model.state_objectives_, 1.0) + 1e-12)
    p_streamed = _state_objectives(streamed, X, states)
    p_local = _state_objectives(local, X, states)
    slack = streamed.state_duality_gaps_ + local.state_duality_gaps_ + 1e-12
    assert np.all(np.abs(p_streamed - p_local) <= slack + 1e-9 * np.abs(p_local))
    np.testing.assert_allclose(streamed.A_.toarray(), local.A_.toarray(), atol=1e-6)
    np.testing.assert_allclose(streamed.C_.toarray(), local.C_.toarray(), atol=1e-6)
    np.testing.assert_array_equal(streamed.predict(X), local.predict(X))


def _local_fit(problem, **params):
    X, y, states, logits, _ = problem
    return SIMClassifier(tol=TOL, relax=RELAX, **params).fit(X, y, states=states, baseline_outputs=logits)


@pytest.mark.parametrize("structure", ["implicit", "feedforward"])
def test_memmap_inputs_equal_the_in_memory_fit(problem, tmp_path, monkeypatch, structure):
    X, y, states, logits, _ = problem
    params = {"structure": structure, "state_blocks": [12, 8]}
    local = _local_fit(problem, **params)
    # 173-ish rows per chunk: chunks of uneven sizes (the last one shorter)
    monkeypatch.setattr(_arrays, "_CHUNK_BYTES", 8 * 173 * 50)
    streamed = SIMClassifier(tol=TOL, relax=RELAX, **params).fit(
        _memmap(tmp_path, "X", X), y,
        states=_memmap(tmp_path, "states", states),
        baseline_outputs=_memmap(tmp_path, "logits", logits))
    assert_equivalent(streamed, local, X, states)


def test_dask_inputs_with_uneven_chunks(problem):
    """Blocks of different sizes, and different ones per array (rechunked to
    X's rows), computed on dask's local scheduler."""
    X, y, states, logits, _ = problem
    local = _local_fit(problem)
    streamed = SIMClassifier(tol=TOL, relax=RELAX).fit(
        da.from_array(X, chunks=((400, 700, 299, 101), (10,))), da.from_array(y, chunks=500),
        states=da.from_array(states, chunks=(333, 7)), baseline_outputs=logits)
    assert_equivalent(streamed, local, X, states)


@pytest.mark.parametrize("state_scaling", ["well_posed", "rms"])
def test_fitted_sklearn_teacher_streams(problem, tmp_path, state_scaling):
    X, y, states, _, mlp = problem
    teacher = FrozenEstimator(mlp)
    local = SIMClassifier(teacher, tol=TOL, relax=RELAX, state_scaling=state_scaling).fit(X, y)
    streamed = SIMClassifier(teacher, tol=TOL, relax=RELAX, state_scaling=state_scaling).fit(
        _memmap(tmp_path, "X", X), y)
    np.testing.assert_allclose(streamed.state_scales_, local.state_scales_, rtol=1e-12)
    assert_equivalent(streamed, local, X, states * local.state_scales_)


def test_streamed_torch_teacher_equals_the_in_memory_path():
    """A TorchBaseline fed a DataLoader of (inputs, labels) batches: states of
    the first pass, the teacher run again for the output rows' pass."""
    torch = pytest.importorskip("torch")
    from helpers import digits_split

    from sksim import TorchBaseline

    X_train, X_test, y_train, _ = digits_split()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 24), torch.nn.ReLU(),
                              torch.nn.Linear(24, 12), torch.nn.ReLU(),
                              torch.nn.Linear(12, 10))
    dataset = torch.utils.data.TensorDataset(torch.as_tensor(X_train, dtype=torch.float32),
                                             torch.as_tensor(y_train))
    loader = torch.utils.data.DataLoader(dataset, batch_size=97)
    local = SIMClassifier(TorchBaseline(net), tol=TOL, relax=RELAX).fit(X_train, y_train)
    streamed = SIMClassifier(TorchBaseline(net), tol=TOL, relax=RELAX).fit(loader)
    assert streamed.n_features_in_ == 64
    np.testing.assert_array_equal(streamed.classes_, local.classes_)
    np.testing.assert_array_equal(streamed.state_scales_, local.state_scales_)
    states, _ = TorchBaseline(net).record(X_train)
    assert_equivalent(streamed, local, X_train, states * local.state_scales_)
    np.testing.assert_array_equal(streamed.predict(X_test), local.predict(X_test))
    with pytest.raises(ValueError, match="iterator"):
        SIMClassifier(TorchBaseline(net)).fit(iter(loader))


def _memmap_problem(tmp_path, rng, m, n_features, n_states, n_outputs):
    X = rng.normal(size=(m, n_features))
    states = X @ rng.normal(size=(n_features, n_states)) / 4
    outputs = np.maximum(states, 0) @ rng.normal(size=(n_states, n_outputs))
    return tuple(_memmap(tmp_path, f"{name}{m}", a)
                 for name, a in (("X", X), ("Z", states), ("Y", outputs)))


def _peak_bytes(fit):
    """Peak traced allocations of ``fit()`` (tracemalloc, Python and numpy)."""
    tracemalloc.start()
    try:
        fit()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memmap_fit_does_not_load_the_data(tmp_path, monkeypatch):
    """A memmap fit's allocations (tracemalloc) do not grow with the data:
    twice the rows (10 -> 20 chunks) peak within an eighth of a chunk of each
    other, and the fit of 10 chunks allocates at most 2 Gram matrices plus
    one chunk beyond a fit of 300 rows on the same path (which holds the
    interpreter's own allocations, so the bound does not depend on what else
    is installed); the in-memory fit of the same data allocates more than
    the data. (Numba's solver workspace and the memmap's page cache are not
    traced.)"""
    rng = np.random.default_rng(1)
    n_features, n_states, n_outputs = 30, 20, 3
    chunk_bytes = 1 << 19
    monkeypatch.setattr(_arrays, "_CHUNK_BYTES", chunk_bytes)
    rows_per_chunk = chunk_bytes // (8 * (2 * n_features + 3 * n_states + n_outputs))
    m = 10 * rows_per_chunk
    small, large = (_memmap_problem(tmp_path, rng, rows, n_features, n_states, n_outputs)
                    for rows in (m, 2 * m))
    y = np.zeros((2 * m, n_outputs))

    def fit(X, Z, Y, rows):
        return SIMRegressor(alpha=1e-2).fit(X[:rows], y[:rows], states=Z[:rows],
                                            baseline_outputs=Y[:rows])

    fit(*small, 300)  # compile, and the imports of a first fit
    baseline_peak = _peak_bytes(lambda: fit(*small, 300))
    streamed_peak = _peak_bytes(lambda: fit(*small, m))
    doubled_peak = _peak_bytes(lambda: fit(*large, 2 * m))
    in_memory_peak = _peak_bytes(lambda: fit(*(np.asarray(a) for a in small), m))
    gram_bytes = 8 * (n_features + n_states) ** 2
    assert fit(*small, m).n_states_ == n_states
    assert abs(doubled_peak - streamed_peak) <= chunk_bytes / 8
    assert streamed_peak - baseline_peak <= 2 * gram_bytes + chunk_bytes
    assert in_memory_peak > 8 * m * (n_features + n_states)


def test_streamed_fit_errors(problem, tmp_path):
    X, y, states, _, _ = problem
    bad = X.copy()
    bad[777, 3] = np.nan
    model = SIMClassifier()
    with pytest.raises(ValueError, match="X contains NaN"):
        model.fit(_memmap(tmp_path, "bad", bad), y, states=states)
    assert not [name for name in vars(model) if name.endswith("_")]  # nothing half-done
    with pytest.raises(ValueError, match="states must have shape"):
        SIMClassifier().fit(_memmap(tmp_path, "X", X), y, states=states[:10])
    with pytest.raises(ValueError, match="FrozenEstimator"):
        SIMClassifier(MLPClassifier()).fit(da.from_array(X, chunks=(500, 10)), y)
    # a memmap with a teacher that trains on X is read into memory, as any array
    memmap_fit = SIMClassifier(alpha=1e-2, random_state=0).fit(_memmap(tmp_path, "X", X), y)
    np.testing.assert_array_equal(
        memmap_fit.A_.toarray(), SIMClassifier(alpha=1e-2, random_state=0).fit(X, y).A_.toarray())
    with pytest.raises(ValueError, match="TorchBaseline"):
        SIMClassifier().fit(_Batches(X, y))


class _Batches:
    """A re-iterable of (inputs, labels) batches without a torch DataLoader."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __iter__(self):
        for start in range(0, len(self.X), 500):
            yield self.X[start:start + 500], self.y[start:start + 500]


# ------------------------------------------------------------- a dask cluster
@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local_cluster:
        yield local_cluster


# a lambda travels to the workers by value (a test-module function would not import there)
_slow = lambda block: (time.sleep(0.05), block)[1]  # noqa: E731


def test_fit_on_a_local_cluster_equals_the_local_fit(problem, cluster):
    """dask arrays reduced on the workers; the row solves in row batches on
    the workers under joblib's dask backend."""
    import joblib

    X, y, states, logits, _ = problem
    local = _local_fit(problem)
    with distributed.Client(cluster):
        with joblib.parallel_backend("dask"):
            streamed = SIMClassifier(tol=TOL, relax=RELAX).fit(
                da.from_array(X, chunks=(256, 10)), y,
                states=da.from_array(states, chunks=(256, 20)), baseline_outputs=logits)
        with joblib.parallel_backend("dask"):
            in_memory_on_cluster = _local_fit(problem)
    assert_equivalent(streamed, local, X, states)
    # in-memory data, rows solved on the workers: the same rows exactly
    assert abs(in_memory_on_cluster.A_ - local.A_).max() == 0
    assert abs(in_memory_on_cluster.C_ - local.C_).max() == 0


def test_a_worker_killed_during_the_reduction_is_retried(problem, cluster):
    """Dask reruns the lost worker's tasks (the nanny restarts it): the fit
    completes and equals the local fit."""
    X, y, states, logits, _ = problem
    local = _local_fit(problem)
    with distributed.Client(cluster) as client:
        X_slow = da.from_array(X, chunks=(50, 10)).map_blocks(_slow, dtype=float)

        killed = {}

        def kill_one_worker():
            time.sleep(0.4)
            killed["address"] = min(client.scheduler_info()["workers"])
            killed["time"] = time.perf_counter()
            try:
                client.run(os._exit, 1, workers=[killed["address"]])
            except Exception:  # noqa: BLE001, S110 - the worker dies before it answers
                pass

        killer = threading.Thread(target=kill_one_worker)
        killer.start()
        streamed = SIMClassifier(tol=TOL, relax=RELAX).fit(X_slow, y, states=states,
                                              baseline_outputs=logits)
        finished = time.perf_counter()
        killer.join()
        assert killed["time"] < finished  # the worker died while the fit ran
        assert killed["address"] not in client.scheduler_info()["workers"]
    assert_equivalent(streamed, local, X, states)


def test_a_lost_client_raises_a_clear_error(problem, cluster):
    X, y, states, logits, _ = problem
    client = distributed.Client(cluster)
    X_slow = da.from_array(X, chunks=(50, 10)).map_blocks(_slow, dtype=float)
    closer = threading.Timer(0.4, client.close)
    closer.start()
    model = SIMClassifier()
    try:
        with pytest.raises(RuntimeError, match="no model was fitted"):
            model.fit(X_slow, y, states=states, baseline_outputs=logits)
    finally:
        closer.join()
        client.close()
    assert not [name for name in vars(model) if name.endswith("_")]


@pytest.mark.parametrize("params", [{}, {"positions_per_image": None, "refit_outputs": False},
                                    {"state_inputs": "model"}])
def test_weight_shared_fit_on_memmap_and_dask(tmp_path, params):
    """A convolutional teacher's weight-shared fit: on a memmap (read batch by
    batch) and on dask arrays (each block of rows reduced where it lives:
    the teacher and the fitted blocks run there, the blocks' Gram problems
    merged) equals the in-memory fit."""
    torch = pytest.importorskip("torch")
    from sksim import TorchBaseline

    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(5 * 4 * 4, 3)).double()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2 * 7 * 7))
    baseline = TorchBaseline(cnn, input_shape=(2, 7, 7), dtype="float64")
    _, logits = baseline.record(X)
    y = logits.argmax(axis=1)

    def fit(data, labels):
        return SIMClassifier(baseline, alpha=1e-3, tol=TOL, relax=RELAX, **params).fit(data, labels)

    local = fit(X, y)
    assert local.kernels_ is not None
    for streamed in (fit(_memmap(tmp_path, "X", X), y),
                     fit(da.from_array(X, chunks=(70, 98)), da.from_array(y, chunks=70))):
        assert streamed.structure_ == local.structure_
        for mine, theirs in zip(streamed.kernels_, local.kernels_):
            for a, b in zip(mine, theirs):
                np.testing.assert_allclose(a, b, atol=1e-6)
        assert np.abs(streamed.A_).sum(axis=1).max() <= local.kappa
        assert np.max(streamed.state_duality_gaps_ / np.maximum(
            streamed.state_objectives_, 1.0)) <= TOL + 1e-12
        np.testing.assert_array_equal(streamed.predict(X), local.predict(X))


@pytest.mark.parametrize("fault", ["activation", "features", "unfitted"])
def test_streamed_fit_checks_a_frozen_mlp_as_the_in_memory_fit(tmp_path, fault):
    """The streamed fit reads a frozen MLP through the same record as the
    in-memory fit, so both reject a teacher that does not match the model or
    X, or that is not fitted, with the same message."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.arange(40) % 2
    mlp = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2000, random_state=0)
    if fault == "activation":
        mlp.set_params(activation="tanh").fit(X, y)
        match = "baseline uses activation='tanh'"
    elif fault == "features":
        mlp.fit(X[:, :2], y)
        match = "baseline expects 2 features, X has 3"
    else:
        match = "FrozenEstimator around an unfitted estimator"
    for inputs in (X, _memmap(tmp_path, "X", X)):
        with pytest.raises(ValueError, match=match):
            SIMClassifier(FrozenEstimator(mlp)).fit(inputs, y)
