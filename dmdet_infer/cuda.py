"""Making ONNX Runtime's CUDA provider find its libraries (CUDA 13, cuDNN 9) where they came as pip packages.

The onnxruntime-gpu wheel does not bundle CUDA or cuDNN. Where they are installed as the ``nvidia-*`` wheels that
PyTorch depends on, :func:`preload` loads them before the first CUDA session: ``onnxruntime.preload_dlls()``
(onnxruntime >= 1.21) and, if that is missing or fails, ``import torch`` (which loads the same libraries).
Nothing here is needed on the CPU, and nothing here raises.
"""

from __future__ import annotations

from .model import CUDA

_DONE: list[str] = []


def preload(use_torch: bool = True) -> list[str]:
    """Load the CUDA/cuDNN libraries for onnxruntime's CUDA provider; returns what was tried and how it went.
    ``onnxruntime.preload_dlls`` is called once per process."""
    notes: list[str] = []
    try:
        import onnxruntime as ort
    except Exception as exc:  # pragma: no cover - onnxruntime is a dependency
        return [f"import onnxruntime failed: {exc}"]
    if CUDA not in ort.get_available_providers():
        return [f"onnxruntime {ort.__version__} has no {CUDA} (CPU build)"]
    if use_torch:
        try:
            import torch  # noqa: F401  (its import loads the nvidia-* libraries it was built with)

            notes.append(f"import torch {torch.__version__}: ok (cuda available: {torch.cuda.is_available()})")
        except Exception as exc:
            notes.append(f"import torch failed: {type(exc).__name__}: {exc}")
    loader = getattr(ort, "preload_dlls", None)
    if _DONE:
        notes.append(f"preload_dlls: done before ({_DONE[0]})")
    elif loader is None:
        notes.append(f"onnxruntime {ort.__version__} has no preload_dlls")
    else:
        try:
            loader()
            notes.append("onnxruntime.preload_dlls(): ok")
        except Exception as exc:
            notes.append(f"onnxruntime.preload_dlls() failed: {type(exc).__name__}: {exc}")
        _DONE.append(notes[-1])
    return notes
