"""Regularization paths of SIM models and the cross-validated estimators.

The state rows of every alpha of a grid come from one homotopy per row
(:func:`sksim.solvers.solve_rows_path`) on one Gram matrix; the output rows
depend on each alpha's equilibrium states and are solved per alpha.
"""

import copy
import inspect
import warnings
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
from sklearn.base import _fit_context, clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.utils._param_validation import Interval

from . import model as fitted
from . import pipeline, recording
from ._arrays import numba_threads
from .design import InputsGram
from .estimators import SIMClassifier, SIMRegressor
from .solvers import announce_compilation, auto_solver, solve_rows_path
from .solvers._blas import single_threaded_blas
from .solvers._threads import run_on_threads


class SIMPath(NamedTuple):
    """Result record of :func:`sim_path`.

    Attributes
    ----------
    alphas : ndarray of shape (n_alphas,)
        The penalties, in decreasing order.
    models : list of fitted estimators
        One per alpha, each a fitted model of the estimator's class with its
        own certificates (``state_duality_gaps_``, ...) and ``alpha`` set.
    n_nonzero : ndarray of shape (n_alphas,)
        ``n_nonzero_`` of each model.
    max_relative_gap : ndarray of shape (n_alphas,)
        Largest ``duality gap / objective`` over the state and output rows of
        each model.
    """

    alphas: np.ndarray
    models: list
    n_nonzero: np.ndarray
    max_relative_gap: np.ndarray


def _alpha_grid(correlations, l1_ratio, n_alphas, eps):
    """``n_alphas`` penalties from ``alpha_max`` (where every state row is
    zero) down to ``eps * alpha_max``, log-spaced."""
    if l1_ratio == 0:
        raise ValueError("alphas must be given when l1_ratio=0: a pure ridge "
                         "penalty has no alpha at which the rows vanish.")
    alpha_max = float(np.abs(correlations).max(initial=0.0)) / l1_ratio
    if alpha_max <= 0:
        raise ValueError("The states are uncorrelated with the design (every "
                         "correlation is 0); there is no path to follow.")
    return np.geomspace(alpha_max, alpha_max * eps, n_alphas)


def _recorded(estimator, X, y, states, baseline_outputs):
    """A validated, unfitted copy of ``estimator`` holding what a fit records
    before solving (the teacher, ``classes_``, ...), the targets and the
    states of the flat model."""
    template = clone(estimator)
    template._validate_params()
    if template.perturbation is not None:
        raise ValueError(
            "perturbation is fitted by SIMRegressor and SIMClassifier, not along a "
            "path or by the CV estimators (their folds share one design); set "
            "perturbation=None, or choose alpha with SIMClassifier(perturbation=...) "
            "on a validation split.")
    if template.penalty != "l1":
        raise ValueError(
            f"penalty={template.penalty!r} is fitted by SIMRegressor and SIMClassifier, "
            "not along a path or by the CV estimators; use penalty='l1' here.")
    if template.adaptive_l1:
        raise ValueError(
            "adaptive_l1 applies to weight-shared fits, which SIMRegressor and "
            "SIMClassifier make; paths and the CV estimators fit the flat model: set "
            "adaptive_l1=0.")
    template._perturbation = None
    X, targets, y_teacher = template._validated_targets(X, y)
    states, targets, maps, _ = recording.record_teacher(template, X, targets, states,
                                                        baseline_outputs, y_teacher)
    if maps is not None:
        raise ValueError("Paths and cross-validation fit the flat SIM model; this "
                         "teacher would be fitted with weight sharing. Set "
                         "weight_sharing=False.")
    return template, X, targets, states


def _fitted_state(estimator):
    """What a fit set on ``estimator`` (its attributes that are not parameters)."""
    return {name: value for name, value in vars(estimator).items()
            if name not in estimator.get_params(deep=False)}


def _state_path(template, problem, n_states, alphas):
    """The state rows at each of ``alphas`` (decreasing) from one path per row."""
    return pipeline.solve_state_rows(
        template, problem[:3], n_states,
        lambda gram, corr, target_sq, n_bounded: solve_rows_path(
            gram, corr, target_sq, alphas, n_bounded=n_bounded,
            bound=template.kappa, row_bound=pipeline.row_bound(template),
            l1_ratio=template.l1_ratio, tol=template.tol,
            max_iter=template.max_iter, relax=template.relax,
            solver=template.solver)[1])


def _output_solver(template, inputs_gram):
    """The output rows' solver for every alpha of a path or fold on these
    inputs: ``"homotopy"`` where ``solver="auto"`` would choose it whatever
    the states, else ``template.solver``.

    Unbounded Lasso output rows go to the homotopy when their Gram, scaled
    to a unit diagonal, is ill conditioned (:func:`sksim.solvers.auto_solver`).
    The inputs' block is a principal submatrix of every alpha's Gram, so by
    Cauchy's interlacing theorem each Gram's condition number is at least
    the block's: when the block is ill conditioned, so is every Gram, and
    the choice is made once instead of once per alpha.
    """
    if (template.solver == "auto" and template.row_bound is None
            and template.l1_ratio == 1.0
            and auto_solver(inputs_gram.fixed[0]) == "homotopy"):
        return "homotopy"
    return template.solver


def _fitted_copy(template, alpha, fit):
    """A fitted estimator: ``template`` (what a fit recorded) with ``alpha``
    and the model of ``fit``."""
    model = clone(template).set_params(alpha=float(alpha))
    model.__dict__.update(_fitted_state(template))
    model._set_fit(fit)
    return model


def _path_models(template, X, targets, states, alphas, state_problem):
    """Fitted copies of ``template`` at each of ``alphas`` on these states:
    the state rows from one path, the output rows per alpha.
    ``state_problem`` is :func:`sksim.pipeline.state_problem` of the data."""
    alphas = np.sort(np.asarray(alphas, dtype=np.float64))[::-1]
    models = []
    post_activations, problem = state_problem
    with numba_threads(template.n_jobs):
        state_rows = _state_path(template, problem, states.shape[1], alphas)
        # X's products shared by the alphas' output stages; for one alpha (the
        # CV's refit) the plain fit's own products, so the refit is bitwise it
        inputs_gram = (InputsGram(X, targets, template.fit_intercept)
                       if alphas.size > 1 else None)
        solver = template.solver if inputs_gram is None else _output_solver(template,
                                                                            inputs_gram)
        for alpha, rows in zip(alphas, state_rows):
            est = copy.copy(template)
            est.alpha, est.solver = float(alpha), solver
            stage = pipeline.InMemoryRows(est, X, states, targets, post_activations,
                                          inputs_gram=inputs_gram)
            fit = pipeline.fit_outputs(est, stage, rows, *problem[3:5])
            models.append(_fitted_copy(template, alpha, fit))
    return alphas, models


def _state_problem(template, X, states):
    """:func:`sksim.pipeline.state_problem` on ``template``'s threads."""
    with numba_threads(template.n_jobs):
        return pipeline.state_problem(template, X, states)


def _fold_scores(template, data, fold, grid, scorer):
    """Held-out scores and ``n_nonzero_`` of every alpha of ``grid``
    (decreasing) on one fold ``(train, test)`` of ``data = (X, y, targets,
    states)``.

    The state rows come from one path on the training rows. Then each
    alpha's output stage (:func:`_alpha_score`), independent of the others,
    runs on one of ``n_jobs`` threads with one numba and one BLAS thread
    each: a stage alternates short products and kernels, which share two
    cores better side by side than each split across both.
    """
    X, y, targets, states = data
    train, test = fold
    X_fold = X[np.concatenate([train, test])]
    X_train = X_fold[:train.size]
    scores = np.empty(grid.size)
    n_nonzero = np.empty(grid.size, dtype=np.int64)
    with numba_threads(template.n_jobs):
        post_activations, problem = pipeline.state_problem(template, X_train,
                                                           states[train])
        state_rows = _state_path(template, problem, states.shape[1], grid)
        inputs_gram = InputsGram(X_train, targets[train], template.fit_intercept)
        solver = _output_solver(template, inputs_gram)
        fit_scorer = None if scorer is None else (
            lambda alpha, fit, X_test, y_test: scorer(_fitted_copy(template, alpha, fit),
                                                      X_test, y_test))
        train_states, train_targets = states[train], targets[train]

        def training_rows(est, model_states):
            return pipeline.InMemoryRows(est, X_train, train_states, train_targets,
                                         post_activations, model_states=model_states,
                                         inputs_gram=inputs_gram)

        def stages(items):
            with numba_threads(1):
                for a in items:
                    est = copy.copy(template)
                    est.alpha, est.solver = float(grid[a]), solver
                    scores[a], n_nonzero[a] = _alpha_score(
                        est, training_rows, (state_rows[a], *problem[3:5]),
                        (X_fold, y[test]), fit_scorer)

        with single_threaded_blas():
            run_on_threads(stages, grid.size)
    return scores, n_nonzero


def _alpha_score(est, training_rows, state_rows, fold, scorer):
    """Held-out score and ``n_nonzero_`` of one alpha on a fold: the
    equilibrium of the fold's training and held-out rows ``X_fold`` (training
    rows first) solved in one call; the output rows fitted on its training
    part (the stage ``training_rows(est, model_states)``); the score computed
    from the outputs at the held-out part, as ``score`` computes it, or as
    ``scorer(alpha, fit, X_test, y_test)`` computes it from the
    :class:`sksim.pipeline.Fit`. ``state_rows`` is ``(rows, design_mean,
    state_mean)``."""
    X_fold, y_test = fold
    n_train = X_fold.shape[0] - len(y_test)
    state_part = pipeline.state_model(*state_rows)
    fold_states, _ = fitted.equilibrium(state_part, X_fold, pipeline.solve_options(est))
    stage = training_rows(est, fold_states[:n_train])
    fit = pipeline.fit_outputs(est, stage, *state_rows, state_part)
    n_nonzero = fitted.count_nonzero(fit.model)
    if scorer is not None:
        return scorer(est.alpha, fit, X_fold[n_train:], y_test), n_nonzero
    outputs = fitted.outputs_at(fit.model, X_fold[n_train:], fold_states[n_train:])
    return est._score_outputs(outputs, y_test), n_nonzero


def _max_relative_gap(model):
    gaps = np.concatenate([model.state_duality_gaps_, model.output_duality_gaps_])
    objectives = np.concatenate([model.state_objectives_, model.output_objectives_])
    return float(np.max(gaps / np.maximum(objectives, 1e-300), initial=0.0))


def sim_path(estimator, X, y, *, alphas=None, n_alphas=20, eps=1e-3, states=None,
             baseline_outputs=None):
    """Fit a SIM model at every penalty of a grid in one call.

    In the style of :func:`sklearn.linear_model.lasso_path`: the teacher is
    recorded once, and the state rows of all alphas come from one exact
    homotopy per row (each row's bound-constrained path followed from
    ``alpha_max`` down through the grid), so the whole grid costs about one
    fit at its smallest alpha plus one output stage per alpha. With
    ``solver="cd"``, a finite ``row_bound`` or ``l1_ratio < 1`` the alphas
    are solved one by one, each warm-started from the previous one. Every
    model is certified as a single fit is.

    Parameters
    ----------
    estimator : SIMRegressor or SIMClassifier
        Template (unfitted is fine): every parameter but ``alpha`` is used as
        set. ``output_alpha=None`` gives the output rows each alpha as well.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
    alphas : array-like of shape (n_alphas,), default=None
        Penalties; ``None`` uses ``n_alphas`` log-spaced values from
        ``alpha_max`` (the smallest alpha at which every state row is zero:
        ``max |correlation| / l1_ratio``) down to ``eps * alpha_max``.
    n_alphas : int, default=20
    eps : float, default=1e-3
    states, baseline_outputs : array-like, default=None
        As in the estimator's ``fit``.

    Returns
    -------
    SIMPath
        ``alphas`` (decreasing), ``models``, ``n_nonzero`` and
        ``max_relative_gap`` per alpha.
    """
    if not isinstance(estimator, (SIMRegressor, SIMClassifier)):
        raise ValueError("estimator must be a SIMRegressor or a SIMClassifier; got "
                         f"{type(estimator).__name__}.")
    announce_compilation(path=True)
    template, X, targets, states = _recorded(estimator, X, y, states, baseline_outputs)
    state_problem = _state_problem(template, X, states)
    grid = (_check_alphas(alphas) if alphas is not None else
            _alpha_grid(state_problem[1][1], template.l1_ratio, n_alphas, eps))
    alphas, models = _path_models(template, X, targets, states, grid, state_problem)
    return SIMPath(alphas, models, np.array([m.n_nonzero_ for m in models]),
                   np.array([_max_relative_gap(m) for m in models]))


def _check_alphas(alphas):
    grid = np.asarray(alphas, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise ValueError("alphas must be a non-empty array of finite penalties >= 0; "
                         f"got {alphas!r}.")
    return grid


_CV_PARAMETERS_DOC = """
    alphas : array-like of shape (n_alphas,), default=None
        Penalties to choose from; ``None`` uses ``n_alphas`` log-spaced values
        from ``alpha_max`` of the full training data down to
        ``eps * alpha_max`` (see :func:`sksim.sim_path`).
    n_alphas : int, default=20
    eps : float, default=1e-3
        When the best mean score is at the grid's smallest alpha and still
        rising there, ``fit`` warns (``UserWarning``) that alpha may be too
        large, naming ``eps`` (or ``alphas``) as the way to search further.
    cv : int, cross-validation generator or iterable, default=None
        As in :class:`sklearn.linear_model.LassoCV` (``None``: 5 folds,
        stratified for the classifier).
    scoring : str or callable, default=None
        Scorer on the held-out fold; ``None`` uses the estimator's ``score``.
        The alpha with the best mean score wins; ties go to the largest
        alpha (the sparsest model).
"""

_CV_ATTRIBUTES_DOC = """
    alpha_ : float
        The chosen penalty; the fitted attributes above are those of the
        model refitted at it on all the data.
    alphas_ : ndarray of shape (n_alphas,)
        The grid, in decreasing order.
    scores_path_ : ndarray of shape (n_alphas, n_folds)
        Held-out score of each alpha on each fold.
    n_nonzero_path_ : ndarray of shape (n_alphas, n_folds)
        ``n_nonzero_`` of each fold's model.
    best_estimator_ : SIMRegressor or SIMClassifier
        The refitted model (``save_model`` saves it).
"""


class _CVMixin:
    """Alpha by cross-validation over folds of the recorded states.

    The teacher is recorded once on all of X (as a pretrained teacher would
    be), its states are split per fold, and each fold fits the whole path:
    the state rows of every alpha from one homotopy per row; X's block of
    the output rows' Gram computed once per fold; per alpha, one
    equilibrium of the fold's training and held-out rows together, the
    output rows, and the held-out score from the outputs (the alphas'
    output stages side by side on ``n_jobs`` threads). The model at the
    chosen alpha is then refitted on all the data from the same states (the
    full data's state Gram computed once, for the grid and the refit).
    """

    _cv_constraints = {
        "alphas": ["array-like", None],
        "n_alphas": [Interval(Integral, 1, None, closed="left")],
        "eps": [Interval(Real, 0, 1, closed="neither")],
        "cv": ["cv_object"],
        "scoring": [None, str, callable],
    }

    def _plain(self):
        """The plain estimator with this one's parameters (alpha is set per fit)."""
        params = {name: value for name, value in self.get_params(deep=False).items()
                  if name not in self._cv_constraints}
        return self._plain_class(alpha=1.0, **params)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, states=None, baseline_outputs=None):
        """Choose alpha by cross-validation, then refit on all the data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        states : array-like of shape (n_samples, n_states), default=None
            As in the plain estimator's ``fit``.
        baseline_outputs : array-like of shape (n_samples, n_outputs), default=None
            As in the plain estimator's ``fit``.

        Returns
        -------
        self
        """
        announce_compilation(path=True)
        template, X, targets, states = _recorded(self._plain(), X, y, states,
                                                 baseline_outputs)
        if X.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples to "
                             f"cross-validate; got {X.shape[0]} sample.")
        state_problem = _state_problem(template, X, states)
        grid = (_alpha_grid(state_problem[1][1], template.l1_ratio, self.n_alphas, self.eps)
                if self.alphas is None else _check_alphas(self.alphas))
        grid = np.sort(grid)[::-1]
        y = np.asarray(y)
        is_classifier = isinstance(template, SIMClassifier)
        folds = list(check_cv(self.cv, y, classifier=is_classifier).split(X, y))
        # the estimator's own score is computed from the held-out outputs
        scorer = (None if self.scoring is None else
                  check_scoring(template, scoring=self.scoring))
        scores = np.empty((grid.size, len(folds)))
        n_nonzero = np.empty((grid.size, len(folds)), dtype=np.int64)
        for f, fold in enumerate(folds):
            scores[:, f], n_nonzero[:, f] = _fold_scores(
                template, (X, y, targets, states), fold, grid, scorer)
        mean = scores.mean(axis=1)
        best = int(np.flatnonzero(mean == mean.max())[0])  # the largest alpha of a tie
        message = _edge_warning(self, mean, grid)
        if message is not None:  # stacklevel: past fit's _fit_context wrapper
            warnings.warn(message, UserWarning, stacklevel=3)
        _, (model,) = _path_models(template, X, targets, states, grid[best:best + 1],
                                   state_problem)
        self.__dict__.update(_fitted_state(model))
        self.alpha_ = float(grid[best])
        self.alphas_ = grid
        self.scores_path_ = scores
        self.n_nonzero_path_ = n_nonzero
        self.best_estimator_ = model
        return self


def _edge_warning(cv, mean, grid):
    """The text of the warning when the best mean score is at the smallest
    alpha of the grid and still rising there, else None."""
    if grid.size < 2 or not mean[-1] > max(mean[:-1]):
        return None
    remedy = ("pass smaller alphas" if cv.alphas is not None else
              f"lower eps (now {cv.eps:g}; the grid ends at eps * alpha_max) or pass "
              "alphas")
    return (f"{type(cv).__name__}: the best mean score ({mean[-1]:.6g}) is at the "
            f"smallest alpha of the grid ({grid[-1]:.6g}), and it rose from "
            f"{mean[-2]:.6g} at the alpha before: the score may still improve below "
            f"the grid, so alpha_ may be too large. To search further, {remedy}.")


def _cv_class(plain, summary):
    constraints = {key: value for key, value in plain._parameter_constraints.items()
                   if key != "alpha"}
    constraints.update(_CVMixin._cv_constraints)
    doc_params = plain.__doc__.split("    Parameters\n    ----------")[1].split(
        "    Attributes\n    ----------")[0]
    # the plain estimator's parameter list minus alpha (which CV chooses)
    entries = doc_params.split("\n    alpha : ")
    tail = entries[1].split("\n    output_alpha : ", 1)[1]
    doc_params = entries[0] + "\n    output_alpha : " + tail
    attributes = plain.__doc__.split("    Attributes\n    ----------")[1].split(
        "    Examples\n    --------")[0]
    doc = (f"{summary}\n\n    Parameters\n    ----------{doc_params.rstrip()}\n"
           f"{_CV_PARAMETERS_DOC}\n    Attributes\n    ----------{attributes.rstrip()}\n"
           f"{_CV_ATTRIBUTES_DOC}")
    return constraints, doc


def _cv_init(plain):
    """``__init__`` of the CV form of ``plain``: its parameters but ``alpha``,
    with the CV parameters after ``baseline``. The signature is built from
    the plain estimator's (one source for every default; scikit-learn reads
    the parameters from it)."""
    parameters = [p for name, p in inspect.signature(plain.__init__).parameters.items()
                  if name != "alpha"]
    cv_parameters = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                       default=default)
                     for name, default in (("alphas", None), ("n_alphas", 20),
                                           ("eps", 1e-3), ("cv", None), ("scoring", None))]
    signature = inspect.Signature(parameters[:2] + cv_parameters + parameters[2:])

    def __init__(self, baseline=None, **params):
        bound = signature.bind(self, baseline, **params)
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            if name != "self":
                setattr(self, name, value)

    __init__.__signature__ = signature
    return __init__


class SIMRegressorCV(_CVMixin, SIMRegressor):
    _plain_class = SIMRegressor
    _parameter_constraints, __doc__ = _cv_class(
        SIMRegressor, "SIMRegressor with alpha chosen by cross-validation along the path.")
    __init__ = _cv_init(SIMRegressor)


class SIMClassifierCV(_CVMixin, SIMClassifier):
    _plain_class = SIMClassifier
    _parameter_constraints, __doc__ = _cv_class(
        SIMClassifier, "SIMClassifier with alpha chosen by cross-validation along the path.")
    __init__ = _cv_init(SIMClassifier)
