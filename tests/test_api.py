"""Public API: states routing, GridSearchCV, Pipeline, clone, pickle, bad input."""

import math
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import Lasso
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksim import SIMClassifier, SIMRegressor
from sksim.baselines import mlp_forward, mlp_implicit_blocks, well_posed_layer_scales


def _lasso_objective(design, target, coef, intercept, alpha):
    residual = target - design @ coef - intercept
    return residual @ residual / (2 * len(target)) + alpha * np.abs(coef).sum()


@pytest.fixture(scope="module")
def digits_split():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def small_teacher_problem():
    """A small classification problem with states from a fitted MLP."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1)
    mlp = MLPClassifier((8, 6), max_iter=2000, random_state=0).fit(X, y)
    states, logits = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    return X, y, states, logits, mlp


def test_digits_default_within_two_points_of_teacher(digits_split):
    """Real data: the default SIMClassifier is within 2 points of its teacher."""
    X_train, X_test, y_train, y_test = digits_split
    model = SIMClassifier(random_state=0).fit(X_train, y_train)
    teacher_accuracy = model.baseline_.score(X_test, y_test)
    sim_accuracy = model.score(X_test, y_test)
    assert sim_accuracy >= teacher_accuracy - 0.02, (sim_accuracy, teacher_accuracy)
    assert np.abs(model.A_).sum(axis=1).max() <= model.kappa
    assert model.n_nonzero_ < sum(np.count_nonzero(c) for c in model.baseline_.coefs_)


def test_teacher_scaling_keeps_teacher_exact(small_teacher_problem):
    """Rescaled teacher states describe the same network, now well posed."""
    X, _, _, logits, mlp = small_teacher_problem
    scales = well_posed_layer_scales(mlp.coefs_, 0.9)
    A, B, C, D, bx, by = mlp_implicit_blocks(mlp.coefs_, mlp.intercepts_, scales)
    assert np.abs(A).sum(axis=1).max() <= 0.9 + 1e-12
    states, outputs = mlp_forward(mlp.coefs_, mlp.intercepts_, X, scales)
    post = np.maximum(states, 0)
    np.testing.assert_allclose(states, post @ A.T + X @ B.T + bx, atol=1e-10)
    np.testing.assert_allclose(outputs, post @ C.T + X @ D.T + by, atol=1e-10)
    np.testing.assert_allclose(outputs, logits, atol=1e-10)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # small teacher budget
def test_frozen_and_unfitted_mlp_baselines(small_teacher_problem):
    X, y, _, _, mlp = small_teacher_problem
    frozen = SIMClassifier(FrozenEstimator(mlp)).fit(X, y)
    assert frozen.baseline_.estimator is mlp
    unfitted = MLPClassifier((8,), max_iter=500, random_state=0)
    model = SIMClassifier(unfitted).fit(X, y)
    assert model.baseline_ is not unfitted
    assert model.n_states_ == 8
    with pytest.raises(ValueError, match="baseline"):
        SIMClassifier(MLPRegressor()).fit(X, y)
    with pytest.raises(ValueError, match="activation"):
        SIMClassifier(MLPClassifier((4,), activation="tanh", max_iter=50)).fit(X, y)


def test_baseline_outputs_are_fitted_instead_of_y(small_teacher_problem):
    X, y, states, logits, _ = small_teacher_problem
    model = SIMClassifier(alpha=1e-4, relax=1.0).fit(X, y, states=states,
                                                  baseline_outputs=logits)
    assert model.C_.shape[0] == logits.shape[1]
    # Each output row is the Lasso of the logits on [X*, X] (X* the model's
    # own equilibrium, refit_outputs=True): its objective matches
    # scikit-learn's Lasso on the same design, and fitting y instead gives
    # other rows.
    design = np.hstack([model.equilibrium(X), X])
    coef = np.hstack([model.C_.toarray(), model.D_.toarray()])
    for k in range(logits.shape[1]):
        lasso = Lasso(alpha=1e-4, tol=1e-12, max_iter=200_000).fit(design, logits[:, k])
        reference = _lasso_objective(design, logits[:, k], lasso.coef_, lasso.intercept_,
                                     1e-4)
        ours = _lasso_objective(design, logits[:, k], coef[k], model.intercept_[k], 1e-4)
        assert ours == pytest.approx(model.output_objectives_[k], rel=1e-9)
        assert ours <= reference * (1 + model.tol) + 1e-12
        assert ours >= reference * (1 - 1e-6)
    on_labels = SIMClassifier(alpha=1e-4).fit(X, y, states=states)
    assert not np.allclose(on_labels.C_.toarray(), model.C_.toarray())
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X))


def test_gridsearch_splits_states_with_X(small_teacher_problem):
    X, y, states, _, _ = small_teacher_problem
    seen = []

    class Recording(SIMClassifier):
        def fit(self, X, y, states=None, baseline_outputs=None):
            seen.append((X.shape[0], None if states is None else states.shape[0]))
            return super().fit(X, y, states=states, baseline_outputs=baseline_outputs)

    search = GridSearchCV(
        Recording(), {"alpha": [1e-3, 1e-2], "kappa": [0.5, 0.9]}, cv=3
    ).fit(X, y, states=states)
    assert all(n_x == n_z for n_x, n_z in seen)
    assert {n for n, _ in seen} >= {80}
    # The search's scores are those of fits on the states split like X: each
    # candidate's mean CV score recomputed by hand from the same folds.
    folds = list(StratifiedKFold(3).split(X, y))
    for params, score in zip(search.cv_results_["params"],
                             search.cv_results_["mean_test_score"]):
        by_hand = np.mean([
            SIMClassifier(**params).fit(X[train], y[train], states=states[train])
            .score(X[test], y[test]) for train, test in folds])
        assert score == by_hand, (params, score, by_hand)
    best = int(np.argmax(search.cv_results_["mean_test_score"]))
    assert search.best_params_ == search.cv_results_["params"][best]
    refit = SIMClassifier(**search.best_params_).fit(X, y, states=states)
    np.testing.assert_array_equal(search.best_estimator_.A_.toarray(), refit.A_.toarray())


def test_pipeline_routes_states(small_teacher_problem):
    X, y, states, _, _ = small_teacher_problem
    pipe = make_pipeline(StandardScaler(), SIMClassifier())
    pipe.fit(X, y, simclassifier__states=states)
    sim = pipe[-1]
    # the states were used: no teacher was trained, the state width is the
    # routed one (the embedded teacher would have 64 + 32 states)
    assert sim.baseline_ is None and sim.state_scales_ is None
    assert sim.n_states_ == states.shape[1] != 64 + 32
    assert sim.n_features_in_ == X.shape[1]
    direct = SIMClassifier().fit(StandardScaler().fit_transform(X), y, states=states)
    for name in ("A_", "B_", "C_", "D_"):
        np.testing.assert_array_equal(getattr(sim, name).toarray(),
                                      getattr(direct, name).toarray())


def test_clone_and_pickle_round_trip(small_teacher_problem):
    X, y, states, _, _ = small_teacher_problem
    model = SIMClassifier(alpha=1e-3, kappa=0.8).fit(X, y, states=states)
    cloned = clone(model)
    assert cloned.get_params() == model.get_params()
    assert not hasattr(cloned, "A_")
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.decision_function(X), model.decision_function(X))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))

    regressor = SIMRegressor(alpha=1e-3).fit(X, X[:, 0] - X[:, 1], states=states)
    restored = pickle.loads(pickle.dumps(regressor))
    np.testing.assert_array_equal(restored.predict(X), regressor.predict(X))


def test_equilibrium_certificate(small_teacher_problem):
    X, y, states, _, _ = small_teacher_problem
    model = SIMClassifier(alpha=1e-3, kappa=0.9).fit(X, y, states=states)
    x_star, residual = model.equilibrium(X, return_residual=True)
    assert x_star.shape == (X.shape[0], model.n_states_)
    # The certificate recomputed with plain numpy.
    A, B = model.A_.toarray(), model.B_.toarray()
    recomputed = np.abs(x_star - np.maximum(x_star @ A.T + X @ B.T + model.state_intercept_, 0))
    assert recomputed.max() <= 1e-9
    np.testing.assert_allclose(residual, recomputed.max(axis=1), atol=1e-12)


def test_equilibrium_nonconvergence_warns(small_teacher_problem):
    X, y, states, _, _ = small_teacher_problem
    model = SIMClassifier(alpha=1e-4, kappa=0.9).fit(X, y, states=states)
    if model.A_.nnz == 0 or np.allclose(np.tril(model.A_.toarray(), -1), model.A_.toarray()):
        # Force a cyclic A: with Gauss-Seidel in index order a lower-triangular A
        # is exact in one sweep, so the warning needs feedback to be observable.
        A = model.A_.toarray()
        A[0, -1] = 0.05
        import scipy.sparse as sp
        model.A_ = sp.csr_array(A)
    model.set_params(equilibrium_max_iter=1, equilibrium_tol=1e-300)
    with pytest.warns(ConvergenceWarning, match="equilibrium_max_iter"):
        model.predict(X)


def test_row_nonconvergence_warns_once_and_model_is_usable(digits_split):
    X_train, _, y_train, _ = digits_split
    with pytest.warns(ConvergenceWarning, match="max_iter") as record:
        model = SIMClassifier(max_iter=1, random_state=0, alpha=1e-4, solver="cd").fit(X_train, y_train)
    messages = [str(w.message) for w in record if issubclass(w.category, ConvergenceWarning)
                and "rows did not reach" in str(w.message)]
    assert 1 <= len(messages) <= 2  # one summary for state rows, one for output rows
    assert np.abs(model.A_).sum(axis=1).max() <= model.kappa
    assert np.all(np.isfinite(model.predict_proba(X_train)))


def test_predict_before_fit_raises():
    with pytest.raises(NotFittedError):
        SIMRegressor().predict(np.zeros((2, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("where", ["X", "y", "states", "baseline_outputs"])
def test_non_finite_input_raises(small_teacher_problem, bad, where):
    """NaN or inf anywhere gives a ValueError that names the argument."""
    X, y, states, logits, _ = small_teacher_problem
    arrays = {
        "X": X.copy(), "y": y.astype(float), "states": states.copy(),
        "baseline_outputs": logits[:, :1].copy(),
    }
    arrays[where][3] = bad
    with pytest.raises(ValueError, match=f"Input {where} contains"):
        SIMRegressor().fit(arrays["X"], arrays["y"], states=arrays["states"],
                           baseline_outputs=arrays["baseline_outputs"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kappa": 0.0}, "kappa"),
        ({"kappa": 1.0}, "kappa"),
        ({"kappa": -0.5}, "kappa"),
        ({"alpha": -1.0}, "alpha"),
        ({"output_alpha": -1.0}, "output_alpha"),
        ({"l1_ratio": 1.5}, "l1_ratio"),
        ({"activation": "tanh"}, "activation"),
        ({"tol": 0.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_bad_parameters_raise(small_teacher_problem, kwargs, match):
    X, y, states, _, _ = small_teacher_problem
    with pytest.raises(ValueError, match=match):
        SIMClassifier(**kwargs).fit(X, y, states=states)


def test_misaligned_states_and_outputs_raise(small_teacher_problem):
    X, y, states, logits, _ = small_teacher_problem
    with pytest.raises(ValueError, match="states has 119 rows"):
        SIMClassifier().fit(X, y, states=states[:-1])
    with pytest.raises(ValueError, match="baseline_outputs has 119 rows"):
        SIMClassifier().fit(X, y, states=states, baseline_outputs=logits[:-1])
    with pytest.raises(ValueError, match="baseline_outputs has 2 columns"):
        SIMClassifier().fit(X, y, states=states, baseline_outputs=logits[:, :2])
    with pytest.raises(ValueError, match="baseline_outputs has 3 columns"):
        SIMRegressor().fit(X, X[:, 0], states=states, baseline_outputs=logits)
    with pytest.raises(ValueError, match="states"):
        SIMClassifier().fit(X, y, states=states[:, 0])


def test_float32_and_readonly_input(small_teacher_problem):
    X, y, states, _, _ = small_teacher_problem
    X32 = X.astype(np.float32)
    X32.setflags(write=False)
    states_ro = states.copy()
    states_ro.setflags(write=False)
    model32 = SIMClassifier(tol=1e-9).fit(X32, y, states=states_ro)
    # The README promises bitwise equality with the fit on the float32
    # values cast to float64 (not closeness to a fit on the unrounded data).
    model64 = SIMClassifier(tol=1e-9).fit(X32.astype(np.float64), y, states=states)
    for name in ("A_", "B_", "C_", "D_"):
        a, b = getattr(model32, name), getattr(model64, name)
        np.testing.assert_array_equal(a.indices, b.indices)
        assert a.data.tobytes() == b.data.tobytes(), name
    assert model32.decision_function(X32).tobytes() == \
        model64.decision_function(X32.astype(np.float64)).tobytes()
    assert not X32.flags.writeable and not states_ro.flags.writeable


def test_n_jobs_does_not_change_the_result(small_teacher_problem):
    X, y, states, _, _ = small_teacher_problem
    one = SIMClassifier(n_jobs=1).fit(X, y, states=states)
    two = SIMClassifier(n_jobs=2).fit(X, y, states=states)
    for name in ("A_", "B_", "C_", "D_"):
        np.testing.assert_array_equal(getattr(one, name).toarray(), getattr(two, name).toarray())


def _record_thread(seen, owner, items):
    for i in items:
        seen[i] += 1
        owner[i] = items[0]


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_run_on_threads_gives_each_item_to_one_thread(n_threads):
    """Every item is run once, the items dealt out in turn to numba's thread
    count of threads (the first share on the calling thread)."""
    import numba

    from sksim.solvers._threads import run_on_threads

    kernel = numba.njit(nogil=True)(_record_thread)
    seen, owner = np.zeros(7, dtype=np.int64), np.full(7, -1)
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        run_on_threads(kernel, 7, seen, owner)
        run_on_threads(kernel, 0, seen, owner)  # nothing to run: no call
    finally:
        numba.set_num_threads(previous)
    shares = min(n_threads, numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(seen, np.ones(7))
    np.testing.assert_array_equal(owner, np.arange(7) % shares)


@pytest.mark.parametrize("row_bound", [None, 1.0])
def test_lipschitz_bounds_hold_along_worst_local_directions(small_teacher_problem,
                                                              row_bound):
    """Both certified bounds hold where they are tightest: at each input, the
    worst l_inf direction for the worst output is the sign of that output's
    Jacobian row (computed here in numpy from the active ReLU pattern); a
    small step along it must not beat the bounds. The path bound is never
    above the norm-product bound."""
    X, _, states, _, _ = small_teacher_problem
    model = SIMRegressor(alpha=1e-3, kappa=0.9, row_bound=row_bound).fit(
        X, X[:, :2] @ np.array([[1.0, -2.0], [0.5, 1.0]]), states=states)
    path, product = model.lipschitz_path_bound_, model.lipschitz_bound_
    assert 0 < path <= product * (1 + 1e-12)
    # both equal their definitions, recomputed from the fitted matrices
    absA, absB = np.abs(model.A_.toarray()), np.abs(model.B_.toarray())
    absC, absD = np.abs(model.C_.toarray()), np.abs(model.D_.toarray())
    norm = lambda M: max(math.fsum(row) for row in M)  # noqa: E731
    assert product == pytest.approx(
        norm(absC) * norm(absB) / (1 - norm(absA)) + norm(absD), rel=1e-13)
    assert path == pytest.approx(
        norm(absC @ np.linalg.solve(np.eye(len(absA)) - absA, absB) + absD), rel=1e-9)
    A, B = model.A_.toarray(), model.B_.toarray()
    C, D = model.C_.toarray(), model.D_.toarray()
    n = model.n_states_
    for u in X[:40]:
        x = model.equilibrium(u[None, :])[0]
        active = (x @ A.T + u @ B.T + model.state_intercept_ > 0).astype(float)
        S = np.diag(active)
        jacobian = C @ np.linalg.solve(np.eye(n) - S @ A, S @ B) + D
        k = np.argmax(np.abs(jacobian).sum(axis=1))
        step = 1e-7 * np.sign(jacobian[k])
        moved = model.predict(np.vstack([u, u + step]))
        ratio = np.abs(moved[1] - moved[0]).max() / 1e-7
        # the step realises the local Lipschitz constant (the numpy Jacobian
        # is the model's), which both certificates must bound
        local = np.abs(jacobian).sum(axis=1).max()
        assert ratio == pytest.approx(local, rel=1e-5, abs=1e-9)
        assert local <= path * (1 + 1e-12)
    if row_bound is not None:
        assert product <= row_bound**2 / (1 - 0.9) + row_bound


def _doubled(value):
    return 2.0 * value


def test_is_cached_reads_numba_s_own_cache_index(tmp_path, monkeypatch):
    """A cache=True kernel is cached once numba has written its index (here
    into a fresh NUMBA_CACHE_DIR, which a dispatcher reads when created)."""
    import numba

    from sksim.solvers import _first_use

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    kernel = numba.njit(cache=True)(_doubled)
    assert not _first_use.is_cached(kernel)
    assert kernel(1.5) == 3.0  # compiles and writes the cache
    assert _first_use.is_cached(kernel)
    assert _first_use.is_cached(numba.njit(cache=True)(_doubled))  # a fresh process's view


def test_first_use_compilation_is_announced_once(monkeypatch, capsys):
    """Without cached kernels the fit's start says (once, on stderr) that
    numba will compile; with them it says nothing."""
    from sksim.solvers import _first_use

    monkeypatch.setattr(_first_use, "_announced", False)
    monkeypatch.setattr(_first_use, "is_cached", lambda kernel: False)
    _first_use.announce_compilation()
    _first_use.announce_compilation(path=True)
    assert capsys.readouterr().err.count("compiling the numba kernels") == 1
    monkeypatch.setattr(_first_use, "_announced", False)
    checked = []
    monkeypatch.setattr(_first_use, "is_cached", lambda kernel: checked.append(kernel) or True)
    _first_use.announce_compilation(path=True)
    assert capsys.readouterr().err == ""
    assert {kernel.py_func.__name__ for kernel in checked} == {
        "homotopy_rows_kernel", "_equilibrium_kernel", "homotopy_path_kernel"}


def test_a_compile_the_fit_did_not_predict_is_announced_before_it(monkeypatch, capsys):
    """Any sksim function numba starts compiling is announced first (once):
    kernels a default fit does not use, a changed source, another CPU."""
    import numba

    from sksim.solvers import _first_use, projection

    monkeypatch.setattr(_first_use, "_announced", False)
    assert numba.njit(_doubled)(1.0) == 2.0  # not sksim's: nothing said
    assert capsys.readouterr().err == ""
    soft_threshold = numba.njit(projection.soft_threshold.py_func)  # uncached copy
    assert soft_threshold(3.0, 1.0) == 2.0
    assert soft_threshold(3, 1) == 2  # a second compile
    assert capsys.readouterr().err.count("compiling the numba kernels") == 1


class _Stop(Exception):
    pass


@pytest.mark.parametrize("fit", ["estimator", "cv", "path"])
def test_fit_announces_compilation_before_the_teacher_trains(monkeypatch, fit):
    """The check is the first thing a fit does (after its parameters'
    validation): before the embedded teacher trains and any kernel runs."""
    import sksim
    from sksim import estimators, path, recording

    calls = []

    def announce(path=False):
        calls.append(("announce", path))
        raise _Stop

    monkeypatch.setattr(estimators, "announce_compilation", announce)
    monkeypatch.setattr(path, "announce_compilation", announce)
    monkeypatch.setattr(recording, "record_teacher",
                        lambda *args, **kwargs: calls.append("teacher"))
    X, y = np.zeros((10, 2)), np.arange(10) % 2
    with pytest.raises(_Stop):
        if fit == "estimator":
            SIMClassifier().fit(X, y)
        elif fit == "cv":
            sksim.SIMClassifierCV().fit(X, y)
        else:
            sksim.sim_path(SIMClassifier(), X, y)
    assert calls == [("announce", fit != "estimator")]


def test_a_cold_fit_says_it_compiles_before_anything_else(tmp_path):
    """In a process with an empty numba cache the notice is the first line
    of output (stdout and stderr together), within seconds of the fit's
    start (the process is stopped there: the compile itself is not run)."""
    import os
    import subprocess
    import sys
    import time

    code = """
import numpy as np
from sksim import SIMClassifier
X = np.random.default_rng(0).normal(size=(60, 3))
print("fit starts", flush=True)
SIMClassifier(verbose=1).fit(X, (X[:, 0] > 0).astype(int))
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert process.stdout.readline() == "fit starts\n"
        started = time.perf_counter()
        line = process.stdout.readline()
        waited = time.perf_counter() - started
    finally:
        process.kill()
        process.wait()
    assert line.startswith("sksim: compiling the numba kernels on first use"), line
    assert waited < 10.0


def test_one_sample_with_an_intercept_raises():
    """With fit_intercept=True one sample would give a constant model: a clear
    error (scikit-learn's checks accept it: the message says "1 sample")."""
    X, y = np.ones((1, 3)), np.ones(1)
    with pytest.raises(ValueError, match="needs at least 2 samples; got 1 sample"):
        SIMRegressor().fit(X, y, states=np.ones((1, 2)))
    model = SIMRegressor(fit_intercept=False).fit(X, y, states=np.ones((1, 2)))
    assert model.predict(X).shape == (1,)


def test_verbose_reports_progress_without_changing_the_fit(capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    Z = X @ rng.normal(size=(6, 20))
    y = Z[:, 0] - X[:, 1]
    quiet = SIMRegressor(alpha=1e-3).fit(X, y, states=Z)
    assert capsys.readouterr().out == ""
    loud = SIMRegressor(alpha=1e-3, verbose=1).fit(X, y, states=Z)
    out = capsys.readouterr().out
    for line in ("teacher (states and outputs)", "state rows' Gram matrix",
                 "state rows: 20/20 rows solved", "output rows' Gram matrix",
                 "output rows: 1/1 rows solved"):
        assert line in out
    assert out.count("state rows: ") == 8  # eight batches of rows
    assert abs(loud.A_ - quiet.A_).max() == 0 and abs(loud.C_ - quiet.C_).max() == 0
