"""SIMRegressor and SIMClassifier: parameters, validation, fitted attributes.

A fit records the teacher (:mod:`sksim.recording`), reduces the data to Gram
problems, solves the rows and assembles the model record
(:mod:`sksim.pipeline`); the estimators set their fitted attributes from that
record, and predict, equilibrium and to_torch read the model record back
(:mod:`sksim.model`). No numerical kernels live here; they are in
:mod:`sksim.solvers`.
"""

from numbers import Integral, Real
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import softmax
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from . import _classes, pipeline, recording
from . import perturbation as perturbed
from . import model as fitted
from . import weight_sharing as shared
from ._arrays import forward_blocks, numba_threads
from ._attributes import FITTED_ATTRIBUTES, attributes_doc
from ._docs import estimator_doc, fit_doc
from .blocks import per_state, unroll
from .inspection import path_bound
from .model import ACTIVATIONS, FlatModel
from .solvers import announce_compilation
from .streaming import (
    LabelTargets,
    TeacherAgreement,
    ValueTargets,
    is_batch_iterable,
    is_dask_array,
)


# models pickled before the fit's stages left this module hold one of these
_FitLog = pipeline.FitLog


def _check_numeric(array, name):
    """Reject string/object arrays holding non-numbers with a message naming them.

    Only numpy arrays of dtype str/bytes/object are inspected (other inputs go
    to scikit-learn's validation unchanged); a TypeError raised by the
    conversion (e.g. a dict inside an object array) is left to scikit-learn.
    """
    if isinstance(array, np.ndarray) and array.dtype.kind in "OUS":
        try:
            np.asarray(array, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(
                f"{name} must hold numbers; it has dtype {array.dtype} and a value "
                f"that is not a number ({exc}). Encode categorical data first "
                "(e.g. sklearn.preprocessing.OneHotEncoder)."
            ) from exc


def _is_streamed(estimator, X, states, baseline_outputs):
    """True when fit reads its data chunk by chunk (see :mod:`sksim.streaming`):
    a dask input or X as an iterable of batches; memmap inputs when the states
    can be streamed too (given, or from a fitted MLP in FrozenEstimator or a
    TorchBaseline). A teacher that trains on X (the default) reads a memmap
    into memory as any array."""
    inputs = (X, states, baseline_outputs)
    if is_batch_iterable(X) or any(is_dask_array(a) for a in inputs):
        return True
    if not any(isinstance(a, np.memmap) for a in inputs):
        return False
    baseline = estimator.baseline
    return (states is not None or hasattr(baseline, "record")
            or isinstance(baseline, FrozenEstimator))


class _BaseSIM(BaseEstimator):
    """Shared fitting logic of the SIM estimators (see the subclasses)."""

    _parameter_constraints: ClassVar[dict] = {
        "baseline": "no_validation",
        "alpha": [Interval(Real, 0, None, closed="left")],
        "output_alpha": [None, Interval(Real, 0, None, closed="left")],
        "row_bound": [None, Interval(Real, 0, None, closed="neither")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "relax": [Interval(Real, 0, 1, closed="right")],
        "solver": [StrOptions({"auto", "cd", "homotopy"})],
        "kappa": [Interval(Real, 0, 1, closed="neither")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "fit_intercept": ["boolean"],
        "refit_outputs": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "equilibrium_tol": [Interval(Real, 0, None, closed="neither")],
        "equilibrium_max_iter": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [None, Integral],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "weight_sharing": ["boolean", StrOptions({"auto"})],
        "lateral_kernel": [None, Interval(Integral, 1, None, closed="left")],
        "skip_links": [Interval(Integral, 0, None, closed="left")],
        "positions_per_image": [None, Interval(Integral, 1, None, closed="left")],
        "block_alpha": [StrOptions({"positions", "relative", "absolute"})],
        "state_inputs": [StrOptions({"teacher", "model"})],
        "output_target": [StrOptions({"baseline", "y"})],
        "state_scaling": [StrOptions({"well_posed", "rms", "none"})],
        "structure": [StrOptions({"implicit", "feedforward"})],
        "state_blocks": [None, "array-like"],
        "penalty": [StrOptions({"l1", "channel"})],
        "adaptive_l1": [Interval(Real, 0, None, closed="left")],
        "perturbation": [None, StrOptions({"uniform", "fgsm", "pgd"})],
        "perturbation_eps": [None, Interval(Real, 0, None, closed="neither")],
        "perturbation_mix": [StrOptions({"both", "perturbed"})],
        "perturbation_range": [None, tuple, list],
    }

    def __init__(
        self,
        baseline=None,
        *,
        alpha=1e-3,
        output_alpha=None,
        l1_ratio=1.0,
        relax=0.01,
        solver="auto",
        kappa=0.95,
        row_bound=None,
        activation="relu",
        fit_intercept=True,
        refit_outputs=True,
        tol=1e-6,
        max_iter=20000,
        equilibrium_tol=1e-12,
        equilibrium_max_iter=1000,
        n_jobs=None,
        random_state=None,
        verbose=0,
        weight_sharing="auto",
        lateral_kernel=None,
        skip_links=0,
        positions_per_image=None,
        block_alpha="positions",
        state_inputs="teacher",
        output_target="baseline",
        structure="implicit",
        state_blocks=None,
        state_scaling="well_posed",
        penalty="l1",
        adaptive_l1=0.0,
        perturbation=None,
        perturbation_eps=None,
        perturbation_mix="both",
        perturbation_range=None,
    ):
        self.baseline = baseline
        self.alpha = alpha
        self.output_alpha = output_alpha
        self.l1_ratio = l1_ratio
        self.relax = relax
        self.solver = solver
        self.kappa = kappa
        self.row_bound = row_bound
        self.activation = activation
        self.fit_intercept = fit_intercept
        self.refit_outputs = refit_outputs
        self.tol = tol
        self.max_iter = max_iter
        self.equilibrium_tol = equilibrium_tol
        self.equilibrium_max_iter = equilibrium_max_iter
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.weight_sharing = weight_sharing
        self.lateral_kernel = lateral_kernel
        self.skip_links = skip_links
        self.positions_per_image = positions_per_image
        self.block_alpha = block_alpha
        self.state_inputs = state_inputs
        self.output_target = output_target
        self.state_scaling = state_scaling
        self.structure = structure
        self.state_blocks = state_blocks
        self.penalty = penalty
        self.adaptive_l1 = adaptive_l1
        self.perturbation = perturbation
        self.perturbation_eps = perturbation_eps
        self.perturbation_mix = perturbation_mix
        self.perturbation_range = perturbation_range

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, states=None, baseline_outputs=None):
        """Fit the implicit model (see the estimators' own ``fit``)."""
        announce_compilation()  # before the teacher trains: compiling comes after it
        # drawn once per fit: every pass over the data perturbs a row alike
        self._perturbation = perturbed.from_estimator(self)
        if _is_streamed(self, X, states, baseline_outputs):
            return self._fit_streamed(X, y, states, baseline_outputs)
        X, targets, y = self._validated_targets(X, y)
        return self._fit_sim(X, targets, states, baseline_outputs, y)

    _teacher_class = None  # each estimator's embedded teacher, and the MLPs it accepts

    def _fit_sim(self, X, targets, states, baseline_outputs, y_for_teacher):
        """The in-memory fit: record the teacher, then fit the weight-shared
        model or the flat one's stages. ``targets`` are the output-row
        targets from y."""
        log = self._fit_log = pipeline.FitLog(self)
        with log.stage("teacher (states and outputs)"):
            states, targets, teacher_maps, designs = recording.record_teacher(
                self, X, targets, states, baseline_outputs, y_for_teacher)
        if teacher_maps is not None:
            return self._set_fit(pipeline.fit_weight_shared(
                self, pipeline.SharedReducer(self, X, targets), teacher_maps))
        with numba_threads(self.n_jobs):
            return self._set_fit(pipeline.fit_flat(
                self, pipeline.InMemoryRows(self, X, states, targets, designs=designs),
                states.shape[1]))

    def _fit_streamed(self, X, y, states, baseline_outputs):
        """Fit from data reduced chunk by chunk (memmaps, dask arrays, batches
        of a DataLoader; see :func:`sksim.pipeline.fit_streamed`). No fitted
        attribute survives a failure."""
        self._fit_log = pipeline.FitLog(self)
        try:
            with numba_threads(self.n_jobs):
                return self._set_fit(pipeline.fit_streamed(self, X, y, states,
                                                           baseline_outputs))
        except BaseException:
            for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
                delattr(self, name)
            raise

    # --------------------------------------------------------------- validation
    def _check_sample_aligned(self, array, name, n_samples, n_columns=None):
        if sp.issparse(array):
            raise ValueError(f"{name} must be a dense array; got a sparse matrix.")
        if np.ndim(array) != 2:
            raise ValueError(
                f"{name} must be a 2-D array of shape (n_samples, n_columns); got "
                f"shape {np.shape(array)}."
            )
        if 0 in np.shape(array):
            raise ValueError(
                f"{name} is empty (shape {np.shape(array)}); it needs at least one "
                "row and one column."
            )
        _check_numeric(array, name)
        array = check_array(array, dtype=np.float64, input_name=name)
        if array.shape[0] != n_samples:
            raise ValueError(
                f"{name} has {array.shape[0]} rows but X has {n_samples} samples; "
                "they must be aligned."
            )
        if n_columns is not None and array.shape[1] != n_columns:
            raise ValueError(
                f"{name} has {array.shape[1]} columns; expected {n_columns}."
            )
        return array

    def _check_sample_count(self, n_samples):
        """One sample with an intercept centres the design to zero: every row
        would be its intercept alone, a constant model. Raise instead."""
        if n_samples < 2 and self.fit_intercept:
            raise ValueError(
                f"{type(self).__name__} with fit_intercept=True needs at least 2 samples; "
                f"got {n_samples} sample: the centred design would be zero and the model "
                "a constant. Pass more samples, or fit_intercept=False.")

    def _check_penalties(self):
        if self.row_bound is None:
            for name in ("alpha", "output_alpha"):
                if getattr(self, name) == 0:
                    raise ValueError(
                        f"{name}=0 needs row_bound: without a penalty or a bound "
                        "the rows are unpenalised least-squares problems (not "
                        "sparse, not unique on dead or duplicate columns, and "
                        f"with no optimality certificate). Set {name} > 0 or "
                        "set row_bound."
                    )

    @staticmethod
    def _check_streamed_arrays(X, y, states, baseline_outputs):
        """Shapes and dtypes of out-of-core inputs (their values are checked
        chunk by chunk as they are read); returns the number of features."""
        n_samples = X.shape[0] if len(X.shape) == 2 else None
        if n_samples is None:
            raise ValueError(f"X must be a 2-D array; got shape {X.shape}.")
        for name, array in (("X", X), ("states", states), ("baseline_outputs",
                                                            baseline_outputs)):
            if array is None:
                continue
            if len(array.shape) != 2 or array.shape[0] != n_samples:
                raise ValueError(
                    f"{name} must have shape (n_samples, n_columns) with the {n_samples} "
                    f"rows of X; got {tuple(array.shape)}.")
            if np.dtype(array.dtype).kind not in "fiu":
                raise ValueError(f"{name} must hold numbers; it has dtype {array.dtype}.")
        if y is None or np.shape(y)[0] != n_samples:
            raise ValueError(f"y must have the {n_samples} rows of X; got "
                             f"{None if y is None else np.shape(y)}.")
        return X.shape[1]

    def _forget_model(self):
        """A refit forgets the previous model: a flat refit of a weight-shared
        model must not keep its kernels, nor a weight-shared refit the
        unrolled matrices of the flat one. What the input validation set for
        this fit (``n_features_in_``, ``classes_``, ...) stays."""
        self._shared_model = None
        for attribute in FITTED_ATTRIBUTES:
            if attribute.clears_on_refit:
                self.__dict__.pop(attribute.name, None)

    def _teacher_columns(self, outputs):
        """Check the teacher's output count (``outputs``: 2-D, some samples'
        raw outputs) against y; returns the
        :class:`~sksim.streaming.TeacherColumns` that put them in the order
        of the output rows, or None to keep them as they are."""
        expected = self._n_output_columns(outputs)
        if outputs.shape[1] != expected:
            raise ValueError(
                f"The teacher has {outputs.shape[1]} outputs but y needs {expected} "
                "output columns; the output rows cannot match the teacher. Set "
                "output_target='y' to fit y instead.")
        return None

    def _check_teacher_targets(self, targets, y):
        """A classifier checks its teacher's targets against y (its class
        order); nothing to check for a regressor."""

    # ------------------------------------------------------ fitted attributes
    def _set_fit(self, fit):
        """The fitted attributes from a :class:`sksim.pipeline.Fit`."""
        if fitted.is_shared(fit.model):
            self._set_shared_model(fit)
        else:
            self._set_flat_model(fit.model)
        return self._set_certificates(fit.state_rows, fit.output_rows, fit.norms)

    def _set_flat_model(self, model):
        self.n_states_ = model.A.shape[0]
        self.A_, self.B_, self.state_intercept_ = model.A, model.B, model.state_intercept
        self.C_, self.D_, self.intercept_ = model.C, model.D, model.intercept

    def _set_shared_model(self, fit):
        model = self._shared_model = fit.model
        structure = model.structure
        self.n_states_ = structure.n_states()
        self.structure_ = structure
        self.kernels_ = model.kernels
        self.block_intercepts_ = model.intercepts
        self.output_kernels_ = model.head_kernels
        self.intercept_ = model.head_intercept
        self.block_scales_ = fit.block_scales
        self.block_row_bounds_ = fit.block_row_bounds
        self.state_scales_ = np.repeat(fit.block_scales, structure.block_sizes())
        self.state_intercept_ = np.concatenate([
            per_state(b, shape) for b, shape in zip(model.intercepts,
                                                    structure.block_shapes)])
        self.baseline_ = self.baseline

    def _set_certificates(self, state_rows, output_rows, norms):
        """Row certificates, warnings and the Lipschitz bound from the
        ``(||A||_inf, ||B||_inf, ||C||_inf, ||D||_inf)`` of the fitted model."""
        self.state_duality_gaps_ = state_rows.duality_gap
        self.state_objectives_ = state_rows.objective
        self.state_multipliers_ = state_rows.multiplier
        self.state_row_bound_multipliers_ = state_rows.row_multiplier
        self.output_row_bound_multipliers_ = output_rows.row_multiplier
        self.output_duality_gaps_ = output_rows.duality_gap
        self.output_objectives_ = output_rows.objective
        self.n_iter_ = int(max(1, state_rows.n_iter.max(initial=0),
                               output_rows.n_iter.max(initial=0)))
        for name, rows in (("state", state_rows), ("output", output_rows)):
            pipeline.warn_rows(self, name, rows)
        a_norm, b_norm, c_norm, d_norm = norms
        self.lipschitz_bound_ = c_norm * b_norm / (1.0 - a_norm) + d_norm
        kernels = ([k for block in self.kernels_ for k in block] + self.output_kernels_
                   if self._is_weight_shared() else
                   [getattr(self, name).data for name in ("A_", "B_", "C_", "D_")])
        if not all(np.all(np.isfinite(k)) for k in kernels):
            raise ValueError("fit produced a non-finite model; rescale X.")
        if self.verbose:
            print(pipeline.summary(self, state_rows, output_rows))
        return self

    # --------------------------------------------------------------- inference
    def _model(self):
        """The fitted model record (:mod:`sksim.model`)."""
        if self._is_weight_shared():
            return self._shared_model
        return FlatModel(self.A_, self.B_, self.state_intercept_, self.C_, self.D_,
                         self.intercept_)

    def equilibrium(self, X, *, return_residual=False):
        """Hidden states ``x*`` solving ``x = relu(A x + B u + b)`` for each row of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Model inputs ``U``.
        return_residual : bool, default=False
            Also return the residual certificate
            ``||x - relu(A x + B u + b)||_inf`` per sample; the distance to the
            exact equilibrium is at most ``residual / (1 - ||A||_inf)``.

        Returns
        -------
        states : ndarray of shape (n_samples, n_states)
        residual : ndarray of shape (n_samples,)
            Only when ``return_residual`` is True.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        with numba_threads(self.n_jobs):
            states, residual = fitted.equilibrium(self._model(), X,
                                                  pipeline.solve_options(self))
        return (states, residual) if return_residual else states

    def _raw_outputs(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if self._is_weight_shared():
            return fitted.raw_outputs(self._model(), X, pipeline.solve_options(self))
        with numba_threads(self.n_jobs):
            return fitted.raw_outputs(self._model(), X, pipeline.solve_options(self))

    def _is_weight_shared(self):
        return getattr(self, "_shared_model", None) is not None

    def to_torch(self, *, dtype=None, sparse=None, tol=None, max_iter=None, plain=False):
        """The fitted model as a torch ``nn.Module`` (needs torch).

        The module computes the equilibrium and the raw outputs (what
        ``decision_function`` / ``predict`` return before any reshaping) on
        batched tensors of any device it is moved to, the way ``predict``
        does: one pass of block products when ``A`` has no feedback (the
        ``"feedforward"`` structure), else sksim's Gauss-Seidel kernel for
        CPU tensors and Jacobi steps on other devices. Gradients with
        respect to the inputs flow through an iterative equilibrium by
        implicit differentiation (an adjoint fixed point), not by storing
        iterates; through a one-pass equilibrium by autograd.

        Parameters
        ----------
        dtype : torch.dtype, default=None
            Dtype of the weights; ``None`` means ``torch.float64``. The
            Jacobi and adjoint loops stop at ``tol`` or, when that is below
            the dtype's rounding floor (float32), once the residual has
            stopped decreasing for 20 iterations; the CPU Gauss-Seidel
            kernel works in float64.
        sparse : bool, default=None
            Store A, B, C, D as sparse COO tensors; ``None`` does so for each
            matrix with fewer than 5% of its entries nonzero (torch's sparse
            products are much slower than dense ones above that). A
            weight-shared model is exported as its blocks instead, never
            unrolled (a max-pooling one has no ``A_``): each link's pooling
            stages and ``conv2d`` / linear map holding its kernel, then each
            block's activation, differentiated by autograd; a block with a
            lateral link (``lateral_kernel``) iterates
            ``x_b <- phi(drive_b + K x_b)`` to ``tol`` and is differentiated
            implicitly. ``sparse`` does not apply to it.
        tol : float, default=None
            Residual tolerance of the module's fixed-point loops (relative
            to ``max(1, max|x|)``); ``None`` means ``equilibrium_tol``.
        max_iter : int, default=None
            Most sweeps or steps per loop; ``None`` means
            ``10 * equilibrium_max_iter``.
        plain : bool, default=False
            Export a model without feedback (``structure="feedforward"``, or
            a weight-shared model without ``lateral_kernel``) as a plain
            network instead: a ``torch.fx.GraphModule`` of ``torch.nn``
            layers (Conv2d, Linear, pools, activations) and additions in the
            model's topology, with dense kernels and without the channels no
            row reads, loadable and runnable with torch alone and exportable
            with ``torch.onnx.export`` (see :mod:`sksim.plain_export`).
            ``dtype`` defaults to ``torch.float32`` then; ``sparse``, ``tol``
            and ``max_iter`` do not apply; it has no ``equilibrium``.

        Returns
        -------
        module : torch.nn.Module
            ``module(u)`` has shape (batch, n_outputs);
            ``module.equilibrium(u)`` has shape (batch, n_states) (not for
            ``plain=True``). The module converts (``.to``, ``.float()``,
            ``.double()``), saves its buffers (``state_dict``) and pickles
            (``torch.save``) like any other.
        """
        check_is_fitted(self)
        from .torch_export import build_shared_torch_module, build_torch_module

        if plain:
            from .plain_export import build_plain_module

            return build_plain_module(self, dtype)
        if self._is_weight_shared():
            return build_shared_torch_module(self, dtype=dtype, tol=tol, max_iter=max_iter)
        return build_torch_module(self, dtype=dtype, sparse=sparse, tol=tol,
                                  max_iter=max_iter, forward_blocks=forward_blocks(self.A_))

    @property
    def n_nonzero_(self):
        """Number of nonzero fitted parameters, intercepts excluded: entries of
        A, B, C and D, or for a weight-shared model the nonzero kernel entries
        (each shared weight counted once, not its unrolled copies), which is
        what compares with the teacher's parameter count."""
        check_is_fitted(self)
        if self._is_weight_shared():
            return shared.count_parameters(self._shared_model)
        return fitted.count_nonzero(self._model())

    @property
    def lipschitz_path_bound_(self):
        """Tighter certified sensitivity: ``|| |C| (I - |A|)^-1 |B| + |D| ||_inf``.

        Almost everywhere the Jacobian of the outputs is
        ``C (I - S A)^-1 S B + D`` with ``S`` the diagonal of ReLU slopes in
        [0, 1], and entrywise ``|(I - S A)^-1 S| <= (I - |A|)^-1`` (Neumann
        series, ``||A||_inf < 1``), so this bounds the l_inf Lipschitz
        constant of the model; it is never larger than ``lipschitz_bound_``
        and often several times smaller. Computed on access with one dense
        solve of size n_states.
        """
        check_is_fitted(self)
        if self._is_weight_shared():
            return shared.path_bound(self._shared_model)
        return path_bound(self.A_, self.B_, self.C_, self.D_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


def _unrolled_matrix(name, doc):
    """``A_``..``D_``: set by the flat fit; for a weight-shared model the
    unrolled operator, built from the kernels on first access and kept."""

    def getter(self):
        if name in self.__dict__:
            return self.__dict__[name]
        if not self._is_weight_shared():
            raise AttributeError(name)
        model = self._shared_model
        for key, matrix in zip(("A_", "B_", "C_", "D_"),
                               unroll(model.structure, model.kernels, model.head_kernels)):
            self.__dict__[key] = matrix
        return self.__dict__[name]

    def setter(self, value):
        self.__dict__[name] = value

    return property(getter, setter, doc=doc)


for _matrix in FITTED_ATTRIBUTES:
    if _matrix.kind == "matrix":
        setattr(_BaseSIM, _matrix.name, _unrolled_matrix(
            _matrix.name, f"{_matrix.doc} A {_matrix.type}."))


class SIMRegressor(RegressorMixin, _BaseSIM):
    __doc__ = estimator_doc(
        "State-driven implicit model for regression.\n",
        attributes_doc(classifier=False),
        """
    >>> from sklearn.datasets import load_diabetes
    >>> from sksim import SIMRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = SIMRegressor(random_state=0).fit(X, y)
    >>> model.A_.shape[0] == model.n_states_
    True
""")

    _teacher_class = MLPRegressor

    def _n_output_columns(self, baseline_outputs):
        return self._n_targets

    def fit(self, X, y=None, states=None, baseline_outputs=None):
        return super().fit(X, y, states, baseline_outputs)

    fit.__doc__ = fit_doc(
        """y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.""",
        """baseline_outputs : array-like of shape (n_samples, n_outputs), default=None
            The baseline's outputs; when given, the output rows fit them
            instead of ``y`` (without them, the teacher's own outputs when it
            runs here, see ``output_target``).""",
        "SIMRegressor")

    def _streamed_targets(self, y):
        """``(encode, n_targets)`` of a streamed fit's y (values)."""
        y = np.asarray(y, dtype=np.float64)
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D; got shape {y.shape}.")
        self._y_ndim = y.ndim
        self._n_targets = 1 if y.ndim == 1 else y.shape[1]
        return ValueTargets(), self._n_targets

    def _validated_targets(self, X, y):
        """Validated ``X``, the output-row targets and ``y`` for the teacher."""
        _check_numeric(X, "X")
        _check_numeric(y, "y")
        X, y = validate_data(
            self, X, y, multi_output=True, y_numeric=True,
            dtype=[np.float64, np.float32],
        )
        self._check_sample_count(X.shape[0])
        y = np.asarray(y, dtype=np.float64)
        self._y_ndim = y.ndim
        targets = y.reshape(-1, 1) if y.ndim == 1 else y
        self._n_targets = targets.shape[1]
        return X, targets, y

    def predict(self, X):
        """Predict ``C x* + D u + b_y`` at the equilibrium ``x*``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        return self._predictions(self._raw_outputs(X))

    def _predictions(self, outputs):
        return outputs.ravel() if self._y_ndim == 1 else outputs

    def _score_outputs(self, outputs, y):
        """``score`` (R^2, as :class:`~sklearn.base.RegressorMixin`'s) from
        the raw outputs at the samples of y."""
        return r2_score(y, self._predictions(outputs))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class SIMClassifier(ClassifierMixin, _BaseSIM):
    __doc__ = estimator_doc(
        """State-driven implicit model for classification.

    The output rows fit the teacher's logits (one column for a binary
    problem, or one per class) when the teacher runs in ``fit`` (the default
    ``output_target="baseline"``) or when ``baseline_outputs`` are given;
    otherwise (precomputed ``states``, or ``output_target="y"``) indicator
    targets (one column per class, 1 for the sample's class and 0
    elsewhere). ``decision_function`` returns those outputs (their difference
    for two indicator columns), and ``predict_proba`` their softmax (sigmoid
    for a single logit): for a model that fits the teacher's logits these are
    the teacher's probabilities up to the fit's error (scikit-learn's
    ``MLPClassifier.predict_proba`` is the same map of its logits); with
    indicator targets they are normalised scores, not calibrated
    probabilities.

    The teacher's output column ``j`` is the score of ``classes_[j]``, the
    ``j``-th label of y in sorted order, unless the teacher names the class
    of each of its columns: ``TorchBaseline(module, classes=[...])``, or a
    fitted scikit-learn MLP's own ``classes_``. Then ``classes_`` is those
    labels, sorted (also any absent from y), every label of y must be one
    of them, and the teacher's columns are permuted to that order. A
    TorchBaseline without ``classes`` whose outputs are the targets has its
    order checked on the training data (on the outputs the fit records
    anyway): ``fit`` raises a ValueError when the teacher clearly classifies
    y under some matching of its columns to the classes (chance-corrected
    agreement of at least 0.5) but its argmax agrees with y on fewer than
    half as many samples under the sorted order (and by more than
    ``3 sqrt(n_samples)`` samples). A merely weak teacher is fitted.
""",
        attributes_doc(classifier=True),
        """
    >>> from sklearn.datasets import load_digits
    >>> from sksim import SIMClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> model = SIMClassifier(random_state=0).fit(X / 16, y)
    >>> model.score(X / 16, y) > 0.9
    True
""")

    _teacher_class = MLPClassifier

    def _n_output_columns(self, baseline_outputs):
        n_classes = len(self.classes_)
        width = np.shape(baseline_outputs)[1] if np.ndim(baseline_outputs) == 2 else 0
        if n_classes == 2 and width == 1:
            return 1
        return n_classes

    def fit(self, X, y=None, states=None, baseline_outputs=None):
        return super().fit(X, y, states, baseline_outputs)

    fit.__doc__ = fit_doc(
        """y : array-like of shape (n_samples,)
            Class labels.""",
        """baseline_outputs : array-like of shape (n_samples, n_classes) or (n_samples, 1), default=None
            The baseline's logits (one column for a binary problem is
            allowed); when given, the output rows fit them instead of the
            indicator targets (without them, the teacher's own logits when it
            runs here, see ``output_target``).""",
        "SIMClassifier")

    def _streamed_targets(self, y):
        """``(encode, n_targets)`` of a streamed fit's y (class labels)."""
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels; got shape {y.shape}.")
        self._set_classes(y)
        return LabelTargets(self.classes_), len(self.classes_)

    def _set_classes(self, y):
        """``classes_`` from the labels y (see :func:`sksim._classes.classes_of`)."""
        self.classes_ = _classes.classes_of(y, self.baseline)

    def _teacher_columns(self, outputs):
        """The teacher's output columns in the order of ``classes_`` (see
        :func:`sksim._classes.teacher_columns`); checks their count."""
        return _classes.teacher_columns(outputs, self.classes_, self.baseline,
                                        self._n_output_columns(outputs))

    def _check_teacher_targets(self, targets, y):
        """:meth:`_check_teacher_agreement` on the teacher's targets on all of X."""
        if hasattr(self.baseline, "record") and \
                _classes.declared_classes(self.baseline) is None:
            self._check_teacher_agreement(TeacherAgreement(self.classes_).add(y, targets))

    def _check_teacher_agreement(self, agreement):
        """Refuse a torch teacher whose output columns are clearly not the
        classes of y in sorted order, unless it names them (see
        :func:`sksim._classes.check_agreement`)."""
        if _classes.declared_classes(self.baseline) is None:
            _classes.check_agreement(agreement, self.classes_)

    def _validated_targets(self, X, y):
        """Validated ``X``, the indicator targets and ``y`` for the teacher."""
        _check_numeric(X, "X")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        self._set_classes(y)
        self._check_sample_count(X.shape[0])
        binarizer = LabelBinarizer().fit(self.classes_)
        targets = binarizer.transform(y).astype(np.float64)
        if targets.shape[1] == 1:  # binary: one indicator column per class
            targets = np.hstack([1.0 - targets, targets])
        return X, targets, y

    def decision_function(self, X):
        """Outputs ``C x* + D u + b_y`` at the equilibrium.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) for two classes, else (n_samples, n_classes)
        """
        return self._decision(self._raw_outputs(X))

    def _decision(self, outputs):
        if outputs.shape[1] == 1:
            return outputs.ravel()
        if outputs.shape[1] == 2 and len(self.classes_) == 2:
            return outputs[:, 1] - outputs[:, 0]
        return outputs

    def _labels(self, scores):
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    def _score_outputs(self, outputs, y):
        """``score`` (accuracy, as :class:`~sklearn.base.ClassifierMixin`'s)
        from the raw outputs at the samples of y."""
        return accuracy_score(y, self._labels(self._decision(outputs)))

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self._labels(self.decision_function(X))

    def predict_proba(self, X):
        """Softmax of the outputs (sigmoid for a single logit).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        outputs = self._raw_outputs(X)
        if outputs.shape[1] == 1:
            outputs = np.hstack([np.zeros_like(outputs), outputs])
        return softmax(outputs)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        return np.log(self.predict_proba(X))
