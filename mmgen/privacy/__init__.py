"""The Gaussian mechanism, its calibration and composition (dp-accounting), noise (OpenDP's safe sampler), the budget record."""

from .calibration import (
    check_epsilon_delta,
    composed_noise_multiplier,
    delta_for,
    dp_event,
    epsilon_for,
    noise_multiplier_for,
    split_noise_multipliers,
)
from .ledger import BudgetRecord, budget_warnings, composed_epsilon, dp_sgd_event, noise_multiplier_within, rounds_event
from .mechanism import NEIGHBOURING, check_neighbouring, gaussian_mechanism, sensitivity, simulated_gaussian_mechanism
from .noise import (
    NOISE_SOURCE,
    SEEDED_NOISE_SOURCE,
    opendp_gaussian,
    opendp_rho,
    sampler_sensitivity,
    secure_standard_normal,
    seeded_standard_normal,
)

__all__ = [
    "check_epsilon_delta", "composed_noise_multiplier", "delta_for", "dp_event", "epsilon_for",
    "noise_multiplier_for", "split_noise_multipliers", "NEIGHBOURING", "check_neighbouring",
    "gaussian_mechanism", "simulated_gaussian_mechanism", "sensitivity", "NOISE_SOURCE", "SEEDED_NOISE_SOURCE",
    "BudgetRecord", "budget_warnings", "composed_epsilon", "dp_sgd_event", "noise_multiplier_within", "rounds_event", "opendp_gaussian", "opendp_rho", "sampler_sensitivity", "secure_standard_normal", "seeded_standard_normal",
]  # fmt: skip
