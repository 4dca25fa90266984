"""The docstring examples of the public API run and pass (issue 17: numpydoc docstrings with examples)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "dmdet_infer",  # the package's __init__: the quick start
    "dmdet_infer.detector",
    "dmdet_infer.config",
    "dmdet_infer.spots",
    "dmdet_infer.io",
    "dmdet_infer.errors",
    "dmdet_infer.peaks",
    "dmdet_infer.normalise",
]


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(name: str):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see the output)"
