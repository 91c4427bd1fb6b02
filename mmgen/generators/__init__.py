"""Generator networks trained on releases, by kind: ``create_generator(kind=...)``, ``list_generators()``.

The registry and the base classes are in :mod:`mmgen.generators.base`; each kind registers itself
when its module is imported, in the order below.
"""

from .base import (
    GENERATORS, Generator, GeneratorConfig, auto_kind, create_generator, for_release, get_class, list_generators,
    register,
)  # fmt: skip
from .nets import ConvGenerator, MLPGenerator
from .resnet import ResNetGenerator
from .tabular import TableGenerator

__all__ = [
    "GENERATORS", "ConvGenerator", "Generator", "GeneratorConfig", "MLPGenerator", "auto_kind", "create_generator",
    "for_release", "get_class", "list_generators", "register", "ResNetGenerator", "TableGenerator",
]  # fmt: skip
