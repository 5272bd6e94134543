"""scikit-learn's own estimator checks on the estimators and their CV forms."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from sksim import SIMClassifier, SIMClassifierCV, SIMRegressor, SIMRegressorCV


@parametrize_with_checks(
    [SIMRegressor(random_state=0), SIMClassifier(random_state=0),
     SIMRegressorCV(random_state=0, n_alphas=3, cv=2),
     SIMClassifierCV(random_state=0, n_alphas=3, cv=2)]
)
# The checks fit on tiny random data with the default budgets: the embedded
# teacher (an MLP) and some rows stop at max_iter there, as expected, and say
# so with a ConvergenceWarning; the checks test the API, not convergence.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_compatible(estimator, check):
    check(estimator)
