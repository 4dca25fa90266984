"""Shared fixtures: small ONNX models built by the tests themselves."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from onnx_models import smoothing_model  # noqa: E402


def pytest_report_header(config) -> str:
    import dmdet_infer

    return f"dmdet_infer {dmdet_infer.__version__} from {Path(dmdet_infer.__file__).parent}"


def pytest_configure(config) -> None:
    """The wheel-only run (tests/run_wheel_tests.sh sets DMDET_WHEEL_RUN to the checkout) stops before any test
    unless dmdet_infer is the installed wheel: in this interpreter's site-packages, not in the checkout."""
    checkout = os.environ.get("DMDET_WHEEL_RUN")
    if not checkout:
        return
    import dmdet_infer

    where = Path(dmdet_infer.__file__).resolve()
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    if not any(where.is_relative_to(p) for p in site) or where.is_relative_to(Path(checkout).resolve()):
        raise pytest.UsageError(f"the wheel run imports dmdet_infer from {where}, not from the installed wheel "
                                f"in {' or '.join(map(str, sorted(site)))}")


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
