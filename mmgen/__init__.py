"""mmgen: differentially private synthetic data by moment matching.

Private data is read once, mapped through a bounded feature map, summed per
class and released with Gaussian noise (:func:`release`). Generators are then
trained on the release alone (:func:`fit`), as often as you like.
Private Evolution (:mod:`mmgen.evolve`) can refine their samples with a
further, accounted share of the budget.
"""

from .version import __version__
from . import data, errors, evaluate, evolve, features, files, privacy  # noqa: E402
from .errors import MMGenError  # noqa: E402
from .release import Release, release  # noqa: E402
from .train import Trained, TrainConfig, fit  # noqa: E402

__all__ = [
    "__version__", "data", "errors", "evaluate", "evolve", "features", "files", "privacy", "MMGenError",
    "Release", "release", "fit", "TrainConfig", "Trained",
]  # fmt: skip
