"""Shared fixtures: small ONNX models built by the tests themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from onnx_models import smoothing_model  # noqa: E402


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """Stride-1 smoothing network with dmdet metadata."""
    path = tmp_path_factory.mktemp("models") / "smooth.onnx"
    smoothing_model(path)
    return path


@pytest.fixture(scope="session")
def pooled_model_path(tmp_path_factory) -> Path:
    """Smoothing network with (1,2,2) pooling and upsampling: inputs need padding to the stride."""
    path = tmp_path_factory.mktemp("models") / "pooled.onnx"
    smoothing_model(path, pool=True)
    return path
