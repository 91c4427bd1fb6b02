"""The Lipschitz-regularised VAE (Groß & Wunder, arXiv 2304.11336), trained with DP-SGD (opacus).

:mod:`mmgen.vae.nets` holds the network and its Lipschitz constraint,
:mod:`mmgen.vae.train` DP-SGD, its accounting and the warm start from a
release's generator, :mod:`mmgen.vae.perrecord` the seed's per-record
mechanism (encode, add the posterior noise, decode).
"""

from .nets import VAE, domain_diameter, lipschitz_bound, project_
from .perrecord import PER_RECORD_FORMAT, per_record_samples, per_record_sensitivity, per_record_std, save_per_record
from .train import DPSGD, VAE_FORMAT, VAE_VERSION, TrainedVAE, VAEConfig, train_vae

__all__ = [
    "VAE", "domain_diameter", "lipschitz_bound", "project_", "PER_RECORD_FORMAT", "per_record_samples",
    "per_record_sensitivity", "per_record_std", "save_per_record", "VAE_FORMAT", "VAE_VERSION", "TrainedVAE", "DPSGD",
    "VAEConfig", "train_vae",
]  # fmt: skip
