"""Feature maps by name: ``create("rff", input_shape=..., **options)``, ``list()``.

Each map guarantees ``‖φ(x)‖₂ ≤ max_norm ≤ 1`` on its declared domain.
Multi-statistic releases (DP-HP's two kernels, DP-MEPF's two moments) are
built by :func:`statistics` (e.g. ``statistics("perceptual")``).
"""

from .base import FeatureMap, create, from_spec, get_class, list_feature_maps, register
from .hermite import HermiteConfig, HermiteProductConfig, HermiteProductFeatures, HermiteSumFeatures
from .ntk import NTKConfig, NTKFeatures
from .perceptual import PerceptualConfig, PerceptualFeatures
from .rff import RandomFourierFeatures, RFFConfig
from .tabular import TableMarginals, TableMarginalsConfig, TableRFF, TableRFFConfig
from .bundles import BUNDLE_HELP, BUNDLES, default_budget_split, statistics

list = list_feature_maps  # noqa: A001  (the registry's `list()`, as timm's `list_models()`)

__all__ = [
    "FeatureMap", "create", "from_spec", "get_class", "list", "list_feature_maps",
    "register", "RandomFourierFeatures", "RFFConfig",
    "HermiteConfig", "HermiteProductConfig", "HermiteSumFeatures", "HermiteProductFeatures",
    "NTKConfig", "NTKFeatures", "PerceptualConfig", "PerceptualFeatures",
    "TableRFF", "TableRFFConfig", "TableMarginals", "TableMarginalsConfig",
    "BUNDLES", "BUNDLE_HELP", "statistics", "default_budget_split",
]  # fmt: skip
