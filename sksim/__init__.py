"""sksim: State-driven Implicit Modeling (SIM) for scikit-learn."""

from .estimators import SIMClassifier, SIMRegressor

__version__ = "0.1.0"

__all__ = ["SIMClassifier", "SIMRegressor", "__version__"]
