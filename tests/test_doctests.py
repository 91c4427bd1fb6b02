"""The examples in the docstrings run and print what they say (so they cannot rot)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import mmgen
import mmgen.kernels


def _modules():
    names = []
    for package in (mmgen, mmgen.kernels):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            names.append(info.name)
    return sorted(set(names))


def _has_examples(name: str) -> bool:
    module = importlib.import_module(name)
    return any(test.examples for test in doctest.DocTestFinder().find(module))  # only objects defined in `name`


MODULES = [name for name in _modules() if _has_examples(name)]


def test_the_docstring_examples_are_found():
    # a module whose examples stopped being collected would silently stop being tested
    assert {"mmgen.privacy.calibration", "mmgen.features.hermite", "mmgen.features.base", "mmgen.audit",
            "mmgen.data.base"} <= set(MODULES)  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no runnable examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
