"""Private Evolution (PE) on top of a generator: private nearest-neighbour votes refine its samples.

See :mod:`mmgen.evolve.loop` for the algorithm and its accounting,
:mod:`mmgen.evolve.histogram` for the vote histogram's sensitivity and
:mod:`mmgen.evolve.api` for the generator protocol.
"""

from .api import CallableAPI, GeneratorAPI, Population, VariationAPI
from .histogram import EMBEDDINGS, histogram_sensitivity, make_embedding, nearest, noisy_histogram, vote_counts
from .loop import EvolveConfig, Evolved, class_sizes, evolve, plan, read_meta, strength_schedule

__all__ = [
    "CallableAPI", "GeneratorAPI", "Population", "VariationAPI", "EMBEDDINGS", "histogram_sensitivity",
    "make_embedding", "nearest", "noisy_histogram", "vote_counts", "EvolveConfig", "Evolved", "class_sizes",
    "evolve", "plan", "read_meta", "strength_schedule",
]  # fmt: skip
