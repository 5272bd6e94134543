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
``decision_function``, ``predict_proba`` and ``equilibrium`` need: every
fitted attribute of the registry :data:`sksim._attributes.FITTED_ATTRIBUTES`
(``A_``..``D_`` as CSR data/indices/indptr/shape, or for a weight-shared
model its kernels and structure instead; the intercepts, the per-row
certificates, ``state_scales_``, ``classes_``, ...) but the properties,
which are recomputed. The teacher
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

from ._attributes import attributes_of_fit
from ._version import __version__
from .blocks import Activation, Link, Pool, Structure, check_structure, link_width
from .estimators import SIMClassifier, SIMRegressor
from .inspection import infinity_norm
from .weight_sharing import SharedModel, unrolled_norms

FORMAT_NAME = "sksim-model"
FORMAT_VERSION = 2
# Version 1 files lack the row-bound multipliers; they are read when those are
# known to be zero (no row_bound).
_READABLE_VERSIONS = (1, 2)
_ADDED_IN_2 = ("state_row_bound_multipliers_", "output_row_bound_multipliers_")

_CLASSES = {"SIMRegressor": SIMRegressor, "SIMClassifier": SIMClassifier}
_META_KEY = "__sksim_meta__"
# The metadata key of each label array's kind, as version 2 files name it.
_LABEL_KIND_KEYS = {"classes_": "classes_kind", "feature_names_in_": "feature_names_kind"}


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
    for attribute in _attributes_of(estimator):
        _SAVERS[attribute.kind](estimator, attribute.name, arrays, meta)
    # read by sksim versions whose load did not look for the array itself
    meta["has_state_scales"] = "state_scales_" in arrays
    arrays[_META_KEY] = np.asarray(json.dumps(meta, allow_nan=True))
    if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__"):
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    else:
        np.savez_compressed(path, **arrays)


def _attributes_of(estimator):
    """The registry's attributes of this fitted estimator."""
    return attributes_of_fit(classifier=isinstance(estimator, SIMClassifier),
                             weight_shared=estimator._is_weight_shared(),
                             named_features=hasattr(estimator, "feature_names_in_"))


def _save_matrix(estimator, name, arrays, meta):
    if estimator._is_weight_shared():
        return  # unrolled from the kernels on access; the kernels are saved
    matrix = sp.csr_array(getattr(estimator, name))
    arrays[f"{name}data"] = np.asarray(matrix.data, dtype=np.float64)
    arrays[f"{name}indices"] = np.asarray(matrix.indices, dtype=np.int64)
    arrays[f"{name}indptr"] = np.asarray(matrix.indptr, dtype=np.int64)
    arrays[f"{name}shape"] = np.asarray(matrix.shape, dtype=np.int64)


def _save_vector(estimator, name, arrays, meta):
    value = getattr(estimator, name)
    if value is not None:  # an optional vector that is None is left out
        arrays[name] = np.asarray(value, dtype=np.float64)


def _save_scalar(estimator, name, arrays, meta):
    value = getattr(estimator, name)
    meta["scalars"][name] = value.item() if isinstance(value, np.generic) else value


def _save_private(estimator, name, arrays, meta):
    meta["private"][name] = int(getattr(estimator, name))


def _save_labels(estimator, name, arrays, meta):
    arrays[name], meta[_LABEL_KIND_KEYS[name]] = _label_array(getattr(estimator, name),
                                                              name)


def _save_weight_shared(estimator, name, arrays, meta):
    """One part of the weight-shared model, under the file's own keys."""
    value = getattr(estimator, name)
    if name == "structure_":
        meta["weight_shared"] = _structure_to_json(value)
    elif name == "kernels_":
        for b, kernels in enumerate(value):
            for link, kernel in enumerate(kernels):
                arrays[f"kernel_{b}_{link}"] = np.asarray(kernel, dtype=np.float64)
    elif name == "block_intercepts_":
        for b, intercept in enumerate(value):
            arrays[f"block_intercept_{b}"] = np.asarray(intercept, dtype=np.float64)
    elif name == "output_kernels_":
        for link, kernel in enumerate(value):
            arrays[f"output_kernel_{link}"] = np.asarray(kernel, dtype=np.float64)
    else:  # pragma: no cover - a new part needs its own keys here
        raise ValueError(f"no file keys for the weight-shared attribute {name}")


def _not_saved(estimator, name, arrays, meta):
    """The teacher (documented as not saved) and properties (computed)."""


_SAVERS = {"matrix": _save_matrix, "vector": _save_vector,
           "optional vector": _save_vector, "count": _save_scalar,
           "float": _save_scalar, "labels": _save_labels,
           "private count": _save_private, "weight-shared model": _save_weight_shared,
           "teacher": _not_saved, "property": _not_saved}


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
    attributes = attributes_of_fit(classifier=cls is SIMClassifier,
                                   weight_shared="weight_shared" in meta,
                                   named_features="feature_names_in_" in files)
    kinds = {}
    for attribute in attributes:
        kinds.setdefault(attribute.kind, []).append(attribute)
    for attribute in kinds["count"] + kinds["float"]:
        setattr(estimator, attribute.name, _scalar(meta["scalars"], attribute))
    n_states, n_features = estimator.n_states_, estimator.n_features_in_
    if "weight_shared" in meta:
        model = _rebuild_weight_shared(estimator, meta, files, n_states, n_features)
        structure = model.structure
        n_outputs = structure.n_outputs
        n_rows = sum(shape[0] for shape in structure.block_shapes)
        n_blocks = len(structure.block_shapes)
    else:
        model = None
        n_outputs = _rebuild_matrices(estimator, files, kinds["matrix"], n_states,
                                      n_features)
        n_rows, n_blocks = n_states, None
    dimensions = {"n_states": n_states, "n_features": n_features, "n_outputs": n_outputs,
                  "n_rows": n_rows, "n_blocks": n_blocks,
                  "n_blocks + 1": None if n_blocks is None else n_blocks + 1}
    for attribute in kinds["vector"] + kinds["optional vector"]:
        length = dimensions[attribute.shape[0]]
        setattr(estimator, attribute.name,
                _vector(files, meta, attribute, length, estimator.row_bound))
    for name in ("state_intercept_", "intercept_"):
        if not np.all(np.isfinite(getattr(estimator, name))):
            raise ValueError(f"{name} holds non-finite values")
    for attribute in kinds["teacher"]:
        setattr(estimator, attribute.name, None)
    estimator._shared_model = (None if model is None else
                               model._replace(head_intercept=estimator.intercept_))
    private = {attribute.name for attribute in kinds.get("private count", [])}
    for name, value in meta["private"].items():
        if name not in private or not isinstance(value, int):
            raise ValueError(f"unexpected private attribute {name!r}")
        setattr(estimator, name, value)
    if cls is SIMRegressor:
        if meta["private"].get("_y_ndim") not in (1, 2):
            raise ValueError("_y_ndim must be 1 or 2")
        if meta["private"]["_y_ndim"] == 1 and n_outputs != 1:
            raise ValueError("a 1-D target needs exactly one output row")
    for attribute in kinds.get("labels", []):
        setattr(estimator, attribute.name, _labels(files, meta, attribute, dimensions))
    if cls is SIMClassifier:
        classes = estimator.classes_
        if classes.ndim != 1 or classes.shape[0] < 2:
            raise ValueError("classes_ must hold at least two labels")
        widths = (1, 2) if classes.shape[0] == 2 else (classes.shape[0],)
        if n_outputs not in widths:
            raise ValueError(f"{n_outputs} output rows do not match "
                             f"{classes.shape[0]} classes")
    return estimator


def _scalar(scalars, attribute):
    """A count (positive int) or a float (not NaN) from the metadata."""
    value = scalars[attribute.name]
    if attribute.kind == "count" and not (type(value) is int and value >= 1):
        raise ValueError(f"{attribute.name} must be a positive int")
    if attribute.kind == "float" and not (isinstance(value, float)
                                          and not math.isnan(value)):
        raise ValueError(f"{attribute.name} must be a float")
    return value


def _vector(files, meta, attribute, length, row_bound):
    """A float64 vector of ``length``; None for an optional vector the file
    leaves out. Version 1 files lack the row-bound multipliers, which are
    zero without row_bound."""
    name = attribute.name
    if meta["format_version"] == 1 and name in _ADDED_IN_2:
        if row_bound is not None:
            raise ValueError(
                "a version 1 file of a model fitted with row_bound lacks its "
                f"{name}; refit and save it with this sksim")
        return np.zeros(length)
    if attribute.kind == "optional vector" and name not in files:
        return None
    return _float_array(files, name, length)


def _labels(files, meta, attribute, dimensions):
    """Labels or feature names: numeric or unicode arrays, object arrays of
    str where they were saved as such."""
    values = files[attribute.name]
    if attribute.shape and values.shape != (dimensions[attribute.shape[0]],):
        raise ValueError(f"{attribute.name} has shape {values.shape}; expected "
                         f"({dimensions[attribute.shape[0]]},)")
    if meta.get(_LABEL_KIND_KEYS[attribute.name]) == "object_str":
        values = values.astype(object)
    return values


def _rebuild_matrices(estimator, files, attributes, n_states, n_features):
    """Set the matrices (A_, B_, C_, D_) of a flat model; returns n_outputs
    (the rows of C_)."""
    matrices = {attribute.name: _csr_matrix(files, attribute.name)
                for attribute in attributes}
    dimensions = {"n_states": n_states, "n_features": n_features,
                  "n_outputs": matrices["C_"].shape[0]}
    for attribute in attributes:
        shape = tuple(dimensions[name] for name in attribute.shape)
        if matrices[attribute.name].shape != shape:
            raise ValueError(f"{attribute.name} has shape "
                             f"{matrices[attribute.name].shape}; expected {shape}")
    if infinity_norm(matrices["A_"]) > estimator.kappa:
        raise ValueError("||A||_inf exceeds kappa: the model is not well posed")
    for name, matrix in matrices.items():
        setattr(estimator, name, matrix)
    return dimensions["n_outputs"]


def _csr_matrix(files, name):
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
    return matrix


def _link_to_json(link):
    """``[source, kind, size, stride, padding]`` (the format of models saved
    before pooling stages), then the pools ``[[kind, size, stride, padding], ...]``
    when the link has any."""
    values = list(link[:5])
    return values + [[list(stage) for stage in link.pool]] if link.pool else values


def _structure_to_json(structure):
    spec = {"input_shape": list(structure.input_shape),
            "block_shapes": [list(shape) for shape in structure.block_shapes],
            "links": [[_link_to_json(link) for link in links] for links in structure.links],
            "head": [_link_to_json(link) for link in structure.head],
            "n_outputs": structure.n_outputs}
    if not structure.all_relu():
        # JSON has no infinity: an unbounded side is null
        spec["activations"] = [[a.slope, _finite_or_none(a.low), _finite_or_none(a.high)]
                               for a in structure.activations]
    return spec


def _finite_or_none(value):
    return float(value) if np.isfinite(value) else None


def _ints(values, what):
    if not all(type(v) is int for v in values):
        raise ValueError(f"bad {what} {values!r}")
    return tuple(values)


def _pool_from_json(values):
    kind, *geometry = values
    if not isinstance(kind, str) or len(geometry) != 3:
        raise ValueError(f"bad pooling stage {values!r}")
    return Pool(kind, *_ints(geometry, "pooling stage"))


def _link_from_json(values):
    if len(values) not in (5, 6) or not isinstance(values[1], str):
        raise ValueError(f"bad link {values!r}")
    source, size, stride, padding = _ints([values[0], *values[2:5]], "link")
    pools = tuple(_pool_from_json(v) for v in values[5]) if len(values) == 6 else ()
    return Link(source, values[1], size, stride, padding, pools)


def _activation_from_json(values):
    slope, low, high = values
    return Activation(float(slope), -np.inf if low is None else float(low),
                      np.inf if high is None else float(high))


def _rebuild_weight_shared(estimator, meta, files, n_states, n_features):
    """Set the kernels of a weight-shared model; returns its SharedModel, whose
    head intercept is filled in once ``intercept_`` is read."""
    spec = meta["weight_shared"]
    shapes = [tuple(int(v) for v in shape) for shape in spec["block_shapes"]]
    structure = Structure(tuple(int(v) for v in spec["input_shape"]), tuple(shapes),
                          tuple(tuple(_link_from_json(v) for v in links)
                                for links in spec["links"]),
                          tuple(_link_from_json(v) for v in spec["head"]),
                          int(spec["n_outputs"]),
                          tuple(_activation_from_json(v)
                                for v in spec.get("activations", ())))
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
    if ("block_row_bounds_" in files) != (estimator.row_bound is not None):
        raise ValueError("block_row_bounds_ must be saved exactly when row_bound is set")
    return model
