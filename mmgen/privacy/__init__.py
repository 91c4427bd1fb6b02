"""The Gaussian mechanism, its calibration and composition (dp-accounting), secure noise."""

from .calibration import (
    check_epsilon_delta,
    composed_noise_multiplier,
    delta_for,
    dp_event,
    epsilon_for,
    noise_multiplier_for,
    split_noise_multipliers,
)
from .mechanism import NEIGHBOURING, check_neighbouring, gaussian_mechanism, sensitivity
from .noise import secure_standard_normal, seeded_standard_normal, snap

__all__ = [
    "check_epsilon_delta", "composed_noise_multiplier", "delta_for", "dp_event", "epsilon_for",
    "noise_multiplier_for", "split_noise_multipliers", "NEIGHBOURING", "check_neighbouring",
    "gaussian_mechanism", "sensitivity", "secure_standard_normal", "seeded_standard_normal", "snap",
]  # fmt: skip
