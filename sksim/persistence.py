"""Saving and loading fitted SIM estimators without pickle.

``pickle`` (and ``joblib``) execute code while loading, so a pickled model
received from someone else can run anything. :func:`save_model` writes a
fitted :class:`~sksim.SIMRegressor` or :class:`~sksim.SIMClassifier` to a
plain ``.npz`` archive that :func:`load_model` reads with
``allow_pickle=False``: numeric and unicode arrays only, plus one JSON string
holding the format version, the estimator class name (only ``SIMRegressor``
and ``SIMClassifier`` are accepted, nothing is imported by name) and the
estimator's parameters.

What is saved is the fitted SIM model itself, which is all ``predict``,
``decision_function``, ``predict_proba`` and ``equilibrium`` need: ``A_``,
``B_``, ``C_``, ``D_`` (CSR data/indices/indptr/shape; for a weight-shared
model its kernels and structure instead), both intercepts, the per-row
certificates and row-bound multipliers, ``n_iter_``, ``lipschitz_bound_``,
``state_scales_``, ``classes_``, ``n_features_in_`` and ``feature_names_in_``. The teacher
(``baseline`` / ``baseline_``, e.g. an MLP or a ``TorchBaseline``) is **not**
saved: only its type name is recorded, and the loaded estimator has
``baseline=None`` and ``baseline_=None``. Refitting a loaded estimator
therefore trains the default embedded teacher unless ``states`` are given.
A ``random_state`` that is not an int or None is saved as None.
"""

import json
import math
import zipfile
import zlib

import numpy as np
import scipy.sparse as sp

from ._version import __version__
from .blocks import Link, Structure, check_structure, link_width
from .estimators import SIMClassifier, SIMRegressor, _row_infinity_norm
from .weight_sharing import SharedModel, unrolled_norms

FORMAT_NAME = "sksim-model"
FORMAT_VERSION = 2
# Version 1 files lack the row-bound multipliers; they are read when those are
# known to be zero (no row_bound).
_READABLE_VERSIONS = (1, 2)
_ADDED_IN_2 = ("state_row_bound_multipliers_", "output_row_bound_multipliers_")

_CLASSES = {"SIMRegressor": SIMRegressor, "SIMClassifier": SIMClassifier}
_META_KEY = "__sksim_meta__"
_MATRICES = ("A_", "B_", "C_", "D_")
_FLOAT_VECTORS = (
    "state_intercept_",
    "intercept_",
    "state_duality_gaps_",
    "state_objectives_",
    "state_multipliers_",
    "output_duality_gaps_",
    "output_objectives_",
    "state_row_bound_multipliers_",
    "output_row_bound_multipliers_",
)
_SCALARS = ("n_iter_", "n_states_", "n_features_in_", "lipschitz_bound_")
_PRIVATE = ("_y_ndim", "_n_targets")  # SIMRegressor: output shape, target count


def _json_param(name, value):
    """A JSON-safe copy of one constructor parameter (baseline excluded)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if name == "state_blocks":  # a sequence of block sizes
        return [int(size) for size in np.asarray(value).ravel()]
    if name == "random_state":
        return None  # a RandomState/Generator instance: not reproducible from JSON
    raise ValueError(
        f"parameter {name}={value!r} of type {type(value).__name__} cannot be "
        "saved without pickle."
    )


def _label_array(values, name):
    """``(array, kind)`` for labels/names: numeric arrays as is, strings as unicode."""
    values = np.asarray(values)
    if values.dtype.kind in "biuf":
        return values, "numeric"
    if values.dtype.kind == "U":
        return values, "unicode"
    if values.dtype.kind == "O" and all(type(v) is str for v in values.ravel()):
        return values.astype(str), "object_str"
    kinds = sorted({type(v).__name__ for v in values.ravel()})
    raise ValueError(
        f"{name} has dtype {values.dtype} holding {', '.join(kinds)}; only numeric "
        "or string labels can be saved without pickle. Encode the labels as "
        "integers or strings before fitting."
    )


def save_model(estimator, path):
    """Save a fitted SIMRegressor/SIMClassifier to ``path`` without pickle.

    Parameters
    ----------
    estimator : SIMRegressor or SIMClassifier
        A fitted estimator. Its teacher (``baseline``/``baseline_``) is not
        saved, only the teacher's type name (see :mod:`sksim.persistence`).
    path : str, path-like or binary file object
        Where to write the ``.npz`` archive (written exactly at ``path``; no
        suffix is appended).

    Raises
    ------
    ValueError
        If the estimator is not a SIM estimator, is not fitted, or holds labels
        or parameters that cannot be stored without pickle.
    """
    from sklearn.utils.validation import check_is_fitted

    cls_name = type(estimator).__name__
    if _CLASSES.get(cls_name) is not type(estimator):
        raise ValueError(
            f"save_model saves SIMRegressor or SIMClassifier; got {cls_name}."
        )
    check_is_fitted(estimator)
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        if key == "baseline":
            continue
        params[key] = _json_param(key, value)
    baseline = estimator.get_params(deep=False)["baseline"]
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "estimator": cls_name,
        "params": params,
        "baseline_type": None if baseline is None else type(baseline).__name__,
        "scalars": {},
        "private": {},
    }
    meta["sksim_version"] = __version__
    arrays = {}
    model = getattr(estimator, "_shared_model", None)
    if model is not None:  # weight-shared: the kernels, not the unrolled matrices
        meta["weight_shared"] = _structure_to_json(model.structure)
        for b, kernels in enumerate(model.kernels):
            for link, kernel in enumerate(kernels):
                arrays[f"kernel_{b}_{link}"] = np.asarray(kernel, dtype=np.float64)
            arrays[f"block_intercept_{b}"] = np.asarray(model.intercepts[b], np.float64)
        for link, kernel in enumerate(model.head_kernels):
            arrays[f"output_kernel_{link}"] = np.asarray(kernel, dtype=np.float64)
        arrays["block_scales_"] = np.asarray(estimator.block_scales_, dtype=np.float64)
        if estimator.block_row_bounds_ is not None:
            arrays["block_row_bounds_"] = np.asarray(estimator.block_row_bounds_,
                                                     dtype=np.float64)
    for name in _MATRICES if model is None else ():
        matrix = sp.csr_array(getattr(estimator, name))
        arrays[f"{name}data"] = np.asarray(matrix.data, dtype=np.float64)
        arrays[f"{name}indices"] = np.asarray(matrix.indices, dtype=np.int64)
        arrays[f"{name}indptr"] = np.asarray(matrix.indptr, dtype=np.int64)
        arrays[f"{name}shape"] = np.asarray(matrix.shape, dtype=np.int64)
    for name in _FLOAT_VECTORS:
        arrays[name] = np.asarray(getattr(estimator, name), dtype=np.float64)
    for name in _SCALARS:
        value = getattr(estimator, name)
        meta["scalars"][name] = value.item() if isinstance(value, np.generic) else value
    for name in _PRIVATE:
        if hasattr(estimator, name):
            meta["private"][name] = int(getattr(estimator, name))
    scales = getattr(estimator, "state_scales_", None)
    meta["has_state_scales"] = scales is not None
    if scales is not None:
        arrays["state_scales_"] = np.asarray(scales, dtype=np.float64)
    if hasattr(estimator, "classes_"):
        arrays["classes_"], meta["classes_kind"] = _label_array(
            estimator.classes_, "classes_"
        )
    if hasattr(estimator, "feature_names_in_"):
        arrays["feature_names_in_"], meta["feature_names_kind"] = _label_array(
            estimator.feature_names_in_, "feature_names_in_"
        )
    arrays[_META_KEY] = np.asarray(json.dumps(meta, allow_nan=True))
    if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__"):
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    else:
        np.savez_compressed(path, **arrays)


def _corrupt(path, why):
    return ValueError(f"{path!r} is not a valid sksim model file: {why}")


def load_model(path):
    """Load an estimator written by :func:`save_model` (no pickle, no imports).

    Parameters
    ----------
    path : str, path-like or binary file object

    Returns
    -------
    estimator : SIMRegressor or SIMClassifier
        Fitted, with ``baseline=None`` and ``baseline_=None``; its predictions
        are bitwise identical to those of the saved estimator.

    Raises
    ------
    ValueError
        On a corrupted or truncated file, a foreign ``.npz``, an unknown format
        version or estimator class, or inconsistent content (shapes, non-finite
        values, ``||A||_inf > kappa``).
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            files = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
            zipfile.LargeZipFile, NotImplementedError, zlib.error) as exc:
        raise _corrupt(path, f"it cannot be read as an .npz archive ({exc})") from exc
    if not isinstance(files, dict) or _META_KEY not in files:
        raise _corrupt(path, "it has no sksim metadata (a foreign .npz file?)")
    try:
        meta = json.loads(str(files[_META_KEY][()]))
    except (ValueError, TypeError, IndexError) as exc:
        raise _corrupt(path, f"its metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise _corrupt(path, "its metadata does not describe an sksim model")
    version = meta.get("format_version")
    if type(version) is not int or version not in _READABLE_VERSIONS:
        raise ValueError(
            f"{path!r} has sksim model format version {version!r}; this sksim "
            f"reads versions {', '.join(map(str, _READABLE_VERSIONS))}."
        )
    cls_name = meta.get("estimator")
    if not isinstance(cls_name, str) or cls_name not in _CLASSES:
        raise ValueError(
            f"{path!r} holds an unknown estimator class {cls_name!r}; only "
            f"{sorted(_CLASSES)} can be loaded."
        )
    try:
        return _rebuild(_CLASSES[cls_name], meta, files)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _corrupt(path, f"its content is inconsistent ({type(exc).__name__}: "
                             f"{exc})") from exc


def _float_array(files, name, length):
    array = files[name]
    if array.dtype != np.float64 or array.shape != (length,):
        raise ValueError(f"{name} has dtype {array.dtype} and shape {array.shape}; "
                         f"expected float64 of shape ({length},)")
    return array


def _rebuild(cls, meta, files):
    params = dict(meta["params"])
    estimator = cls(baseline=None, **params)
    estimator._validate_params()
    scalars = meta["scalars"]
    n_states = scalars["n_states_"]
    n_features = scalars["n_features_in_"]
    if not (isinstance(n_states, int) and isinstance(n_features, int)
            and n_states >= 1 and n_features >= 1):
        raise ValueError("n_states_ and n_features_in_ must be positive ints")
    if "weight_shared" in meta:
        model = _rebuild_weight_shared(estimator, meta, files, n_states, n_features)
        n_outputs = model.structure.n_outputs
        n_rows = sum(shape[0] for shape in model.structure.block_shapes)
    else:
        model = None
        n_outputs = _rebuild_matrices(estimator, files, n_states, n_features)
        n_rows = n_states
    lengths = {"state_intercept_": n_states, "intercept_": n_outputs,
               "state_duality_gaps_": n_rows, "state_objectives_": n_rows,
               "state_multipliers_": n_rows, "output_duality_gaps_": n_outputs,
               "output_objectives_": n_outputs,
               "state_row_bound_multipliers_": n_rows,
               "output_row_bound_multipliers_": n_outputs}
    for name in _FLOAT_VECTORS:
        if meta["format_version"] == 1 and name in _ADDED_IN_2:
            if estimator.row_bound is not None:
                raise ValueError(
                    "a version 1 file of a model fitted with row_bound lacks its "
                    f"{name}; refit and save it with this sksim")
            setattr(estimator, name, np.zeros(lengths[name]))
            continue
        setattr(estimator, name, _float_array(files, name, lengths[name]))
    for name in ("state_intercept_", "intercept_"):
        if not np.all(np.isfinite(getattr(estimator, name))):
            raise ValueError(f"{name} holds non-finite values")
    n_iter = scalars["n_iter_"]
    bound = scalars["lipschitz_bound_"]
    if not (isinstance(n_iter, int) and n_iter >= 1):
        raise ValueError("n_iter_ must be a positive int")
    if not (isinstance(bound, float) and not math.isnan(bound)):
        raise ValueError("lipschitz_bound_ must be a float")
    estimator.n_iter_ = n_iter
    estimator.lipschitz_bound_ = bound
    estimator.n_states_ = n_states
    estimator.n_features_in_ = n_features
    estimator.state_scales_ = (
        _float_array(files, "state_scales_", n_states)
        if meta["has_state_scales"] else None
    )
    estimator.baseline_ = None
    estimator._shared_model = (None if model is None else
                               model._replace(head_intercept=estimator.intercept_))
    for name, value in meta["private"].items():
        if name not in _PRIVATE or not isinstance(value, int):
            raise ValueError(f"unexpected private attribute {name!r}")
        setattr(estimator, name, value)
    if cls is SIMRegressor:
        if meta["private"].get("_y_ndim") not in (1, 2):
            raise ValueError("_y_ndim must be 1 or 2")
        if meta["private"]["_y_ndim"] == 1 and n_outputs != 1:
            raise ValueError("a 1-D target needs exactly one output row")
    if "feature_names_in_" in files:
        names = files["feature_names_in_"]
        if names.shape != (n_features,):
            raise ValueError("feature_names_in_ does not match n_features_in_")
        kind = meta.get("feature_names_kind")
        estimator.feature_names_in_ = names.astype(object) if kind == "object_str" else names
    if cls is SIMClassifier:
        classes = files["classes_"]
        if classes.ndim != 1 or classes.shape[0] < 2:
            raise ValueError("classes_ must hold at least two labels")
        if meta.get("classes_kind") == "object_str":
            classes = classes.astype(object)
        widths = (1, 2) if classes.shape[0] == 2 else (classes.shape[0],)
        if n_outputs not in widths:
            raise ValueError(f"{n_outputs} output rows do not match "
                             f"{classes.shape[0]} classes")
        estimator.classes_ = classes
    return estimator


def _rebuild_matrices(estimator, files, n_states, n_features):
    """Set A_, B_, C_, D_ of a flat model; returns n_outputs."""
    matrices = {}
    for name in _MATRICES:
        data = files[f"{name}data"]
        indices = files[f"{name}indices"]
        indptr = files[f"{name}indptr"]
        shape = tuple(int(v) for v in files[f"{name}shape"])
        if data.dtype != np.float64 or indices.dtype.kind != "i" or indptr.dtype.kind != "i":
            raise ValueError(f"{name} has wrong dtypes")
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{name} holds non-finite values")
        matrix = sp.csr_array((data, indices, indptr), shape=shape)
        matrix.check_format(full_check=True)
        matrices[name] = matrix
    n_outputs = matrices["C_"].shape[0]
    expected = {"A_": (n_states, n_states), "B_": (n_states, n_features),
                "C_": (n_outputs, n_states), "D_": (n_outputs, n_features)}
    for name, shape in expected.items():
        if matrices[name].shape != shape:
            raise ValueError(f"{name} has shape {matrices[name].shape}; expected {shape}")
    if _row_infinity_norm(matrices["A_"]) > estimator.kappa:
        raise ValueError("||A||_inf exceeds kappa: the model is not well posed")
    for name, matrix in matrices.items():
        setattr(estimator, name, matrix)
    return n_outputs


def _structure_to_json(structure):
    return {"input_shape": list(structure.input_shape),
            "block_shapes": [list(shape) for shape in structure.block_shapes],
            "links": [[list(link) for link in links] for links in structure.links],
            "head": [list(link) for link in structure.head],
            "n_outputs": structure.n_outputs}


def _link_from_json(values):
    source, kind, size, stride, padding = values
    if not (all(type(v) is int for v in (source, size, stride, padding))
            and isinstance(kind, str)):
        raise ValueError(f"bad link {values!r}")
    return Link(source, kind, size, stride, padding)


def _rebuild_weight_shared(estimator, meta, files, n_states, n_features):
    """Set the kernels of a weight-shared model; returns its SharedModel, whose
    head intercept is filled in once ``intercept_`` is read."""
    spec = meta["weight_shared"]
    shapes = [tuple(int(v) for v in shape) for shape in spec["block_shapes"]]
    structure = Structure(tuple(int(v) for v in spec["input_shape"]), tuple(shapes),
                          tuple(tuple(_link_from_json(v) for v in links)
                                for links in spec["links"]),
                          tuple(_link_from_json(v) for v in spec["head"]),
                          int(spec["n_outputs"]))
    check_structure(structure)
    if structure.n_states() != n_states or np.prod(structure.input_shape) != n_features:
        raise ValueError("the structure does not match n_states_ / n_features_in_")

    def kernel(name, n_out, link):
        array = files[name]
        shape = (n_out, link_width(structure, link))
        if array.dtype != np.float64 or array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}; expected {shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} holds non-finite values")
        return array

    kernels = [[kernel(f"kernel_{b}_{i}", shape[0], link) for i, link in enumerate(links)]
               for b, (shape, links) in enumerate(zip(shapes, structure.links))]
    intercepts = [_float_array(files, f"block_intercept_{b}", shape[0])
                  for b, shape in enumerate(shapes)]
    n_outputs = structure.n_outputs
    head = [kernel(f"output_kernel_{i}", n_outputs, link)
            for i, link in enumerate(structure.head)]
    model = SharedModel(structure, kernels, intercepts, head, np.zeros(n_outputs))
    if unrolled_norms(model)[0] > estimator.kappa:
        raise ValueError("||A||_inf exceeds kappa: the model is not well posed")
    estimator.structure_ = structure
    estimator.kernels_ = kernels
    estimator.block_intercepts_ = intercepts
    estimator.output_kernels_ = head
    estimator.block_scales_ = _float_array(files, "block_scales_", len(shapes))
    estimator.block_row_bounds_ = (
        None if estimator.row_bound is None
        else _float_array(files, "block_row_bounds_", len(shapes) + 1))
    return model
