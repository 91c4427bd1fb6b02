"""Shared fixtures: real data sets (digits always; Fashion-MNIST when installed)."""

from __future__ import annotations

import pytest
import torch

import mmgen
from mmgen.errors import DataError


@pytest.fixture(scope="session")
def digits():
    return mmgen.data.load("digits")


@pytest.fixture(scope="session")
def fmnist():
    try:
        return mmgen.data.load("fashion-mnist", max_train=10_000)
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests run on 2-core machines; keep torch from oversubscribing them.
    torch.set_num_threads(2)
    yield
