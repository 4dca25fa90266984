"""The docstring examples of the public API run and pass (issue 17: numpydoc docstrings with examples)."""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
from typing import Any

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


SECTION = re.compile(r"^\s*(\w[\w ]*)\n\s*-{3,}\s*$", re.MULTILINE)


def _sections(doc: str) -> set[str]:
    return set(SECTION.findall(doc))


def _takes_arguments(function: Any) -> bool:
    """Whether ``function`` takes arguments besides ``self``/``cls``; a class: its constructor (an exception's
    builtin one takes its message)."""
    try:
        parameters = list(inspect.signature(function).parameters)
    except ValueError:  # no signature: a builtin constructor such as an exception's
        return True
    return bool(parameters[1:] if parameters[:1] in (["self"], ["cls"]) else parameters)


def _public_api() -> list[tuple[str, Any]]:
    """(qualified name, object) of every public function and class in ``dmdet_infer.__all__``, and of every public
    method (not starting with ``_``; static and class methods included, properties and fields not) of those classes
    defined in the package, inherited ones included."""
    import dmdet_infer

    found = []
    for name in dmdet_infer.__all__:
        obj = getattr(dmdet_infer, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # __version__
        found.append((name, obj))
        if not inspect.isclass(obj):
            continue
        seen: set[str] = set()
        for klass in obj.__mro__:
            if not klass.__module__.startswith("dmdet_infer"):
                continue
            for attr, value in vars(klass).items():
                if attr.startswith("_") or attr in seen:
                    continue
                seen.add(attr)
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if inspect.isfunction(value):
                    found.append((f"{name}.{attr}", value))
    return found


def _returns_nothing(function: Any) -> bool:
    return inspect.signature(function).return_annotation in (None, "None")


def test_every_public_name_has_a_numpydoc_docstring_with_an_example():
    """Issue 17: each public function and method of ``dmdet_infer.__all__`` has a ``Parameters`` section when it
    takes arguments, a ``Returns`` (or ``Yields``) section unless it returns None having arguments (one with neither
    says ``Returns None``), and a ``>>>`` example; each class an example, and ``Parameters`` for its constructor."""
    api = _public_api()
    names = {name for name, _ in api}
    assert {"Detector.detect", "Detector.merge", "DetectorConfig.from_file", "Spots.to_csv", "read_stack",
            "InputError"} <= names, "the public API was not found"
    problems = []
    for name, obj in api:
        doc = inspect.getdoc(obj) or ""
        sections = _sections(doc)
        missing = []
        if not doc.strip():
            missing.append("a docstring")
        if _takes_arguments(obj) and "Parameters" not in sections:
            missing.append("Parameters")
        if not inspect.isclass(obj) and not sections & {"Returns", "Yields"} and not (
                _returns_nothing(obj) and _takes_arguments(obj)):
            missing.append("Returns")
        if ">>>" not in doc:
            missing.append("an example (>>>)")
        if missing:
            problems.append(f"{name}: no {', '.join(missing)}")
    assert not problems, "public API without a numpydoc docstring:\n" + "\n".join(problems)
