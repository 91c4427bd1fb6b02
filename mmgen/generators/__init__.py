"""Generator networks trained on releases."""

from .nets import GENERATORS, ConvGenerator, Generator, GeneratorConfig, MLPGenerator, create_generator, for_release

__all__ = ["GENERATORS", "ConvGenerator", "Generator", "GeneratorConfig", "MLPGenerator", "create_generator", "for_release"]
