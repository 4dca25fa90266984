"""The shipped pipeline (``dmdet_infer.Detector``) on a model that is not exported yet.

``Detector`` needs of its model only ``info`` (the metadata), ``on_cuda`` and ``run(block)``. :class:`TorchModel`
gives it those from a training checkpoint, so that the evaluation scores what ships (normalisation, tiling,
peaks, refinement, pair split) before export; an exported ``.onnx`` file is run as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmdet_infer.config import DetectorConfig
from dmdet_infer.detector import Detector
from dmdet_infer.model import Model
from training.config import TrainConfig


class TorchModel(Model):
    """A checkpoint's network behind the interface of :class:`dmdet_infer.model.Model` (CPU or CUDA, fp32)."""

    def __init__(self, checkpoint: str | Path, norm: str = "running", device: str = "cpu") -> None:
        from export.onnx_export import model_info
        from training.network import set_norm_mode
        from training.train import model_from_checkpoint

        network, cfg, ckpt = model_from_checkpoint(checkpoint)
        set_norm_mode(network, norm)
        self.path = Path(checkpoint)
        self.torch_device = torch.device(device)
        self.network = network.to(self.torch_device)
        self.config = cfg
        self.info = model_info(network, cfg, ckpt)
        self.device = device
        self.providers = ["TorchCUDA" if self.torch_device.type == "cuda" else "TorchCPU"]
        self.runtime = "torch"
        self.precision = "fp32"
        self.openvino = None

    @property
    def on_cuda(self) -> bool:
        return False  # Detector's CUDA paths (IO binding, overlap) are ONNX Runtime's

    def run(self, block: np.ndarray) -> np.ndarray:
        """Density map of a normalised ZYX block (its shape a multiple of the stride)."""
        x = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))[None, None].to(self.torch_device)
        with torch.inference_mode():
            out = self.network(x)[0, 0].float().cpu().numpy()
        return np.ascontiguousarray(out)


def detector_for(path: str | Path, threshold: float | str | None = None, norm: str = "running",
                 config: DetectorConfig | None = None, **options: Any) -> tuple[Detector, TrainConfig]:
    """``(Detector, training config)`` for an exported model (``.onnx``: its metadata's config) or a training
    checkpoint (:class:`TorchModel`). ``config``: the detection options as ``dmdet-infer`` takes them
    (:class:`dmdet_infer.config.DetectorConfig`; its ``model`` is not used: ``path`` is the model); ``threshold``
    and ``options`` override its fields. ``threshold`` None: the config's (by default the model's default:
    ``"auto"`` when it holds a noise calibration, which only export adds; else its tuned threshold)."""
    if threshold is not None:
        options["threshold"] = threshold
    path = Path(path)
    if path.suffix == ".onnx":
        wanted = (config or DetectorConfig()).replace(**options)
        model = Model(path, device="cpu", threads=wanted.threads, runtime=wanted.runtime, precision=wanted.precision)
        if not isinstance(model.info.config, dict):
            raise ValueError(f"{path}: the model's metadata holds no training config to take the data spec from")
        from training.train import with_legacy_normalisation

        cfg = TrainConfig.from_dict(with_legacy_normalisation(model.info.config))
    else:
        model = TorchModel(path, norm)
        cfg = model.config
    return Detector(model, config=config, **options), cfg
