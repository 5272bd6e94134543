"""sim_path and the cross-validated estimators: every model of a path equals
the single fit at its alpha, the CV scores equal plain fits on the same
folds, and bad input is rejected with a clear message."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksim import SIMClassifier, SIMClassifierCV, SIMRegressor, SIMRegressorCV, sim_path
from sksim.baselines import mlp_forward


@pytest.fixture(scope="module")
def teacher_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 6))
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1)
    mlp = MLPClassifier((10, 8), max_iter=2000, random_state=0).fit(X, y)
    states, logits = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    return X, y, states, logits


def _assert_same_model(path_model, single, atol):
    for name in ("A_", "B_", "C_", "D_"):
        difference = abs(getattr(path_model, name) - getattr(single, name))
        assert np.max(difference.toarray(), initial=0.0) <= atol, name
    np.testing.assert_allclose(path_model.intercept_, single.intercept_, rtol=0, atol=atol)
    assert np.max(abs(path_model.A_).sum(axis=1), initial=0.0) <= path_model.kappa


@pytest.mark.parametrize("options", [
    {},                                    # the homotopy path (solver="auto")
    {"solver": "cd", "tol": 1e-10},        # coordinate descent, warm-started
    {"row_bound": 2.0, "tol": 1e-10},      # row_bound: solved per alpha
    {"relax": 0.1},                        # relaxed rows on each support
    {"l1_ratio": 0.7},                     # elastic net: one homotopy per alpha
    {"refit_outputs": False, "output_alpha": 1e-3},
])
def test_path_models_equal_single_fits(teacher_problem, options):
    """Each model of the path is the single fit at its alpha (the same
    solvers; coordinate descent to 1e-10 relative gap differs only within
    its tolerance), certified, and exactly within kappa."""
    X, y, states, _ = teacher_problem
    options = {"relax": 1.0, **options}  # the plain rows unless relax is the option
    alphas = [0.3, 0.03, 3e-3, 3e-4]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # every row certified
        path = sim_path(SIMRegressor(**options), X, y.astype(float), alphas=alphas,
                        states=states)
    np.testing.assert_array_equal(path.alphas, alphas)
    assert np.all(np.diff(path.n_nonzero) >= 0) or options["relax"] < 1
    atol = 1e-6 if options.get("solver") == "cd" or "row_bound" in options else 1e-10
    for alpha, model, gap in zip(path.alphas, path.models, path.max_relative_gap):
        single = SIMRegressor(alpha=alpha, **options).fit(X, y.astype(float),
                                                          states=states)
        assert model.alpha == alpha
        _assert_same_model(model, single, atol)
        assert gap <= 2 * model.tol + 1e-9  # tol plus the solver's roundoff floor


def test_path_default_grid_starts_where_the_state_rows_vanish(teacher_problem):
    """The default grid: from alpha_max (every state row zero, the next
    alpha not) down to eps * alpha_max."""
    X, y, states, logits = teacher_problem
    path = sim_path(SIMClassifier(), X, y, states=states, baseline_outputs=logits,
                    n_alphas=6, eps=1e-2)
    assert path.alphas.shape == (6,)
    np.testing.assert_allclose(path.alphas[-1], path.alphas[0] * 1e-2)
    first, second = path.models[:2]
    assert first.A_.nnz + first.B_.nnz == 0
    assert second.A_.nnz + second.B_.nnz > 0


def test_path_records_the_teacher_once():
    """With a teacher (no states), every model of the path keeps the one
    fitted teacher and its scales."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 4))
    y = X[:, 0] - X[:, 1] ** 2
    path = sim_path(SIMRegressor(random_state=0), X, y, alphas=[1e-1, 1e-2])
    teachers = {id(model.baseline_) for model in path.models}
    assert len(teachers) == 1
    single = SIMRegressor(random_state=0, alpha=1e-2).fit(X, y)
    np.testing.assert_allclose(path.models[1].predict(X), single.predict(X), atol=1e-8)


@pytest.mark.parametrize("cv_class, plain", [(SIMRegressorCV, SIMRegressor),
                                             (SIMClassifierCV, SIMClassifier)])
def test_cv_scores_equal_plain_fits_on_the_same_folds(teacher_problem, cv_class, plain):
    """scores_path_ equals the scores of plain fits on each fold's states,
    alpha_ is the best mean (ties to the larger alpha), and the refitted
    model is the plain fit at alpha_ on all the data."""
    X, y, states, _ = teacher_problem
    target = y.astype(float) if plain is SIMRegressor else y
    alphas = [0.1, 1e-2, 1e-3]
    splitter = (KFold(3) if plain is SIMRegressor else StratifiedKFold(3))
    model = cv_class(alphas=alphas, cv=splitter).fit(X, target, states=states)
    expected = np.empty((3, 3))
    for f, (train, test) in enumerate(splitter.split(X, target)):
        for a, alpha in enumerate(alphas):
            fold = plain(alpha=alpha).fit(X[train], target[train], states=states[train])
            expected[a, f] = fold.score(X[test], target[test])
    np.testing.assert_allclose(model.scores_path_, expected, rtol=0, atol=1e-10)
    mean = expected.mean(axis=1)
    assert model.alpha_ == alphas[int(np.flatnonzero(mean == mean.max())[0])]
    refit = plain(alpha=model.alpha_).fit(X, target, states=states)
    _assert_same_model(model, refit, 1e-10)
    np.testing.assert_array_equal(model.predict(X), refit.predict(X))
    assert model.best_estimator_.alpha == model.alpha_


@pytest.mark.parametrize("scoring", ["neg_mean_absolute_error", "score"])
def test_cv_scoring_equals_the_scorer_on_plain_fits(teacher_problem, scoring):
    """A ``scoring`` is called on fitted estimators of each fold and alpha
    (equal to plain fits), and the estimator's own score, computed from the
    held-out outputs, equals ``score`` of those fits; on two threads as on
    one."""
    from sklearn.metrics import check_scoring

    X, _, states, logits = teacher_problem
    alphas, splitter = [0.1, 1e-2, 1e-3], KFold(3)
    scoring = None if scoring == "score" else scoring
    scorer = check_scoring(SIMRegressor(), scoring=scoring)
    expected = np.empty((3, 3))
    for f, (train, test) in enumerate(splitter.split(X)):
        for a, alpha in enumerate(alphas):
            fold = SIMRegressor(alpha=alpha).fit(X[train], logits[train],
                                                 states=states[train])
            expected[a, f] = scorer(fold, X[test], logits[test])
    for n_jobs in (1, 2):
        model = SIMRegressorCV(alphas=alphas, cv=splitter, scoring=scoring,
                               n_jobs=n_jobs).fit(X, logits, states=states)
        np.testing.assert_allclose(model.scores_path_, expected, rtol=0, atol=1e-10)


def test_cv_in_a_pipeline_routes_states(teacher_problem):
    X, y, states, _ = teacher_problem
    pipe = make_pipeline(StandardScaler(), SIMClassifierCV(alphas=[1e-1, 1e-2], cv=2))
    pipe.fit(X, y, simclassifiercv__states=states)
    assert pipe.score(X, y) > 0.5
    assert pipe[-1].alpha_ in (1e-1, 1e-2)


@pytest.mark.parametrize("call, message", [
    (lambda X, y, s: sim_path(MLPClassifier(), X, y, states=s), "estimator must be"),
    (lambda X, y, s: sim_path(SIMClassifier(), X, y, states=s, alphas=[]), "alphas must"),
    (lambda X, y, s: sim_path(SIMClassifier(), X, y, states=s, alphas=[-1.0]),
     "alphas must"),
    (lambda X, y, s: sim_path(SIMClassifier(l1_ratio=0.0), X, y, states=s),
     "alphas must be given when l1_ratio=0"),
    (lambda X, y, s: SIMClassifierCV(alphas=[np.nan]).fit(X, y, states=s), "alphas must"),
    (lambda X, y, s: SIMClassifierCV(n_alphas=0).fit(X, y, states=s), "n_alphas"),
])
def test_bad_path_input_raises(teacher_problem, call, message):
    X, y, states, _ = teacher_problem
    with pytest.raises(ValueError, match=message):
        call(X, y, states)


def test_cv_warns_when_the_best_score_is_still_rising_at_the_grid_edge(teacher_problem):
    """The teacher's own logits from its states: the held-out score rises
    down to the smallest alpha, so alpha_ sits on the grid's edge; pure
    noise targets peak inside the grid and give no warning."""
    X, _, states, logits = teacher_problem
    with pytest.warns(UserWarning, match=r"lower eps \(now 0.1;.*or pass alphas"):
        model = SIMRegressorCV(n_alphas=4, eps=0.1, cv=3).fit(X, logits, states=states)
    mean = model.scores_path_.mean(axis=1)
    assert model.alpha_ == model.alphas_[-1] and mean[-1] > mean[:-1].max()
    with pytest.warns(UserWarning, match="pass smaller alphas"):
        SIMRegressorCV(alphas=model.alphas_, cv=3).fit(X, logits, states=states)

    noise = np.random.default_rng(1).normal(size=X.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = SIMRegressorCV(n_alphas=8, eps=1e-4, cv=3).fit(X, noise, states=states)
    assert model.alpha_ > model.alphas_[-1]
