"""Utility metrics of synthetic data against the real test split."""

from .downstream import CLASSIFIERS, downstream_accuracy

__all__ = ["CLASSIFIERS", "downstream_accuracy"]
