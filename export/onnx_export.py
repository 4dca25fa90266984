"""Export a training checkpoint to one self-contained ONNX file with the ``dmdet.*`` metadata.

The network is exported in eval mode with its InstanceNorm layers folded into per-channel scale/shift (running
statistics), so the ONNX model is a purely local operator: exact tiled inference with ``halo_zyx``. Batch, Z, Y
and X are dynamic; inputs must be padded to multiples of ``stride_zyx``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmdet_infer import threshold as autothreshold
from dmdet_infer.detector import Detector
from dmdet_infer.metadata import ModelInfo, to_props
from training.config import TrainConfig
from training.network import DetNet3D, fold_norms, receptive_halo, stride
from training.train import model_from_checkpoint

INPUT_NAME = "input"
OUTPUT_NAME = "density"
PARITY_TOLERANCE = 1e-4
#: fp16 graph (ONNX Runtime) against the fp32 PyTorch model: half precision rounds every layer's activations
#: (measured 7e-4 on a 8x64x64 random input for the w8 model; the map is a sigmoid in [0, 1]).
FP16_PARITY_TOLERANCE = 1e-2
PARITY_SHAPE = (2, 1, 10, 50, 47)  # not a multiple of the stride in y/x: padded before the check


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by None (strict JSON), recursively."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class HalfPrecision(torch.nn.Module):
    """``model`` in half precision behind a float32 interface: the exported graph casts the input to fp16 and
    the output back to fp32, so dmdet_infer feeds and reads it exactly as an fp32 model."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def model_info(
    model: DetNet3D, cfg: TrainConfig, ckpt: dict[str, Any], name: str | None = None,
    threshold: float | None = None, precision: str = "fp32",
) -> ModelInfo:
    """The metadata of a trained model (threshold: the tuned one unless given; 0.5 if never tuned)."""
    if threshold is None:
        threshold = float(ckpt.get("threshold", 0.5))
    total = ckpt.get("total_steps", ckpt.get("step", 0))
    description = f"{cfg.data.describe()}; checkpoint of step {ckpt.get('step', 0)} (of {total} trained)"
    scores = dict(ckpt.get("val_scores", {}))
    nominal, valid = spot_scale(cfg)
    return ModelInfo(
        kind=cfg.target,
        normalisation=dict(cfg.data.normalisation),
        stride_zyx=tuple(int(v) for v in stride(model)),
        halo_zyx=tuple(int(v) for v in receptive_halo(model)),
        threshold=float(threshold),
        sigma_zyx=tuple(float(s) for s in cfg.sigma_zyx) if cfg.target == "density" else None,
        min_distance_zyx=tuple(float(v) for v in cfg.min_distance_zyx),
        training_data=description,
        validation_scores=_json_safe(scores),
        config=_json_safe(cfg.to_dict()),
        name=name or cfg.name,
        spot_sigma_zyx=nominal,
        spot_sigma_range_zyx=valid,
        precision=precision,
    )


def spot_scale(cfg: TrainConfig) -> tuple[Any, Any]:
    """(nominal spot σ, (low, high) per axis) of a simulated training set; (None, None) for annotated data.

    The range is the union of the generators' σ ranges; the nominal size is its geometric middle."""
    if cfg.data.source != "simulated":
        return None, None
    from training import scenes, simulate

    sources = {"ptc": [simulate], "microscopy": [scenes], "mix": [simulate, scenes]}[cfg.data.generator]
    z = (min(m.SIGMA_Z_RANGE[0] for m in sources), max(m.SIGMA_Z_RANGE[1] for m in sources))
    xy = (min(m.SIGMA_XY_RANGE[0] for m in sources), max(m.SIGMA_XY_RANGE[1] for m in sources))
    mid = (float(np.sqrt(z[0] * z[1])), float(np.sqrt(xy[0] * xy[1])))
    return (mid[0], mid[1], mid[1]), (z, xy, xy)


def _export_graph(model: torch.nn.Module, path: Path, opset: int, dynamo: bool, example: torch.Tensor) -> None:
    axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dim = torch.export.Dim.AUTO
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: dim, 2: dim, 3: dim, 4: dim},),
                external_data=False,
            )
            program.save(str(path), external_data=False)
        else:
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                do_constant_folding=True,
            )


def parity(onnx_path: str | Path, model: DetNet3D, shape: tuple[int, ...] = PARITY_SHAPE, seed: int = 0) -> float:
    """Max |onnxruntime CPU - torch eval (fp32)| on a random normal input of ``shape`` (N,1,Z,Y,X) padded to the
    stride."""
    import onnxruntime as ort

    s = stride(model)
    padded = list(shape[:2]) + [-(-d // k) * k for d, k in zip(shape[2:], s)]
    x = np.zeros(padded, np.float32)
    x[:, :, : shape[2], : shape[3], : shape[4]] = np.random.default_rng(seed).standard_normal(shape)
    model = model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    if out.shape != ref.shape:
        raise RuntimeError(f"ONNX output shape {out.shape} differs from torch {ref.shape}")
    return float(np.abs(out - ref).max())


def export_checkpoint(
    checkpoint: str | Path, output: str | Path, opset: int = 18, name: str | None = None,
    threshold: float | None = None, dynamo: bool = False, tolerance: float = PARITY_TOLERANCE,
    calibration_shape: tuple[int, int, int] | None = autothreshold.CALIBRATION_SHAPE,
    fp16: bool = False, calibration_from: str | Path | None = None, calibration_volumes: int | None = None,
    calibrate: bool | None = None,
) -> dict[str, Any]:
    """Write ``output`` (atomically) and return a report: size, metadata, parity with PyTorch.

    ``calibrate``: whether the model gets a noise calibration (``dmdet.noise_peaks``), which makes
    ``--threshold auto`` its default in ``dmdet-infer``. None (default): yes, unless the checkpoint was trained
    (fine-tuned) on annotated stacks (``data.source`` 'annotations'): its threshold was tuned on the user's own
    validation stacks, which says more about the user's data than a calibration on simulated noise, so that
    threshold stays its default (:func:`calibrates`); a ``calibration_from`` given asks for one. True: calibrate
    (or copy ``calibration_from``) anyway; False: never.

    ``fp16``: the network in half precision with float32 input and output (Cast nodes at both ends,
    ``dmdet.precision`` "fp16"); parity is then checked against the fp32 PyTorch model within
    :data:`FP16_PARITY_TOLERANCE` (unless ``tolerance`` is given other than the fp32 default).
    ``calibration_from``: an exported model of the same network whose noise calibration (``dmdet.noise_peaks``)
    is copied instead of calibrating again (e.g. the fp32 model for its fp16 twin).

    ``calibration_shape``: size of the background-only volumes on which the exported model's noise peaks are
    counted for ``--threshold auto`` (``dmdet.noise_peaks``, :func:`dmdet_infer.threshold.calibrate`); None skips it.
    ``calibration_volumes``: volumes per noise model (default :data:`dmdet_infer.threshold.FAMILY_VOLUMES` for a
    noise-family calibration, else :data:`dmdet_infer.threshold.CALIBRATION_VOLUMES`).

    Raises RuntimeError when the ONNX model disagrees with PyTorch by more than ``tolerance``.
    """
    import onnx

    model, cfg, ckpt = model_from_checkpoint(checkpoint)
    if not calibrates(cfg, True if calibrate is None and calibration_from is not None else calibrate):
        calibration_shape, calibration_from = None, None
    precision = "fp16" if fp16 else "fp32"
    if fp16 and tolerance == PARITY_TOLERANCE:
        tolerance = FP16_PARITY_TOLERANCE
    info = model_info(model, cfg, ckpt, name, threshold, precision)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, 1, *[4 * k for k in stride(model)]))
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        folded = fold_norms(model)
        _export_graph(HalfPrecision(folded) if fp16 else folded, raw, opset, dynamo, example)
        proto = onnx.load(str(raw))
        _set_metadata(proto, info)
        proto.producer_name = "dmdet.export"
        onnx.checker.check_model(proto, full_check=True)
        final = Path(tmp) / "model.onnx"
        onnx.save_model(proto, str(final), save_as_external_data=False)
        if any(p not in (raw, final) for p in Path(tmp).iterdir()):
            raise RuntimeError("the exporter wrote external data files; the model must be self-contained")
        max_diff = parity(final, model)
        if not max_diff <= tolerance:
            raise RuntimeError(f"ONNX/PyTorch parity failed: max |diff| {max_diff:.3g} > {tolerance:g}")
        if calibration_from is not None:
            info = dataclasses.replace(info, noise_peaks=_calibration_of(calibration_from))
            _set_metadata(proto, info)
            onnx.save_model(proto, str(final), save_as_external_data=False)
        elif calibration_shape is not None:
            # models with local normalisation: the worst rate over a family of noise models (threshold.NOISE_MODELS)
            family = info.normalisation.get("method") == "local_median_mad"
            noise = list(autothreshold.NOISE_MODELS) if family else None
            shape = autothreshold.FAMILY_SHAPE if family else tuple(calibration_shape)
            volumes = calibration_volumes or (autothreshold.FAMILY_VOLUMES if family
                                              else autothreshold.CALIBRATION_VOLUMES)
            # fp32 everywhere: the calibration must not depend on the exporting CPU's bf16 (precision "auto")
            if info.kind == "density" and info.sigma_zyx is not None:  # also the noise peaks' photometric masses
                detector = Detector(str(final), device="cpu", threshold=info.threshold, precision="fp32")
                calibration = autothreshold.calibrate(detector.candidates, shape, volumes, noise=noise)
            else:
                detector = Detector(str(final), device="cpu", threshold=autothreshold.GRID[0], precision="fp32")
                calibration = autothreshold.calibrate(lambda v: detector.detect(v).score, shape, volumes,
                                                    noise=noise)
            if family and cfg.data.source == "simulated" and info.kind == "density":
                calibration["structured_threshold"] = structured_threshold(str(final), cfg)
            info = dataclasses.replace(info, noise_peaks=calibration)
            _set_metadata(proto, info)
            onnx.save_model(proto, str(final), save_as_external_data=False)
        os.replace(final, output)
    size = output.stat().st_size
    ops = sorted({n.op_type for n in onnx.load(str(output)).graph.node})
    return {
        "output": str(output), "size_bytes": size, "opset": opset, "exporter": "dynamo" if dynamo else "torchscript",
        "ops": ops, "parity_max_abs_diff": max_diff, "parity_shape": list(PARITY_SHAPE),
        "threshold": info.threshold, "threshold_tuned": "threshold" in ckpt and threshold is None,
        "stride_zyx": list(info.stride_zyx), "halo_zyx": list(info.halo_zyx), "kind": info.kind,
        "name": info.name, "noise_calibration": info.noise_peaks is not None, "precision": precision,
        "parity_tolerance": tolerance,
        "default_threshold": "auto" if info.noise_peaks is not None else info.threshold,
    }


def calibrates(cfg: TrainConfig, calibrate: bool | None = None) -> bool:
    """Whether the export of a checkpoint with config ``cfg`` gets a noise calibration (and so 'auto' as its
    default threshold): ``calibrate`` when given, else unless it was trained on annotated stacks, whose tuned
    threshold (on the user's validation stacks) is then the exported model's default."""
    if calibrate is not None:
        return bool(calibrate)
    return cfg.data.source != "annotations"


def _calibration_of(path: str | Path) -> dict[str, Any] | None:
    """The ``dmdet.noise_peaks`` of an exported model (None when it has none)."""
    import onnx

    from dmdet_infer.metadata import from_props

    proto = onnx.load(str(path), load_external_data=False)
    return from_props({p.key: p.value for p in proto.metadata_props}).noise_peaks


STRUCTURED_GRID = tuple(round(0.5 + 0.025 * i, 3) for i in range(19))  # 0.5 .. 0.95


def structured_threshold(model_path: str, cfg: TrainConfig, max_stacks: int = 200) -> float:
    """The fixed threshold with the best pooled F1 on the validation stacks whose background is structured
    (:data:`dmdet_infer.detector.STRUCTURED_CORRELATION`): the floor of ``--threshold auto`` on such stacks."""
    from dmdet_infer import normalise
    from dmdet_infer.detector import STRUCTURED_CORRELATION
    from dmdet_infer.scale import crop_region
    from training.data import simulate_item, split_indices
    from training.matching import score

    det = Detector(model_path, device="cpu", threshold=STRUCTURED_GRID[0], split_pairs=False, spot_size=None,
                   precision="fp32")
    counts = np.zeros((len(STRUCTURED_GRID), 3))
    for i in list(split_indices(cfg.data.n_stacks, cfg.data.split)["val"])[:max_stacks]:
        volume, positions, _ = simulate_item(cfg.data, i)
        stats = det.stats(volume)
        if stats.constant:
            continue
        crop = crop_region(volume.shape)
        if normalise.correlation(stats.apply(volume[crop], crop)) < STRUCTURED_CORRELATION:
            continue
        spots = det.detect(volume)
        for k, t in enumerate(STRUCTURED_GRID):
            s = score(spots.zyx[spots.score > t], positions, cfg.gate)
            counts[k] += (s["tp"], s["fp"], s["fn"])
    if not counts[0].any():
        return float(det.info.threshold)
    f1 = 2 * counts[:, 0] / np.maximum(2 * counts[:, 0] + counts[:, 1] + counts[:, 2], 1)
    return float(STRUCTURED_GRID[int(np.argmax(f1))])


def _set_metadata(proto, info: ModelInfo) -> None:
    """Replace the model's metadata_props with the ``dmdet.*`` entries of ``info``."""
    del proto.metadata_props[:]
    for key, value in to_props(info).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
