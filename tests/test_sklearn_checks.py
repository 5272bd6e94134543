"""scikit-learn's own estimator checks on both estimators."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sksim import SIMClassifier, SIMRegressor


@parametrize_with_checks(
    [SIMRegressor(random_state=0), SIMClassifier(random_state=0)]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
