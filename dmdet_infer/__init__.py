"""dmdet_infer: find fluorescent particles in 3D stacks with an exported DM-DetNet3D model.

The public API: :class:`Detector` (finds the spots), :class:`DetectorConfig` (its options in one frozen object, from
the API, the command line or a JSON file), :class:`Spots` (the result table), :class:`Stack` and
:func:`read_stack` (TIFF input), :class:`InputError` (bad input, a ``ValueError``); the peak finder and the
normalisation are in :mod:`dmdet_infer.peaks` and :mod:`dmdet_infer.normalise`.

Heavy modules (ONNX Runtime, numba) load on first use, so ``import dmdet_infer`` stays fast.

Examples
--------
A ZYX volume with two bright spots on Poisson noise:

>>> import os, tempfile
>>> import numpy as np
>>> from dmdet_infer import Detector
>>> z, y, x = np.ogrid[:10, :64, :64]
>>> spot = lambda cz, cy, cx: 60 * np.exp(-(z - cz) ** 2 / 2 - ((y - cy) ** 2 + (x - cx) ** 2) / 4.5)
>>> volume = np.random.default_rng(0).poisson(10 + spot(5, 20, 20) + spot(4, 40, 45)).astype(np.uint16)
>>> spots = Detector().detect(volume)          # volume: ZYX numpy array
>>> len(spots), sorted(spots.zyx.round().astype(int).tolist())
(2, [[4, 40, 45], [5, 20, 20]])
>>> with tempfile.TemporaryDirectory() as folder:
...     spots.to_csv(os.path.join(folder, "spots.csv"))
...     with open(os.path.join(folder, "spots.csv")) as f:
...         print(f.readline().strip())
z,y,x,score,intensity,mass,spread,split
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Detector", "DetectorConfig", "Spots", "Stack", "read_stack", "InputError", "__version__"]

if TYPE_CHECKING:
    from .config import DetectorConfig
    from .detector import Detector
    from .errors import InputError
    from .io import Stack, read_stack
    from .spots import Spots

_LAZY = {
    "Detector": "detector",
    "DetectorConfig": "config",
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
