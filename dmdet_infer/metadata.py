"""The ``dmdet.*`` metadata an exported model carries (ONNX ``metadata_props``, JSON values).

This module is the single definition of the keys: ``export`` writes them with :func:`to_props`, the inference
package reads them with :func:`from_props`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .threshold import check as check_calibration

FORMAT_VERSION = 1
PREFIX = "dmdet."
KINDS = ("density", "binary")
NORMALISATIONS = ("median_mad", "percentile")


@dataclass(frozen=True)
class ModelInfo:
    """What inference needs to use a network exactly as it was trained.

    normalisation: ``{"method": "median_mad"}`` maps x -> (x - median) / (1.4826 * MAD) with the statistics of the
    whole volume; ``{"method": "percentile", "low": 1.0, "high": 99.8}`` maps the two percentiles to 0 and 1.
    stride_zyx: input sizes must be multiples of it (inputs are padded, outputs cropped back).
    halo_zyx: voxels of context each side needed for an exact output (receptive field radius), for tiling.
    threshold: default peak threshold on the network output, tuned on validation data.
    sigma_zyx: standard deviations (voxels) of the target Gaussians (density models).
    noise_peaks: the noise calibration behind ``--threshold auto`` (:mod:`dmdet_infer.threshold`), or None.
    """

    kind: str
    normalisation: dict[str, Any]
    stride_zyx: tuple[int, int, int]
    halo_zyx: tuple[int, int, int]
    threshold: float
    sigma_zyx: tuple[float, float, float] | None = None
    min_distance_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    voxel_size_um: tuple[float, float, float] | None = None
    training_data: str = ""
    validation_scores: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    noise_peaks: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    REQUIRED = ("kind", "normalisation", "stride_zyx", "halo_zyx", "threshold")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dmdet.kind must be one of {KINDS}, got {self.kind!r}")
        method = self.normalisation.get("method") if isinstance(self.normalisation, dict) else None
        if method not in NORMALISATIONS:
            raise ValueError(f"dmdet.normalisation.method must be one of {NORMALISATIONS}, got {method!r}")
        for name in ("stride_zyx", "halo_zyx"):
            value = getattr(self, name)
            if len(value) != 3 or any(int(v) != v or v < (1 if name == "stride_zyx" else 0) for v in value):
                raise ValueError(f"dmdet.{name} must be 3 non-negative integers (stride >= 1), got {value!r}")
        if self.noise_peaks is not None:
            check_calibration(self.noise_peaks)
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"model format version {self.format_version} is newer than this dmdet_infer understands "
                f"({FORMAT_VERSION}); upgrade dmdet"
            )


def to_props(info: ModelInfo) -> dict[str, str]:
    """ONNX metadata_props for ``info``: ``dmdet.<field>`` -> JSON text."""
    return {PREFIX + key: json.dumps(value) for key, value in asdict(info).items()}


def from_props(props: dict[str, str]) -> ModelInfo:
    """Parse ``dmdet.*`` props; raises ValueError naming the missing or bad key."""
    values: dict[str, Any] = {}
    for key, text in props.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        if name not in ModelInfo.__dataclass_fields__:
            continue  # written by a newer exporter: ignore unknown keys
        try:
            values[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"metadata {key} is not valid JSON ({exc.msg})") from None
    missing = [k for k in ModelInfo.REQUIRED if k not in values]
    if missing:
        raise ValueError("missing dmdet metadata " + ", ".join(PREFIX + k for k in missing))
    for name in ("stride_zyx", "halo_zyx", "sigma_zyx", "min_distance_zyx", "voxel_size_um"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    values["threshold"] = float(values["threshold"])
    return ModelInfo(**values)
