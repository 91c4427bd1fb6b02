"""Generator networks trained on releases."""

from .nets import (
    GENERATORS, ConvGenerator, Generator, GeneratorConfig, MLPGenerator, auto_kind, create_generator, for_release,
)  # fmt: skip

__all__ = [
    "GENERATORS", "ConvGenerator", "Generator", "GeneratorConfig", "MLPGenerator", "auto_kind", "create_generator",
    "for_release",
]  # fmt: skip
