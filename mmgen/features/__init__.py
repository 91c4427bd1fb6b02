"""Feature maps by name: ``create("rff", input_shape=..., **options)``, ``list()``.

Each map guarantees ``‖φ(x)‖₂ ≤ max_norm ≤ 1`` on its declared domain.
"""

from .base import FeatureMap, create, from_spec, get_class, list_feature_maps, register
from .rff import RandomFourierFeatures, RFFConfig

list = list_feature_maps  # noqa: A001  (the registry's `list()`, as timm's `list_models()`)

__all__ = [
    "FeatureMap", "create", "from_spec", "get_class", "list", "list_feature_maps",
    "register", "RandomFourierFeatures", "RFFConfig",
]  # fmt: skip
