"""Where states come from: an embedded scikit-learn MLP teacher, or a torch model."""

from .sklearn_mlp import mlp_forward, mlp_implicit_blocks, well_posed_layer_scales

__all__ = ["mlp_forward", "mlp_implicit_blocks", "well_posed_layer_scales"]
