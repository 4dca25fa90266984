"""ONNX Runtime CPU against CUDA for the shipped model: density maps within 1e-3 and the same spots.

Skips (with the reason) where onnxruntime has no working CUDA provider, as on the CPU-only development machine.
Run on a GPU machine with the onnxruntime-gpu wheel: ``python -m pytest -q tests/test_cuda_parity.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from dmdet_infer import Detector  # noqa: E402
from dmdet_infer.cuda import CUDA, preload  # noqa: E402
from dmdet_infer.errors import InputError  # noqa: E402
from dmdet_infer.model import Model  # noqa: E402

SHAPE = (10, 128, 128)
TOLERANCE = 1e-3


def _volume(seed: int = 0) -> np.ndarray:
    """Poisson background with 40 Gaussian spots of different brightness (uint16, like a camera)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    image = np.full(SHAPE, 100.0)
    for _ in range(40):
        c = rng.uniform([1, 4, 4], [SHAPE[0] - 1, SHAPE[1] - 4, SHAPE[2] - 4])
        image += rng.uniform(15, 80) * np.exp(-0.5 * (((z - c[0]) / 1.0) ** 2 + ((y - c[1]) / 1.5) ** 2
                                                      + ((x - c[2]) / 1.5) ** 2))
    return rng.poisson(image).astype(np.uint16)


@pytest.fixture(scope="module", params=[True, False], ids=["tf32", "no-tf32"])
def cuda_model(request) -> Model:
    if CUDA not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no {CUDA} (CPU build); install onnxruntime-gpu")
    notes = preload()
    try:
        model = Model(device="cuda", tf32=request.param)
        model.run(np.zeros((8, 64, 64), np.float32))  # a session can start and still fail at the first run
    except InputError as exc:
        pytest.skip(f"CUDA provider not working: {exc} ({'; '.join(notes)})")
    except Exception as exc:
        pytest.skip(f"CUDA provider not working: {type(exc).__name__}: {exc} ({'; '.join(notes)})")
    assert model.on_cuda
    return model


def test_density_maps_agree(cuda_model):
    volume = _volume()
    cpu = Detector(device="cpu").density(volume)
    gpu = Detector(cuda_model).density(volume)
    assert cuda_model.io_binding is True, cuda_model.io_binding_error
    diff = float(np.abs(cpu - gpu).max())
    tf32 = cuda_model.session.get_provider_options().get(CUDA, {}).get("use_tf32")
    print(f"use_tf32={tf32}: max |CPU - CUDA| = {diff:.3g}")
    assert diff <= TOLERANCE


def test_same_spots(cuda_model):
    volume = _volume(1)
    cpu = Detector(device="cpu").detect(volume)
    gpu = Detector(cuda_model).detect(volume)
    assert len(cpu) > 10
    assert len(cpu) == len(gpu)
    order_cpu, order_gpu = np.lexsort(cpu.zyx.T), np.lexsort(gpu.zyx.T)
    assert np.abs(cpu.zyx[order_cpu] - gpu.zyx[order_gpu]).max() <= TOLERANCE
    assert cpu.meta["threshold"] == pytest.approx(gpu.meta["threshold"], abs=TOLERANCE)


def test_overlapped_tiles_on_cuda_equal_plain(cuda_model):
    """The CUDA default (overlap on) against overlap off, with several tiles: bit-identical spots."""
    volume = _volume(2)
    on = Detector(cuda_model, tile=(10, 64, 64))
    off = Detector(cuda_model, tile=(10, 64, 64), overlap=False)
    assert on.overlap and len(on.cores(volume.shape)) == 4
    a, b = on.detect(volume), off.detect(volume)
    np.testing.assert_array_equal(a.zyx, b.zyx)
    np.testing.assert_array_equal(a.score, b.score)
