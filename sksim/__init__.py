"""sksim: State-driven Implicit Modeling (SIM) for scikit-learn."""

from .baselines.torch import TorchBaseline
from .estimators import SIMClassifier, SIMRegressor

__version__ = "0.1.0"

__all__ = ["SIMClassifier", "SIMRegressor", "TorchBaseline", "__version__"]
