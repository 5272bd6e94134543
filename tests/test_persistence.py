"""Pickle-free persistence: exact round trips and clear errors on bad files."""

import io
import json
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.neural_network import MLPRegressor

from sksim import SIMClassifier, SIMRegressor, load_model, save_model
from sksim._attributes import FITTED_ATTRIBUTES, attributes_of_fit
from sksim.persistence import FORMAT_VERSION

NOT_SAVED = ("baseline_",)  # the teacher is not saved (documented); None after loading


def _public_fitted_attributes(model):
    """Every public fitted attribute: instance attributes ending in ``_`` and
    the fitted properties, found on the model itself so that a new attribute
    is covered without editing this list."""
    names = {n for n in vars(model) if n.endswith("_") and not n.startswith("_")}
    names |= {n for n in dir(type(model)) if n.endswith("_") and not n.startswith("_")
              and isinstance(getattr(type(model), n), property)}
    return sorted(names)


def _assert_same_value(name, a, b):
    if hasattr(a, "toarray"):
        assert type(a) is type(b) and a.shape == b.shape, name
        np.testing.assert_array_equal(a.toarray(), b.toarray(), err_msg=name)
    elif isinstance(a, list):  # kernels of a weight-shared model
        assert isinstance(b, list) and len(a) == len(b), name
        for x, y in zip(a, b):
            _assert_same_value(name, x, y)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    else:
        assert type(a) is type(b) and a == b, (name, a, b)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    states = X @ rng.normal(size=(4, 6)) + rng.normal(size=6)
    y = X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=60)
    return X, y, states


def _assert_same_model(a, b, X):
    names = _public_fitted_attributes(a)
    assert {"A_", "state_row_bound_multipliers_", "output_row_bound_multipliers_",
            "lipschitz_path_bound_", "n_nonzero_"} <= set(names)
    assert names == _public_fitted_attributes(b)
    for name in names:
        if name in NOT_SAVED:
            assert getattr(b, name) is None
        else:
            _assert_same_value(name, getattr(a, name), getattr(b, name))
    assert b.baseline is None and b.baseline_ is None
    params = a.get_params(deep=False)
    params.pop("baseline")
    loaded = b.get_params(deep=False)
    loaded.pop("baseline")
    assert params == loaded
    np.testing.assert_array_equal(a.equilibrium(X), b.equilibrium(X))
    pa, pb = a.predict(X), b.predict(X)
    assert pa.dtype == pb.dtype and pa.shape == pb.shape
    np.testing.assert_array_equal(pa, pb)


@pytest.mark.parametrize("multi_output", [False, True])
def test_regressor_round_trip_is_exact(problem, tmp_path, multi_output):
    X, y, states = problem
    target = np.c_[y, -y] if multi_output else y
    model = SIMRegressor(alpha=1e-2, kappa=0.7, l1_ratio=0.8, n_jobs=1).fit(
        X, target, states=states)
    path = tmp_path / "model.npz"
    save_model(model, path)
    loaded = load_model(path)
    assert type(loaded) is SIMRegressor
    _assert_same_model(model, loaded, X)


@pytest.mark.parametrize(
    "labels",
    [np.array([3, 7, 11]), np.array([-1.0, 2.0]), np.array(["cat", "dog", "eel"]),
     np.array(["no", "yes"], dtype=object), np.array([False, True])],
    ids=["int", "float", "unicode", "object-str", "bool"],
)
def test_classifier_round_trip_is_exact(problem, tmp_path, labels):
    X, _, states = problem
    y = labels[np.arange(X.shape[0]) % len(labels)]
    model = SIMClassifier(alpha=1e-2).fit(X, y, states=states)
    buffer = io.BytesIO()
    save_model(model, buffer)
    buffer.seek(0)
    loaded = load_model(buffer)
    _assert_same_model(model, loaded, X)
    assert loaded.classes_.dtype == model.classes_.dtype
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    np.testing.assert_array_equal(model.predict_proba(X), loaded.predict_proba(X))
    np.testing.assert_array_equal(model.decision_function(X),
                                  loaded.decision_function(X))


def _torch_teacher(width, convolutional=False):
    torch = pytest.importorskip("torch")
    from sksim import TorchBaseline

    torch.manual_seed(0)
    nn = torch.nn
    if convolutional:  # a weight-shared fit: X holds 1 x 4 x 4 images
        module = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                               nn.Linear(2 * 4 * 4, width)).double()
        return TorchBaseline(module, input_shape=(1, 4, 4), dtype="float64")
    module = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, width))
    return TorchBaseline(module)


def _mlp_teacher(classifier):
    from sklearn.neural_network import MLPClassifier

    cls = MLPClassifier if classifier else MLPRegressor
    return cls(hidden_layer_sizes=(5, 3), max_iter=300, random_state=0)


# Every kind of fit: (teacher, options). "states": precomputed states;
# "memmap": the same, streamed from memmaps; "cnn": a weight-shared fit.
FITS = {
    "states": ("states", {}),
    "states-row_bound": ("states", {"row_bound": 0.8}),
    "states-feedforward": ("states", {"structure": "feedforward",
                                      "state_blocks": [2, 4]}),
    "memmap": ("memmap", {}),
    "mlp-well_posed": ("mlp", {}),
    "mlp-rms": ("mlp", {"state_scaling": "rms"}),
    "mlp-none": ("mlp", {"state_scaling": "none"}),
    "mlp-feedforward-row_bound": ("mlp", {"structure": "feedforward",
                                          "row_bound": 0.8}),
    "torch": ("torch", {}),
    "torch-rms": ("torch", {"state_scaling": "rms"}),
    "cnn": ("cnn", {}),
    "cnn-row_bound-lateral": ("cnn", {"row_bound": 0.8, "lateral_kernel": 3}),
}


def _fitted(problem, tmp_path, estimator, fit):
    """A fitted estimator of one kind of FITS, and its X."""
    X, y, states = problem
    classifier = estimator == "clf-str"
    if classifier:  # string labels
        y = np.array(["ant", "bee", "cat"])[np.arange(len(X)) % 3]
    teacher_kind, options = FITS[fit]
    teacher, fit_states = None, None
    if teacher_kind in ("states", "memmap"):
        fit_states = states
    elif teacher_kind == "mlp":
        teacher = _mlp_teacher(classifier)
    else:
        teacher = _torch_teacher(3 if classifier else 1, convolutional=teacher_kind == "cnn")
        if teacher_kind == "cnn":
            X = np.random.default_rng(1).normal(size=(len(X), 16))
    if teacher_kind == "memmap":
        X = _memmap(tmp_path / "X.npy", X)
        fit_states = _memmap(tmp_path / "states.npy", states)
    cls = SIMClassifier if classifier else SIMRegressor
    model = cls(teacher, alpha=1e-2, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y, states=fit_states)
    return model, np.asarray(X)


def _memmap(path, array):
    np.save(path, array)
    return np.load(path, mmap_mode="r")


@pytest.mark.parametrize("fit", list(FITS))
@pytest.mark.parametrize("estimator", ["reg", "clf-str"])
def test_every_fitted_attribute_round_trips(problem, tmp_path, estimator, fit):
    """The registry of fitted attributes (sksim._attributes) is exactly what
    each kind of fit sets (a new attribute missing from it fails here), and
    every attribute in it survives save/load: arrays and sparse matrices
    equal, the teacher (documented as not saved) None, the predictions
    equal."""
    model, X = _fitted(problem, tmp_path, estimator, fit)
    weight_shared = fit.startswith("cnn")
    assert model._is_weight_shared() == weight_shared
    registry = attributes_of_fit(classifier=estimator == "clf-str",
                                 weight_shared=weight_shared)
    assert set(_public_fitted_attributes(model)) == {
        attribute.name for attribute in registry if not attribute.name.startswith("_")}
    if "row_bound" in fit:
        assert np.any(model.state_row_bound_multipliers_ > 0)
    # flat teachers get state scales unless state_scaling="none"; user states none
    assert (model.state_scales_ is None) == (FITS[fit][0] in ("states", "memmap")
                                             or fit == "mlp-none")
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    for attribute in registry:
        if attribute.kind == "teacher":
            assert getattr(loaded, attribute.name) is None
        else:
            _assert_same_value(attribute.name, getattr(model, attribute.name),
                               getattr(loaded, attribute.name))
    _assert_same_model(model, loaded, X)


def test_the_attributes_section_lists_the_registry():
    """Each estimator's numpydoc Attributes section is the registry's
    documented attributes, in its order."""
    ClassDoc = pytest.importorskip("numpydoc.docscrape").ClassDoc
    for cls in (SIMRegressor, SIMClassifier):
        documented = [entry.name for entry in ClassDoc(cls)["Attributes"]]
        expected = [attribute.name for attribute in FITTED_ATTRIBUTES
                    if attribute.doc is not None
                    and attribute.only != ("classifier" if cls is SIMRegressor
                                           else "regressor")]
        assert documented == expected


def test_version_1_files_are_read_when_multipliers_are_known(problem, tmp_path):
    """Version 1 did not store the row-bound multipliers: such a file loads
    (multipliers 0, which they are without row_bound) unless the model had a
    row_bound, whose multipliers are then unknown."""
    X, y, states = problem
    for row_bound in (None, 0.8):
        path = tmp_path / f"v1-{row_bound}.npz"
        model = SIMRegressor(row_bound=row_bound).fit(X, y, states=states)
        save_model(model, path)
        meta = _meta(path)
        meta["format_version"] = 1
        _rewrite(path, __sksim_meta__=np.asarray(json.dumps(meta)),
                 state_row_bound_multipliers_=None, output_row_bound_multipliers_=None)
        if row_bound is None:
            loaded = load_model(path)
            assert not np.any(model.state_row_bound_multipliers_)
            _assert_same_model(model, loaded, X)
        else:
            with pytest.raises(ValueError, match="version 1 file.*row_bound"):
                load_model(path)


def test_binary_logit_classifier_round_trip(problem, tmp_path):
    X, _, states = problem
    y = (X[:, 0] > 0).astype(int)
    model = SIMClassifier().fit(X, y, states=states, baseline_outputs=X[:, :1])
    assert model.C_.shape[0] == 1
    save_model(model, tmp_path / "m.npz")
    _assert_same_model(model, load_model(tmp_path / "m.npz"), X)


def test_teacher_is_not_saved(problem, tmp_path):
    X, y, _ = problem
    model = SIMRegressor(MLPRegressor(hidden_layer_sizes=(5,), max_iter=300, random_state=0),
                         random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    path = tmp_path / "m.npz"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.baseline is None and loaded.baseline_ is None
    np.testing.assert_array_equal(loaded.state_scales_, model.state_scales_)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["__sksim_meta__"][()]))
    assert meta["baseline_type"] == "MLPRegressor"
    assert meta["format_version"] == FORMAT_VERSION


def test_feature_names_round_trip(problem, tmp_path):
    X, y, states = problem
    model = SIMRegressor().fit(X, y, states=states)
    # What validate_data stores for a DataFrame (pandas is not a dependency).
    model.feature_names_in_ = np.array(["a", "b", "c", "d"], dtype=object)
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.feature_names_in_.dtype == object
    np.testing.assert_array_equal(loaded.feature_names_in_, model.feature_names_in_)


def test_file_is_written_exactly_at_path(problem, tmp_path):
    X, y, states = problem
    model = SIMRegressor().fit(X, y, states=states)
    save_model(model, tmp_path / "model.sim")
    assert (tmp_path / "model.sim").exists()
    assert not (tmp_path / "model.sim.npz").exists()
    loaded = load_model(str(tmp_path / "model.sim"))
    _assert_same_model(model, loaded, X)


def test_unfitted_or_foreign_estimator_is_refused(tmp_path):
    with pytest.raises(NotFittedError):
        save_model(SIMRegressor(), tmp_path / "m.npz")
    with pytest.raises(ValueError, match="SIMRegressor or SIMClassifier"):
        save_model(MLPRegressor(), tmp_path / "m.npz")


def test_object_labels_that_do_not_round_trip_are_refused(problem, tmp_path):
    X, _, states = problem
    model = SIMClassifier()
    model.fit(X, np.arange(60) % 2, states=states)
    model.classes_ = np.array([frozenset({1}), frozenset({3})], dtype=object)
    with pytest.raises(ValueError, match="classes_ has dtype object"):
        save_model(model, tmp_path / "m.npz")


def _saved(problem, tmp_path):
    X, y, states = problem
    path = tmp_path / "m.npz"
    save_model(SIMRegressor().fit(X, y, states=states), path)
    return path


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        files = {k: archive[k] for k in archive.files}
    for key, value in changes.items():
        if value is None:
            files.pop(key)
        else:
            files[key] = value
    with open(path, "wb") as handle:
        np.savez(handle, **files)


def _meta(path):
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(str(archive["__sksim_meta__"][()]))


def test_truncated_file_raises(problem, tmp_path):
    path = _saved(problem, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid sksim model file"):
        load_model(path)


def test_garbage_file_raises(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ValueError, match="not a valid sksim model file"):
        load_model(path)


def test_flipped_bytes_raise(problem, tmp_path):
    path = _saved(problem, tmp_path)
    data = bytearray(path.read_bytes())
    for k in range(200, min(len(data) - 200, 1200)):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a valid sksim model file"):
        load_model(path)


def test_foreign_npz_raises(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones(3))
    with pytest.raises(ValueError, match="no sksim metadata"):
        load_model(path)


def test_pickled_npz_is_not_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, __sksim_meta__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a valid sksim model file"):
        load_model(path)


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1, "1", None, True, 1.0])
def test_unknown_format_version_raises(problem, tmp_path, version):
    path = _saved(problem, tmp_path)
    meta = _meta(path)
    meta["format_version"] = version
    _rewrite(path, __sksim_meta__=np.asarray(json.dumps(meta)))
    with pytest.raises(ValueError, match="format version"):
        load_model(path)


@pytest.mark.parametrize("name", ["MLPRegressor", "os.system", "SIMRegressorX"])
def test_unknown_estimator_class_raises(problem, tmp_path, name):
    path = _saved(problem, tmp_path)
    meta = _meta(path)
    meta["estimator"] = name
    _rewrite(path, __sksim_meta__=np.asarray(json.dumps(meta)))
    with pytest.raises(ValueError, match="unknown estimator class"):
        load_model(path)


def test_bad_json_raises(problem, tmp_path):
    path = _saved(problem, tmp_path)
    _rewrite(path, __sksim_meta__=np.asarray("{not json"))
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(path)


@pytest.mark.parametrize(
    "change",
    ["missing-array", "bad-shape", "nan-intercept", "A-too-large", "bad-param",
     "bad-index"],
)
def test_inconsistent_content_raises(problem, tmp_path, change):
    path = _saved(problem, tmp_path)
    with np.load(path, allow_pickle=False) as archive:
        files = {k: archive[k] for k in archive.files}
    meta = _meta(path)
    if change == "missing-array":
        _rewrite(path, B_data=None)
    elif change == "bad-shape":
        _rewrite(path, intercept_=np.zeros(3))
    elif change == "nan-intercept":
        _rewrite(path, state_intercept_=np.full_like(files["state_intercept_"], np.nan))
    elif change == "A-too-large":
        n = meta["scalars"]["n_states_"]
        _rewrite(path, A_data=np.ones(n), A_indices=np.zeros(n, dtype=np.int64),
                 A_indptr=np.arange(n + 1, dtype=np.int64))
    elif change == "bad-param":
        meta["params"]["kappa"] = 2.0
        _rewrite(path, __sksim_meta__=np.asarray(json.dumps(meta)))
    elif change == "bad-index":
        n = meta["scalars"]["n_states_"]
        _rewrite(path, A_data=np.full(n, 0.1), A_indices=np.full(n, 10**6, dtype=np.int64),
                 A_indptr=np.arange(n + 1, dtype=np.int64))
    with pytest.raises(ValueError, match="not a valid sksim model file"):
        load_model(path)
