"""Fault matrix: every bad input gets a clear ValueError/TypeError naming it.

One test case per fault (parametrized cases count separately). Bad input must
never crash inside numba and never return a model or prediction holding NaN or
inf. The case "a TorchBaseline whose module returns NaN" is covered in
``tests/test_torch.py``.
"""

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from sksim import SIMClassifier, SIMRegressor

RNG = np.random.default_rng(0)
X = RNG.normal(size=(30, 4))
Z = X @ RNG.normal(size=(4, 5)) + RNG.normal(size=(30, 5))
Y = X[:, 0] - X[:, 1] + 0.1 * RNG.normal(size=30)
LABELS = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
OUTPUTS = np.c_[Y, -Y]


def _fit(estimator="reg", X=X, y=None, states=Z, baseline_outputs=None, **params):
    if estimator == "reg":
        model = SIMRegressor(**params)
        y = Y if y is None else y
    else:
        model = SIMClassifier(**params)
        y = LABELS if y is None else y
    return model.fit(X, y, states=states, baseline_outputs=baseline_outputs)


def _assert_finite_model(model):
    """A model returned despite a fault is finite and keeps its invariants
    exactly: ||A||_inf <= kappa and, with row_bound, every row of [A B] and
    [C D] within it (exact sums, so any summation order is safe)."""
    for name in ("A_", "B_", "C_", "D_"):
        assert np.all(np.isfinite(getattr(model, name).data)), name
    assert np.all(np.isfinite(model.state_intercept_))
    assert np.all(np.isfinite(model.intercept_))
    assert np.isfinite(model.lipschitz_bound_)
    for row in np.abs(model.A_.toarray()):
        assert math.fsum(row) <= model.kappa
    if model.row_bound is not None:
        for blocks in (("A_", "B_"), ("C_", "D_")):
            rows = np.abs(np.hstack([getattr(model, b).toarray() for b in blocks]))
            for row in rows:
                assert math.fsum(row) <= model.row_bound, blocks


# ----------------------------------------------------------- non-finite values
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["X", "y", "states", "baseline_outputs"])
@pytest.mark.parametrize("estimator", ["reg", "clf"])
def test_non_finite_input(estimator, where, bad):
    arrays = {"X": X.copy(), "y": Y.copy(), "states": Z.copy(),
              "baseline_outputs": OUTPUTS[:, :1].copy() if estimator == "reg"
              else OUTPUTS.copy()}
    if estimator == "clf":
        arrays["y"] = LABELS.astype(float)
    arrays[where][np.unravel_index(7, arrays[where].shape)] = bad
    if estimator == "clf" and where == "y":
        match = "Input y contains|Unknown label type"
    else:
        match = f"Input {where} contains"
    with pytest.raises(ValueError, match=match):
        _fit(estimator, arrays["X"], arrays["y"], arrays["states"],
             arrays["baseline_outputs"])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_at_predict(bad):
    model = _fit()
    Xbad = X.copy()
    Xbad[2, 1] = bad
    for method in (model.predict, model.equilibrium):
        with pytest.raises(ValueError, match="Input X contains"):
            method(Xbad)


# ------------------------------------------------------------------ empty input
@pytest.mark.parametrize(
    "case, match",
    [
        ("no-samples", "0 sample"),
        ("no-features", "0 feature"),
        ("states-no-columns", "states is empty"),
        ("states-no-rows", "states is empty"),
        ("outputs-no-columns", "baseline_outputs is empty"),
    ],
)
def test_empty_arrays(case, match):
    kwargs = {}
    if case == "no-samples":
        kwargs = dict(X=X[:0], y=Y[:0], states=Z[:0])
    elif case == "no-features":
        kwargs = dict(X=X[:, :0])
    elif case == "states-no-columns":
        kwargs = dict(states=Z[:, :0])
    elif case == "states-no-rows":
        kwargs = dict(states=Z[:0])
    elif case == "outputs-no-columns":
        kwargs = dict(baseline_outputs=OUTPUTS[:, :0])
    with pytest.raises(ValueError, match=match):
        _fit(**kwargs)


# ------------------------------------------------------ dimensions and row counts
@pytest.mark.parametrize(
    "case, match",
    [
        ("X-1d", "Expected 2D array"),
        ("X-3d", "dim 3"),
        ("y-3d", "dim 3"),
        ("states-1d", "states must be a 2-D array"),
        ("states-3d", "states must be a 2-D array"),
        ("outputs-1d", "baseline_outputs must be a 2-D array"),
        ("y-rows", "inconsistent numbers of samples"),
        ("states-rows", "states has 29 rows but X has 30"),
        ("outputs-rows", "baseline_outputs has 29 rows but X has 30"),
        ("outputs-columns", "baseline_outputs has 2 columns; expected 1"),
    ],
)
def test_wrong_dimensions_and_row_counts(case, match):
    kwargs = {
        "X-1d": dict(X=X[:, 0]),
        "X-3d": dict(X=X[:, :, None]),
        "y-3d": dict(y=Y[:, None, None]),
        "states-1d": dict(states=Z[:, 0]),
        "states-3d": dict(states=Z[:, :, None]),
        "outputs-1d": dict(baseline_outputs=Y),
        "y-rows": dict(y=Y[:-1]),
        "states-rows": dict(states=Z[:-1]),
        "outputs-rows": dict(baseline_outputs=OUTPUTS[:-1, :1]),
        "outputs-columns": dict(baseline_outputs=OUTPUTS),
    }[case]
    with pytest.raises(ValueError, match=match):
        _fit(**kwargs)


def test_classifier_output_columns_must_match_classes():
    with pytest.raises(ValueError, match="baseline_outputs has 2 columns; expected 3"):
        _fit("clf", baseline_outputs=OUTPUTS)


# ---------------------------------------------------------- object / string dtype
@pytest.mark.parametrize("where", ["X", "y", "states", "baseline_outputs"])
@pytest.mark.parametrize("dtype", [str, object])
def test_non_numeric_strings(where, dtype):
    arrays = {"X": X.astype(dtype), "y": Y.astype(dtype), "states": Z.astype(dtype),
              "baseline_outputs": OUTPUTS[:, :1].astype(dtype)}
    arrays[where][np.unravel_index(3, arrays[where].shape)] = "abc"
    others = {k: (v if k == where else v.astype(float)) for k, v in arrays.items()}
    with pytest.raises(ValueError, match=f"{where} must hold numbers"):
        _fit("reg", others["X"], others["y"], others["states"],
             others["baseline_outputs"])


def test_classifier_X_with_strings():
    Xs = X.astype(object)
    Xs[0, 0] = "abc"
    with pytest.raises(ValueError, match="X must hold numbers"):
        _fit("clf", X=Xs)


def test_object_X_with_a_dict_raises_type_error():
    """scikit-learn's convention (check_dtype_object): TypeError."""
    Xo = X.astype(object)
    Xo[0, 0] = {"a": 1}
    with pytest.raises(TypeError, match="number"):
        _fit(X=Xo)


def test_numeric_object_and_integer_X_are_accepted():
    reference = _fit(n_jobs=1)
    as_object = _fit(X=X.astype(object), n_jobs=1)
    np.testing.assert_array_equal(reference.A_.toarray(), as_object.A_.toarray())
    _assert_finite_model(_fit(X=(10 * X).astype(np.int64)))
    _assert_finite_model(_fit(X=X > 0))


@pytest.mark.parametrize("where", ["X", "y", "states"])
def test_complex_input(where):
    kwargs = {"X": dict(X=X + 1j), "y": dict(y=Y + 1j), "states": dict(states=Z + 1j)}
    with pytest.raises(ValueError, match="Complex data not supported"):
        _fit(**kwargs[where])


# ---------------------------------------------------------------- sparse input
@pytest.mark.parametrize("container", [sp.csr_matrix, sp.csr_array, sp.coo_array])
def test_sparse_X_is_rejected_clearly(container):
    with pytest.raises(TypeError, match="Sparse data was passed for X"):
        _fit(X=container(X))


@pytest.mark.parametrize("where", ["states", "baseline_outputs"])
@pytest.mark.parametrize("container", [sp.csr_matrix, sp.csc_array])
def test_sparse_states_and_outputs_are_rejected_clearly(where, container):
    value = container(Z) if where == "states" else container(OUTPUTS[:, :1])
    with pytest.raises(ValueError, match=f"{where} must be a dense array; got a sparse"):
        _fit(**{where: value})


def test_sparse_X_at_predict():
    with pytest.raises(TypeError, match="Sparse data was passed for X"):
        _fit().predict(sp.csr_array(X))


# ----------------------------------------------------------- classifier targets
def test_single_class():
    with pytest.raises(ValueError, match="at least 2 classes; got 1 class"):
        _fit("clf", y=np.zeros(30, dtype=int))


def test_multi_output_y_for_classifier():
    with pytest.raises(ValueError, match="y should be a 1d array"):
        _fit("clf", y=np.c_[LABELS, LABELS])


def test_continuous_y_for_classifier():
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        _fit("clf", y=Y)


def test_one_sample_classifier():
    with pytest.raises(ValueError, match="at least 2 classes"):
        _fit("clf", X=X[:1], y=LABELS[:1], states=Z[:1])


# ------------------------------------------------------------------ parameters
@pytest.mark.parametrize(
    "params, match",
    [
        ({"activation": "tanh"}, "activation"),
        ({"activation": None}, "activation"),
        ({"kappa": 0.0}, "kappa"),
        ({"kappa": 1.0}, "kappa"),
        ({"kappa": 1.5}, "kappa"),
        ({"kappa": -1e-9}, "kappa"),
        ({"kappa": np.nan}, "kappa"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": np.inf}, "alpha"),
        ({"alpha": np.nan}, "alpha"),
        ({"output_alpha": -1.0}, "output_alpha"),
        ({"row_bound": 0.0}, "row_bound"),
        ({"row_bound": -1.0}, "row_bound"),
        ({"row_bound": np.nan}, "row_bound"),
        ({"row_bound": "1"}, "row_bound"),
        ({"l1_ratio": -0.1}, "l1_ratio"),
        ({"tol": -1.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"equilibrium_tol": 0.0}, "equilibrium_tol"),
        ({"equilibrium_max_iter": 0}, "equilibrium_max_iter"),
        ({"n_jobs": "two"}, "n_jobs"),
    ],
)
@pytest.mark.parametrize("estimator", ["reg", "clf"])
def test_parameters_out_of_range(estimator, params, match):
    with pytest.raises(InvalidParameterError, match=f"'{match}' parameter"):
        _fit(estimator, **params)


@pytest.mark.parametrize("name", ["alpha", "output_alpha"])
def test_alpha_zero_needs_row_bound(name):
    """alpha=0 alone leaves unpenalised least squares (no certificate, no
    sparsity): rejected with a message naming the parameter and the fix; with
    a row_bound it is the pure constrained form and fits."""
    with pytest.raises(ValueError, match=rf"{name}=0 needs row_bound"):
        _fit(**{name: 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = _fit(**{name: 0.0, "row_bound": 0.5})
    _assert_finite_model(model)
    # the bound binds (least squares would exceed it), so it is tight
    assert np.any(getattr(model, "state_row_bound_multipliers_" if name == "alpha"
                          else "output_row_bound_multipliers_") > 0)


# -------------------------------------------------------------------- overflow
@pytest.mark.parametrize("where", ["X", "states", "y", "baseline_outputs"])
def test_gram_overflow_raises(where):
    kwargs = {"X": dict(X=X * 1e200), "states": dict(states=Z * 1e200),
              "y": dict(y=Y * 1e200),
              "baseline_outputs": dict(baseline_outputs=OUTPUTS[:, :1] * 1e200)}
    with pytest.raises(ValueError, match="overflows float64"):
        _fit(**kwargs[where])


def test_largest_float_overflows_cleanly():
    with pytest.raises(ValueError, match="overflows float64"):
        _fit(X=np.full_like(X, np.finfo(np.float64).max))


def test_centring_overflow_raises():
    """Values whose differences overflow (1.7e308 - (-1.7e308))."""
    Xbig = X.copy()
    Xbig[:15, 0] = 1.7e308
    Xbig[15:, 0] = -1.7e308
    with pytest.raises(ValueError, match="overflow|Input X contains"):
        _fit(X=Xbig)


@pytest.mark.parametrize("scale", [1e-150, 1e100, 1e150])
def test_huge_or_tiny_but_safe_inputs_give_finite_models(scale):
    """Inputs whose squares stay finite in float64 give a finite model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _fit(X=X * scale, y=Y * scale, states=Z * scale)
    _assert_finite_model(model)
    assert np.all(np.isfinite(model.predict(X * scale)))


def test_predict_overflow_raises_instead_of_inf():
    model = _fit(alpha=1e-4)
    with pytest.raises(ValueError, match="overflow"):
        model.predict(X * 1e307)
    with pytest.raises(ValueError, match="overflow"):
        model.equilibrium(X * 1e307)


# ---------------------------------------------------------------- predict time
@pytest.mark.parametrize("method", ["predict", "equilibrium", "decision_function",
                                    "predict_proba", "score"])
def test_wrong_number_of_features(method):
    model = _fit("clf")
    args = (X[:, :3], LABELS) if method == "score" else (X[:, :3],)
    with pytest.raises(ValueError, match="X has 3 features, but SIMClassifier is "
                                         "expecting 4 features"):
        getattr(model, method)(*args)


@pytest.mark.parametrize(
    "estimator, method",
    [(SIMRegressor, "predict"), (SIMRegressor, "equilibrium"), (SIMRegressor, "score"),
     (SIMClassifier, "predict"), (SIMClassifier, "equilibrium"),
     (SIMClassifier, "decision_function"), (SIMClassifier, "predict_proba"),
     (SIMClassifier, "predict_log_proba")],
)
def test_before_fit(estimator, method):
    args = (X, Y) if method == "score" else (X,)
    with pytest.raises(NotFittedError):
        getattr(estimator(), method)(*args)


def test_baseline_of_the_wrong_kind():
    with pytest.raises(ValueError, match="baseline must be None"):
        SIMRegressor(baseline="mlp").fit(X, Y)
