"""The record stage of a fit: the teacher trained (or checked, when it comes
fitted), its states recorded and scaled, its raw outputs as the output rows'
targets; or, for the weight-shared model, the teacher's maps.

``est`` is the estimator being fitted: its parameters, its checks of the
inputs and (for a classifier) of the teacher's output columns. What this
stage learns of the teacher it keeps on ``est``: ``baseline_``,
``state_scales_`` and the teacher's blocks.
"""

import warnings
from itertools import pairwise

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted

from ._teachers import record_mlp, record_states, record_torch
from . import perturbation as perturbed
from .model import ACTIVATIONS
from .streaming import ChunkRecipe, chunk_states

DEFAULT_HIDDEN_LAYERS = (64, 32)
DEFAULT_TEACHER_MAX_ITER = 500


def default_teacher(est):
    """The embedded teacher trained when ``baseline`` is None."""
    return est._teacher_class(
        hidden_layer_sizes=DEFAULT_HIDDEN_LAYERS, activation="relu",
        max_iter=DEFAULT_TEACHER_MAX_ITER, random_state=est.random_state,
    )


def fitted_teacher(est, X, y):
    """The teacher, trained on (X, y) unless it comes fitted (wrapped in a
    FrozenEstimator, or a TorchBaseline)."""
    baseline = est.baseline
    if baseline is None:
        teacher = default_teacher(est)
        teacher.fit(X, y)
        return teacher
    if isinstance(baseline, FrozenEstimator):
        try:
            check_is_fitted(baseline.estimator)
        except NotFittedError as exc:
            raise ValueError(
                "baseline is a FrozenEstimator around an unfitted estimator; "
                "fit it first or pass the unfitted MLP directly."
            ) from exc
        return baseline
    if hasattr(baseline, "record"):  # a torch adapter (TorchBaseline)
        return baseline
    if not isinstance(baseline, est._teacher_class):
        raise ValueError(  # noqa: TRY004 - the documented error for a bad parameter
            f"baseline must be None, a {est._teacher_class.__name__} "
            "(possibly wrapped in sklearn.frozen.FrozenEstimator) or a "
            f"TorchBaseline; got {type(baseline).__name__}."
        )
    teacher = clone(baseline)
    teacher.fit(X, y)
    return teacher


def record(est, teacher, X):
    """The fitted ``teacher``'s TeacherRecord on X (see :mod:`sksim._teachers`)."""
    if hasattr(teacher, "record"):
        # tracing the teacher costs a pass over X: only for the scales used
        kappa = est.kappa if est.state_scaling == "well_posed" else None
        return record_torch(teacher, X, kappa)
    return record_mlp(checked_mlp(est, teacher, X.shape[1]), X, est.kappa)


def checked_mlp(est, teacher, n_features):
    """The scikit-learn MLP of ``teacher``, checked against the model and X."""
    mlp = teacher.estimator if isinstance(teacher, FrozenEstimator) else teacher
    if not isinstance(mlp, est._teacher_class):
        raise ValueError(  # noqa: TRY004 - the documented error for a bad parameter
            f"baseline must wrap a {est._teacher_class.__name__}; got "
            f"{type(mlp).__name__}."
        )
    if mlp.activation != est.activation:
        raise ValueError(
            f"baseline uses activation={mlp.activation!r} but the SIM model "
            f"uses activation={est.activation!r}; they must match."
        )
    if mlp.coefs_[0].shape[0] != n_features:
        raise ValueError(
            f"baseline expects {mlp.coefs_[0].shape[0]} features, X has "
            f"{n_features}."
        )
    return mlp


def unit_rms_scales(blocks, rms):
    """Per-state scales of ``state_scaling="rms"`` from each teacher block's
    RMS; a block that never activates keeps its scale."""
    return np.repeat([1.0 / r if r > 0 else 1.0 for r in rms], blocks)


def scaled_states(est, teacher_record):
    """The recorded states scaled as ``state_scaling`` says, as float64
    (sets ``state_scales_`` and the teacher's blocks)."""
    est._teacher_blocks = teacher_record.blocks
    if teacher_record.chunk_teacher is None or est.state_scaling == "none":
        scales = None  # precomputed states are used as given
    elif est.state_scaling == "well_posed":
        scales = teacher_record.well_posed_scales
    else:
        post = ACTIVATIONS[est.activation](teacher_record.states)
        edges = np.cumsum([0] + list(teacher_record.blocks))
        rms = [np.sqrt(np.mean(post[:, a:b] ** 2)) for a, b in pairwise(edges)]
        scales = unit_rms_scales(teacher_record.blocks, rms)
    est.state_scales_ = scales
    states = teacher_record.states if scales is None else teacher_record.states * scales
    return np.asarray(states, dtype=np.float64)


def weight_shared_teacher(est, X, states):
    """The teacher's TeacherMaps when the weight-shared model is fitted
    (``weight_sharing=True``, or ``"auto"`` and a teacher that is not a
    plain chain of dense ReLU layers), else None (the flat model)."""
    traceable = states is None and hasattr(est.baseline, "trace")
    if est.weight_sharing is True and not traceable:
        raise ValueError(
            "weight_sharing=True needs a TorchBaseline teacher and no "
            "precomputed states (the blocks and their links are read off the "
            "teacher's layers).")
    if not traceable:
        return None
    try:
        maps = est.baseline.trace(X)
    except ValueError as exc:
        if est.weight_sharing is True or getattr(exc, "fatal", False):
            raise
        if est.weight_sharing is not False:
            warnings.warn(
                f"The teacher cannot be fitted with weight sharing ({exc}); the "
                "flat (unshared) SIM model is fitted instead. Set "
                "weight_sharing=False to silence this warning.", UserWarning)
        return None
    structure = maps.structure
    if est.weight_sharing is False:
        if not structure.all_relu():
            raise ValueError(
                "weight_sharing=False fits a flat ReLU model, but the teacher has "
                "other activations (LeakyReLU, ReLU6 or Hardtanh): the model would "
                "differ from the teacher; use weight_sharing='auto'.")
        return None
    chain = structure.all_relu() and all(
        len(links) == 1 and links[0].kind == "dense" and not links[0].pool
        for links in structure.links)
    return maps if (not chain or est.weight_sharing is True) else None


def record_teacher(est, X, targets, states, baseline_outputs, y_for_teacher):
    """Validate the fit inputs and record the teacher. Returns ``(states,
    targets, teacher_maps, designs)``: the (scaled) pre-activations of the
    flat model, the output-row targets and the ``(inputs, states)`` pairs
    the rows' designs are built from (:func:`sksim.perturbation.design_pairs`;
    ``[(X, states)]`` without a perturbation), or the teacher's maps when the
    weight-shared model is fitted (then ``states`` and ``designs`` are None)."""
    est._check_penalties()
    perturbation = est._perturbation
    perturbed.check_teacher(perturbation, states is None)
    n_samples = X.shape[0]
    if states is not None:
        states = est._check_sample_aligned(states, "states", n_samples)
    if baseline_outputs is not None:
        targets = est._check_sample_aligned(
            baseline_outputs, "baseline_outputs", n_samples,
            est._n_output_columns(baseline_outputs),
        )
    est._forget_model()
    # the output rows match the teacher's raw outputs when it ran here
    use_teacher = baseline_outputs is None and est.output_target == "baseline"
    teacher_maps = weight_shared_teacher(est, X, states)
    if teacher_maps is not None:
        if use_teacher:
            targets = batched_teacher_targets(est, X)
            est._check_teacher_targets(targets, y_for_teacher)
        return None, targets, teacher_maps, None
    if states is not None:
        teacher, teacher_record = None, record_states(states)
    else:
        teacher = fitted_teacher(est, X, y_for_teacher)
        teacher_record = record(est, teacher, X)
    est.baseline_ = teacher
    states = scaled_states(est, teacher_record)
    if not np.all(np.isfinite(states)):
        raise ValueError("baseline produced non-finite states.")
    if use_teacher and teacher_record.outputs is not None:
        targets = teacher_targets(est, teacher_record.outputs, n_samples)
        est._check_teacher_targets(targets, y_for_teacher)
    recipe = ChunkRecipe(teacher_record.chunk_teacher, est.state_scales_, None, None, None)
    designs = perturbed.design_pairs(
        perturbation, teacher_record.chunk_teacher, X, states, teacher_record.outputs,
        lambda X_perturbed: chunk_states(recipe, X_perturbed, None)[0])
    return states, targets, None, designs


def batched_teacher_targets(est, X):
    """A torch teacher's outputs on X as output-row targets, recorded batch
    by batch (its states are not kept)."""
    outputs = np.vstack([out for _, _, out in est.baseline.iter_batches(X)])
    return teacher_targets(est, outputs, X.shape[0])


def teacher_targets(est, outputs, n_samples):
    """The teacher's raw outputs as output-row targets, checked against y
    (a classifier's put in the order of ``classes_``)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    outputs = outputs.reshape(n_samples, -1)
    columns = est._teacher_columns(outputs)
    if not np.all(np.isfinite(outputs)):
        raise ValueError("baseline produced non-finite outputs.")
    return outputs if columns is None else columns(outputs)


def teacher_output_width(est, outputs):
    """The teacher's output count, checked against y as in the in-memory fit
    (one logit for two classes is allowed)."""
    return teacher_targets(est, outputs, len(outputs)).shape[1]


def streamed_recipe(est, source, states, baseline_outputs, encode, n_targets):
    """The ChunkRecipe of a streamed fit (sets ``baseline_``,
    ``state_scales_`` and the teacher's blocks) and the number of states."""
    use_teacher = baseline_outputs is None and est.output_target == "baseline"
    targets = "outputs" if baseline_outputs is not None else "y"
    est._forget_model()
    perturbation = est._perturbation
    perturbed.check_teacher(perturbation, states is None)
    if states is not None:
        est.baseline_, est.state_scales_, est._teacher_blocks = None, None, None
        return ChunkRecipe(None, None, targets, encode, n_targets), states.shape[1]
    teacher = est.baseline
    if not (hasattr(teacher, "record") or isinstance(teacher, FrozenEstimator)
            and isinstance(teacher.estimator, est._teacher_class)):
        raise ValueError(
            "An out-of-core fit (memmap or dask inputs, or batches) needs precomputed "
            "states, a fitted scikit-learn MLP wrapped in FrozenEstimator, or a "
            f"TorchBaseline as baseline; got {type(teacher).__name__} (an unfitted "
            "teacher would train on X in memory).")
    first = source.first_rows(2)
    # a teacher that comes fitted: checked, never trained here
    est.baseline_ = fitted_teacher(est, first, None)
    # the first rows give the teacher's widths; each chunk is recorded apart
    teacher_record = record(est, est.baseline_, first)
    est._teacher_blocks = teacher_record.blocks
    scales = teacher_record.well_posed_scales if est.state_scaling == "well_posed" else None
    est.state_scales_ = scales
    recipe = ChunkRecipe(teacher_record.chunk_teacher, scales,
                         "teacher" if use_teacher else targets, encode, n_targets,
                         perturbation=perturbation)
    if use_teacher:
        # the teacher's columns in the order of classes_; a classifier checks
        # the order on the state stage's pass (StreamedRows.state_problem)
        recipe = recipe._replace(
            n_targets=teacher_output_width(est, teacher_record.outputs),
            columns=est._teacher_columns(
                np.asarray(teacher_record.outputs).reshape(len(first), -1)))
    return recipe, sum(teacher_record.blocks)
