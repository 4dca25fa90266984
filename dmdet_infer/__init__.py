"""dmdet_infer: find fluorescent particles in 3D stacks with an exported DM-DetNet3D model.

    >>> from dmdet_infer import Detector
    >>> spots = Detector().detect(volume)          # volume: ZYX numpy array
    >>> spots.to_csv("spots.csv")

Heavy modules (ONNX Runtime, numba) load on first use, so ``import dmdet_infer`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Detector", "Spots", "Stack", "read_stack", "InputError", "__version__"]

if TYPE_CHECKING:
    from .detector import Detector
    from .errors import InputError
    from .io import Stack, read_stack
    from .spots import Spots

_LAZY = {
    "Detector": "detector",
    "Spots": "spots",
    "Stack": "io",
    "read_stack": "io",
    "InputError": "errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dmdet_infer' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
