"""scikit-learn's own estimator checks on the estimators and their CV forms."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sksim import SIMClassifier, SIMClassifierCV, SIMRegressor, SIMRegressorCV


@parametrize_with_checks(
    [SIMRegressor(random_state=0), SIMClassifier(random_state=0),
     SIMRegressorCV(random_state=0, n_alphas=3, cv=2),
     SIMClassifierCV(random_state=0, n_alphas=3, cv=2)]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
