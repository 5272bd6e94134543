"""sksim: State-driven Implicit Modeling (SIM) for scikit-learn."""

from ._version import __version__
from .baselines.torch import TorchBaseline
from .estimators import SIMClassifier, SIMRegressor
from .path import SIMClassifierCV, SIMPath, SIMRegressorCV, sim_path
from .persistence import load_model, save_model

__all__ = [
    "SIMClassifier",
    "SIMClassifierCV",
    "SIMPath",
    "SIMRegressor",
    "SIMRegressorCV",
    "TorchBaseline",
    "__version__",
    "load_model",
    "save_model",
    "sim_path",
]
